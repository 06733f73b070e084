"""A window read, checked and sent by the task itself, over the warehouse's DB-API connection: no Spark.

Spark's fixed costs (a JVM, or a session and a Python worker on a shared server, and several jobs) and its
hand-offs (JDBC rows to JVM objects, JSON, Arrow, Python workers) only pay where it scales out over a cluster's
cores; on the worker's own few cores the task reads faster itself, at any size. A source's window is streamed
from the warehouse in chunks (`Warehouse.stream`), each row judged by the layout's rules and its fields'
rulebook entries (the same as Spark's path), and its fragment JSON built here. Vectors and tensors that arrive
as JSON text (SUPER) are checked by a typed decoder and sent as the text they are, never re-encoded.

Every row is judged before anything is sent (with ``fail``, one invalid row means nothing is sent, and a repeated
id rejects rows read long before it), so the judged rows wait in a spool on local disk, not in memory: the
task's memory stays flat whatever the window's size (8 bytes of id hash per row, for the repeated-id rule).
"""

from __future__ import annotations

import math
import struct
import tempfile
import threading
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import IO, Any

import msgspec

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import SyncFailed
from aporia_provider.extraction.layout import MAX_EXAMPLES, FieldSlot, RejectedRows, SourceLayout, excerpt
from aporia_provider.extraction.rulebook import Check, ColumnType, occurred_at
from aporia_provider.extraction.sql import Window, quoted, windowed

FETCH_ROWS = 10_000
# Requests to Aporia in flight at once while the task delivers (fragments merge by id: order does not matter).
DELIVERY_CONCURRENCY = 4
# A spooled row: the lengths of its id (-1: no id), problem and payload, whether only the lookback read it, then
# their bytes.
_RECORD = struct.Struct("<iII?")


class Spool:
    """Judged rows on local disk, in read order, and what the repeated-id rule needs of them."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="aporia-sync-")
        self.rows = 0
        self.problems = 0  # rows with a problem of their own
        self.reread = 0  # rows read only for the lookback
        self._id_hashes = array("q")

    def add(self, identity: str | None, problem: str | None, payload: bytes, reread: bool) -> None:
        """A judged row: its fragment when it passed, else its problem and the detail of it."""
        id_bytes = b"" if identity is None else identity.encode()
        problem_bytes = b"" if problem is None else problem.encode()
        id_length = -1 if identity is None else len(id_bytes)
        self._file.write(_RECORD.pack(id_length, len(problem_bytes), len(payload), reread))
        self._file.write(id_bytes + problem_bytes + payload)
        self.rows += 1
        self.problems += problem is not None
        self.reread += reread
        if identity is not None:
            self._id_hashes.append(hash(identity))

    def records(
        self, fragments: bool = False, details: bool = False
    ) -> Iterator[tuple[str | None, str | None, bytes, bool]]:
        """(id, problem, payload, re-read) of each row in read order. The payload is a passed row's fragment, or a
        rejected row's detail (the JSON of [column, value excerpt]); read only when asked for (else b"")."""
        self._file.flush()
        self._file.seek(0)
        read = self._file.read
        while header := read(_RECORD.size):
            id_length, problem_length, payload_length, reread = _RECORD.unpack(header)
            identity = read(id_length).decode() if id_length >= 0 else None
            problem = read(problem_length).decode() if problem_length else None
            if (fragments and problem is None) or (details and problem is not None):
                payload = read(payload_length)
            else:
                self._file.seek(payload_length, 1)
                payload = b""
            yield identity, problem, payload, reread

    def repeated_ids(self, layout: SourceLayout) -> set[str]:
        """The ids that repeat: rows whose id hashes repeat are looked at again, by their ids themselves."""
        hashes = sorted(self._id_hashes)
        candidates = {a for a, b in pairwise(hashes) if a == b}
        del hashes
        if not candidates:
            return set()
        counts = Counter(
            identity for identity, _, _, _ in self.records() if identity is not None and hash(identity) in candidates
        )
        repeated = {identity for identity, n in counts.items() if n > 1}
        layout.refuse_many_repeats(len(repeated))
        return repeated

    def size(self) -> int:
        """Bytes spooled so far."""
        self._file.flush()
        return self._file.seek(0, 2)

    def close(self) -> None:
        self._file.close()


@dataclass
class TaskRows:
    """A source's window as read in the task: counts, examples, and the spool the passed fragments are sent from."""

    rows: int = 0
    rejected: int = 0
    reread: int = 0  # rows that passed, read only for the lookback
    examples: list[str] = field(default_factory=list)
    spool: Spool | None = None
    repeated: set[str] = field(default_factory=set)

    def fragments(self) -> Iterator[bytes]:
        """The fragments of the rows that passed, in read order."""
        if self.spool is None:
            return
        for identity, problem, fragment, _ in self.spool.records(fragments=True):
            if problem is None and identity not in self.repeated:
                yield fragment

    def release(self) -> None:
        if self.spool is not None:
            self.spool.close()


