"""The Redshift stand-in's relay once a session is open: PostgreSQL's wire protocol read message by message.

Client to server, every statement is put to Redshift's rules (redshift_rules.py) where it runs: a simple Query
('Q') statement by statement, an extended-protocol statement at its Bind ('B'), since a driver that caches
prepared statements (redshift_connector does) sends Parse once and Bind at every execution. A refused statement, or
an UNLOAD the adapter ran itself (unload.py), is answered by a Parse of the adapter's CALL in its place and a Bind
of that: PostgreSQL then raises the error, or sends UNLOAD's INFO line, and keeps the protocol and the transaction
as a server would. Server to client, the relay drops the ParseComplete of its own Parse, renames that CALL's
CommandComplete to UNLOAD, leaves the procedure's location out of errors and notices, counts the result bytes
each FETCH returns (the cursor-result limit) and notes the end of each transaction block (cursors end with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aporia_local.redshift_rules import Refusal, Rules, split_statements, words

log = logging.getLogger(__name__)

RELAY_CHUNK = 1 << 18
_UNLOAD_PLACEHOLDER = "CALL public.redshift_unload_done(0)"
_OWN_PROCEDURES = (b"redshift_refusal(", b"redshift_unload_done(")
# Where PostgreSQL raised an error: left out of the stand-in's own errors, which Redshift raises from no procedure.
_LOCATION_FIELDS = frozenset(b"WFLR")


def message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


@dataclass
class _Batch:
    """What the relay changed in one batch of client messages, up to its Sync (or one simple Query)."""

    own_parses: int = 0
    unloads: int = 0


class Relay:
    """One client session's relay."""

    def __init__(self, key: int, rules: Rules, unload: Callable[[str], Any], cut: Callable[[int], bool]):
        self.key = key
        self.rules = rules
        self.unload = unload
        self.cut = cut
        self.statements: dict[bytes, str] = {}
        self.batches: deque[_Batch] = deque()
        self.current = _Batch()
        self.result_bytes = 0

    async def run(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pg_reader: asyncio.StreamReader,
        pg_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            await asyncio.gather(self._from_client(reader, pg_writer), self._from_server(pg_reader, writer))
        finally:
            self.rules.forget(self.key)

    async def _from_client(self, reader: asyncio.StreamReader, pg_writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        try:
            while chunk := await reader.read(RELAY_CHUNK):
                buffer += chunk
                out = bytearray()
                position = 0
                while len(buffer) - position >= 5:
                    end = position + 1 + int.from_bytes(buffer[position + 1 : position + 5], "big")
                    if end > len(buffer):
                        break
                    kind = bytes(buffer[position : position + 1])
                    if kind in (b"Q", b"P", b"B", b"S"):
                        out += await self._client_message(kind, bytes(buffer[position + 5 : end]))
                    else:
                        out += buffer[position:end]
                    position = end
                del buffer[:position]
                if out:
                    pg_writer.write(out)
                    await pg_writer.drain()
        finally:
            with contextlib.suppress(Exception):
                pg_writer.close()

    async def _client_message(self, kind: bytes, payload: bytes) -> bytes:
        if kind == b"S":
            self._end_batch()
            return message(kind, payload)
        if kind == b"Q":
            sql = payload[:-1].decode()
            statements = split_statements(sql)
            answers = [await self._decide(statement) for statement in statements]
            self._end_batch()
            if any(answer is not None for answer in answers):
                sql = ";".join(a if a is not None else s for s, a in zip(statements, answers, strict=True))
            return message(kind, sql.encode() + b"\0")
        name, query, _ = payload.split(b"\0", 2)
        if kind == b"P":
            self.statements[name] = query.decode()
            if words(self.statements[name], 1) == ["UNLOAD"]:
                # PostgreSQL cannot parse UNLOAD; it runs at Bind, like every statement here.
                return message(kind, name + b"\0" + _UNLOAD_PLACEHOLDER.encode() + b"\0" + struct.pack("!H", 0))
            return message(kind, payload)
        portal, statement = name, query
        prepared = self.statements.get(statement)
        answer = None if prepared is None else await self._decide(prepared)
        if answer is None:
            return message(kind, payload)
        self.current.own_parses += 1
        own = message(b"P", b"\0" + answer.encode() + b"\0" + struct.pack("!H", 0))
        return own + message(b"B", portal + b"\0\0" + struct.pack("!HHH", 0, 0, 0))

    async def _decide(self, sql: str) -> str | None:
        """The SQL to run in place of `sql`, or None to run it as sent."""
        if words(sql, 1) == ["UNLOAD"]:
            outcome = await asyncio.to_thread(self.unload, sql)
            if isinstance(outcome, Refusal):
                return outcome.as_sql()
            self.current.unloads += 1
            return f"CALL public.redshift_unload_done({int(outcome)})"
        refusal = self.rules.check(self.key, sql)
        return None if refusal is None else refusal.as_sql()

    def _end_batch(self) -> None:
        self.batches.append(self.current)
        self.current = _Batch()

    def _batch(self) -> _Batch:
        return self.batches[0] if self.batches else self.current

    async def _from_server(self, pg_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        try:
            while chunk := await pg_reader.read(RELAY_CHUNK):
                buffer += chunk
                out = bytearray()
                position = unchanged = 0
                while len(buffer) - position >= 5:
                    length = int.from_bytes(buffer[position + 1 : position + 5], "big")
                    end = position + 1 + length
                    if end > len(buffer):
                        break
                    kind = buffer[position]
                    if kind == 0x44:  # DataRow
                        self.result_bytes += length
                    elif kind in b"1CENZ":
                        answer = self._server_message(bytes([kind]), bytes(buffer[position + 5 : end]))
                        if answer is not None:
                            out += buffer[unchanged:position]
                            out += answer
                            unchanged = end
                    position = end
                out += buffer[unchanged:position]
                del buffer[:position]
                if out:
                    writer.write(out)
                    await writer.drain()
                    if self.cut(len(out)):
                        log.warning("fault injection: cutting a session mid-result")
                        return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _server_message(self, kind: bytes, payload: bytes) -> bytes | None:
        """What the client gets instead of this server message, or None for the message itself."""
        batch = self._batch()
        if kind == b"1" and batch.own_parses:
            batch.own_parses -= 1
            return b""
        if kind == b"C":
            fetched, self.result_bytes = self.result_bytes, 0
            if payload.startswith(b"FETCH"):
                self.rules.fetched(self.key, fetched)
            elif payload == b"CALL\0" and batch.unloads:
                batch.unloads -= 1
                return message(kind, b"UNLOAD\0")
        elif kind in (b"E", b"N"):
            self.result_bytes = 0
            if any(name in payload for name in _OWN_PROCEDURES):
                fields = [f for f in payload[:-1].split(b"\0") if f and f[0] not in _LOCATION_FIELDS]
                return message(kind, b"".join(f + b"\0" for f in fields) + b"\0")
        elif kind == b"Z":
            if payload[:1] in (b"I", b"E"):
                self.rules.transaction_ended(self.key)
            if self.batches:
                self.batches.popleft()
        return None
