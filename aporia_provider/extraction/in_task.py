"""A small window read, checked and sent by the task itself, over the warehouse's DB-API connection: no Spark.

Most hourly windows are small, and Spark's fixed costs (a JVM, or a session and a Python worker on a shared
server, and several jobs) dwarf them. Below `spark_min_rows` a source's window is read with one query naming only
the columns its layout needs, each row judged by the layout's rules and its fields' rulebook entries (the same as
Spark's path), and its fragment JSON built here. Vectors and tensors that arrive as JSON text (SUPER) are checked
by a typed decoder and sent as the text they are, never re-encoded.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import SyncFailed
from aporia_provider.extraction.layout import MAX_EXAMPLES, FieldSlot, SourceLayout
from aporia_provider.extraction.rulebook import Check, ColumnType, occurred_at
from aporia_provider.extraction.sql import Window, quoted, windowed

FETCH_ROWS = 10_000

Judged = tuple[str | None, str, str | None]  # (id, fragment JSON, problem)


@dataclass
class TaskRows:
    """A source's window as read in the task: counts, examples and the fragments to send."""

    rows: int = 0
    rejected: int = 0
    examples: list[str] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)


def read_in_task(cursor: Any, layout: SourceLayout, window: Window, types: dict[str, ColumnType | None]) -> TaskRows:
    """Read the window of one source with `cursor`, judge every row, and build the fragments to send."""
    layout.require(list(types))
    columns = layout.columns
    position = {column: index for index, column in enumerate(columns)}
    checks = [
        (
            slot.wire_group,
            slot.spec.name,
            position[slot.column],
            _fitted(slot, types[slot.column]),
        )
        for slot in layout.fields
    ]
    source = layout.source
    cursor.execute(
        f"SELECT {', '.join(quoted(c) for c in columns)} FROM {windowed(source.query, source.timestamp_column, window)}"
    )
    id_index = position[layout.id_column]
    timestamp_index = position[source.timestamp_column] if layout.carries_timestamp else None
    presence = [position[column] for column in layout.presence_columns]
    wire_groups = layout.wire_groups

    def judge(row: Sequence[Any]) -> Judged | None:
        if presence and all(row[index] is None for index in presence):
            return None  # no actual has arrived for this row
        identity = row_id(row[id_index])
        problem = None
        moment = None if timestamp_index is None else row[timestamp_index]
        if timestamp_index is not None and moment is None:
            problem = layout.null_timestamp
        fragment: dict[str, Any] = {"id": identity}
        groups = {group: fragment.setdefault(group, {}) for group in wire_groups}
        for group, name, index, check in checks:
            value = row[index]
            if value is None:
                continue
            sent, wrong = check(value)
            if sent is not None:
                groups[group][name] = sent
            problem = problem or wrong
        if moment is not None:
            fragment["occurredAt"] = occurred_at(moment)
        if identity is None:
            problem = layout.null_id
        return identity, msgspec.json.encode(fragment).decode(), problem

    judged = [verdict for row in _rows(cursor) if (verdict := judge(row)) is not None]
    return _verdicts(layout, judged)


def _fitted(slot: FieldSlot, column_type: ColumnType | None) -> Check:
    # The reader sends a window here only when every needed column is of a type it reads.
    assert column_type is not None
    return slot.fit(column_type).task_check(slot.spec)


def _rows(cursor: Any) -> Iterator[Sequence[Any]]:
    while batch := cursor.fetchmany(FETCH_ROWS):
        yield from batch


def deliver_in_task(
    fragments: list[str],
    client: AporiaClient,
    subject: str,
    model: tuple[str, str],
    batch_size: int,
    stop: threading.Event | None = None,
) -> LogResult:
    """Post the fragments in batches; a stop request ends the delivery before its next batch."""

    def batches() -> Iterator[list[str]]:
        for start in range(0, len(fragments), batch_size):
            if stop is not None and stop.is_set():
                raise SyncFailed(
                    f"The sync of {subject} was stopped after {start} fragments; re-run the task to deliver the rest "
                    "(delivery is idempotent: nothing is duplicated)."
                )
            yield fragments[start : start + batch_size]

    return client.log_batches(*model, batches())


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


def _verdicts(layout: SourceLayout, judged: list[Judged]) -> TaskRows:
    """Counts and examples; rows whose id repeats within the window are rejected, every one of them."""
    counts = Counter(identity for identity, _, _ in judged if identity is not None)
    repeated = {identity for identity, n in counts.items() if n > 1}
    layout.refuse_many_repeats(len(repeated))
    result = TaskRows(rows=len(judged))
    for identity, fragment, problem in judged:
        if identity in repeated:
            problem = layout.repeated_id(identity)
        if problem is None:
            result.fragments.append(fragment)
            continue
        result.rejected += 1
        if len(result.examples) < MAX_EXAMPLES:
            result.examples.append(layout.rejected_example(identity, problem))
    return result