def read_in_task(
    rows: Iterable[Sequence[Sequence[Any]]],
    layout: SourceLayout,
    columns: list[str],
    types: dict[str, ColumnType | None],
    window_start: datetime,
    rejected: RejectedRows | None = None,
) -> TaskRows:
    """Judge every row of one source's window (chunks of rows of `columns`, as `select_columns` selects them) into
    a spool, and count what passed; rows before the run's `window_start` were read only for the lookback; every
    rejected row goes to `rejected` too, when given."""
    position = {column: index for index, column in enumerate(columns)}
    checks = [
        (slot.wire_group, slot.spec.name, position[slot.column], _fitted(slot, types[slot.column]))
        for slot in layout.fields
    ]
    id_index = position[layout.id_column]
    timestamp_index = position[layout.source.timestamp_column]
    presence = [position[column] for column in layout.presence_columns]
    wire_groups = layout.wire_groups
    encode = msgspec.json.Encoder().encode
    spool = Spool()
    try:
        for chunk in rows:
            for row in chunk:
                if presence and all(row[index] is None for index in presence):
                    continue  # no actual has arrived for this row
                identity = row_id(row[id_index])
                problem, where = None, -1  # the first problem, and the position of the column it is in
                moment = row[timestamp_index]
                if moment is None and layout.null_timestamp is not None:
                    problem, where = layout.null_timestamp, timestamp_index
                fragment: dict[str, Any] = {"id": identity}
                groups = {group: fragment.setdefault(group, {}) for group in wire_groups}
                for group, name, index, check in checks:
                    value = row[index]
                    if value is None:
                        continue
                    sent, wrong = check(value)
                    if sent is not None:
                        groups[group][name] = sent
                    if wrong and problem is None:
                        problem, where = wrong, index
                if moment is not None and layout.carries_timestamp:
                    fragment["occurredAt"] = occurred_at(moment)
                if identity is None:
                    problem, where = layout.null_id, id_index
                reread = moment is not None and layout.reread(moment, window_start)
                if problem is None:
                    spool.add(identity, None, encode(fragment), reread)
                else:
                    spool.add(identity, problem, encode([columns[where], excerpt(row[where])]), reread)
        return _verdicts(layout, spool, rejected)
    except BaseException:
        spool.close()
        raise


def select_columns(layout: SourceLayout, types: dict[str, ColumnType | None], window: Window) -> tuple[list[str], str]:
    """The columns the source's rows need (refusing any the query lacks) and the query selecting them in the
    window."""
    layout.require(list(types))
    columns = layout.columns
    source = layout.source
    selected = ", ".join(quoted(column) for column in columns)
    return columns, f"SELECT {selected} FROM {windowed(source.query, source.timestamp_column, window)}"


def _fitted(slot: FieldSlot, column_type: ColumnType | None) -> Check:
    # The reader sends a window here only when every needed column is of a type it reads.
    assert column_type is not None
    return slot.fit(column_type).task_check(slot.spec)


def deliver_in_task(
    rows: TaskRows,
    client: AporiaClient,
    subject: str,
    model: tuple[str, str],
    batch_size: int,
    stop: threading.Event | None = None,
) -> LogResult:
    """Post the fragments that passed in batches, a few requests in flight; a stop request ends the delivery before
    its next batch."""

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        sent = 0
        for fragment in rows.fragments():
            batch.append(fragment.decode())
            if len(batch) == batch_size:
                yield from _unless_stopped(batch, sent)
                sent += len(batch)
                batch = []
        if batch:
            yield from _unless_stopped(batch, sent)

    def _unless_stopped(batch: list[str], sent: int) -> Iterator[list[str]]:
        if stop is not None and stop.is_set():
            raise SyncFailed(
                f"Stopped (the task was killed) after {sent} fragments of {subject}; re-run the task to deliver the "
                "rest (delivery is idempotent: nothing is duplicated)."
            )
        yield batch

    return client.log_batches(*model, batches(), in_flight=DELIVERY_CONCURRENCY)


def row_id(value: Any) -> str | None:
    """An id as Spark's cast to string writes it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _java_double(value)
    return str(value)


def _java_double(value: float) -> str:
    """A double as Java's Double.toString writes it: plain from 10^-3 to 10^7, else like 1.0E7 or 1.5E-4."""
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 1e7:
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(value), repr(value))
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = f"{digits[0]}." + ("".join(str(d) for d in digits[1:]) or "0")
    return f"{'-' if sign else ''}{mantissa}E{len(digits) + exponent - 1}"


def _verdicts(layout: SourceLayout, spool: Spool, rejected: RejectedRows | None) -> TaskRows:
    """Counts and examples; rows whose id repeats within the window are rejected, every one of them."""
    repeated = spool.repeated_ids(layout)
    result = TaskRows(rows=spool.rows, reread=spool.reread, spool=spool, repeated=repeated)
    if not spool.problems and not repeated:
        return result
    result.reread = 0  # counted again below, of the rows that pass
    for identity, problem, detail, reread in spool.records(details=rejected is not None):
        column: str | None
        value: str | None
        if identity in repeated:
            problem, column, value = layout.repeated_id(identity), layout.id_column, identity
        elif problem is None:
            result.reread += reread
            continue
        else:
            column, value = msgspec.json.decode(detail) if detail else (None, None)
        result.rejected += 1
        if len(result.examples) < MAX_EXAMPLES:
            result.examples.append(layout.rejected_example(identity, problem))
        if rejected is not None:
            rejected(layout.rejected_row(identity, problem, column, value))
    return result
