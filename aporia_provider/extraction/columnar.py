"""The row rules over Arrow record batches: one implementation, run by the task and by Spark's executors alike.

`judge` takes a batch of a source's columns (as the task's cursor hands them over, `arrow_batch`, or as Spark's
`mapInArrow` does) and gives each row's verdict in one batch of `JUDGED` columns: its id as text, its fragment's JSON
when it passed, else its problem, the column at fault and an excerpt of the value. The layout states the row rules
(`layout`), each field's rulebook entry judges and encodes its column (`rulebook`); this module puts them together
in their order of precedence: a null id overrides every other problem, a prediction's null timestamp comes before
its fields' problems, and of those the first field's in wire order. Rows that hold no actual yet are no rows.

The fragment JSON is assembled by Arrow's string kernels, byte for byte as msgspec writes the same object
(``{"id":…,"features":{…},…,"occurredAt":…}``, no spaces), with no Python object per row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from datetime import datetime
from decimal import Decimal
from functools import reduce
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from aporia_provider.extraction.layout import EXCERPT_CHARACTERS, SourceLayout, excerpt
from aporia_provider.extraction.plan import Routing
from aporia_provider.extraction.rulebook import STRING, UTC_MICROS, ColumnType, datetime_texts, json_strings, quote

JUDGED = pa.schema(
    [
        ("id", STRING),
        ("fragment", STRING),  # null when the row has a problem
        ("problem", STRING),
        ("column", STRING),  # the column at fault
        ("value", STRING),  # an excerpt of its value
        ("reread", pa.bool_()),  # read only for the lookback
    ]
)
# With model_version_column: each verdict's version too (null: a row naming none the sync serves).
ROUTED = JUDGED.append(pa.field("version", STRING))
_NULL_TEXT = pa.scalar(None, STRING)
# How the task's cursor values become Arrow columns, by category. Others: as Arrow infers them.
_ARROW_TYPES = {
    "integral": pa.int64(),
    "fractional": pa.float64(),
    "string": STRING,
    "boolean": pa.bool_(),
    "timestamp": UTC_MICROS,  # a value without a zone is UTC, as the window's predicate compares it
    "date": pa.date32(),
}


def arrow_batch(
    rows: Sequence[Sequence[Any]], columns: list[str], types: dict[str, ColumnType | None]
) -> pa.RecordBatch:
    """Rows of a DB-API cursor (values as the driver returns them) as one record batch of `columns`."""
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    arrays = [_arrow_array(column, types[name]) for column, name in zip(values, columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def _arrow_array(values: Sequence[Any], column_type: ColumnType | None) -> pa.Array:
    category = column_type.category if column_type is not None else None
    if category == "decimal":
        # As the text the driver's Decimal is (its own scale, NaN kept): an id reads as the warehouse holds it,
        # and a number is parsed from it exactly (`rulebook.doubles`).
        return pa.array([None if v is None else str(v) for v in values], STRING)
    with suppress(pa.ArrowInvalid, pa.ArrowTypeError):
        # Values of another type than the column's code says (dates in a timestamp column) are taken as they are.
        return pa.array(values, _ARROW_TYPES.get(category or ""))
    return pa.array(values)


def conformed(batch: pa.RecordBatch, columns: list[str], types: dict[str, ColumnType | None]) -> pa.RecordBatch:
    """A batch of files the warehouse wrote (an UNLOAD's Parquet) with each of `columns` as `arrow_batch` makes it
    of the same rows read through the cursor, so both reads are judged alike."""
    arrays = []
    for name in columns:
        values = batch.column(name)
        column_type = types[name]
        category = column_type.category if column_type is not None else None
        if category == "decimal":
            values = pc.cast(values, STRING)  # the driver's Decimal text: its own scale
        elif pa.types.is_float32(values.type):
            # The cursor hands a REAL over as the shortest text that reads back as it: 1.1, not 1.100000023841858.
            values = pc.cast(pc.cast(values, STRING), pa.float64())
        elif category in _ARROW_TYPES and values.type != _ARROW_TYPES[category]:
            values = pc.cast(values, _ARROW_TYPES[category])  # a timestamp without a zone is UTC
        arrays.append(values)
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def judge(batch: pa.RecordBatch, layout: SourceLayout, window_start: datetime) -> pa.RecordBatch:
    """Each row's verdict (`JUDGED`); rows before the run's `window_start` were read only for the lookback."""
    if layout.presence_columns:
        present = reduce(pc.or_, [batch.column(c).is_valid() for c in layout.presence_columns])
        batch = batch.filter(present)
    source = layout.source
    ids = id_texts(batch.column(layout.id_column))
    moments = batch.column(source.timestamp_column)
    # (problem, column) in order of precedence, after the null id.
    problems: list[tuple[pa.Array, str]] = []
    if layout.null_timestamp is not None:
        problems.append((_where(moments.is_null(), layout.null_timestamp), source.timestamp_column))
    groups: dict[str, list[tuple[str, pa.Array]]] = {group: [] for group in layout.wire_groups}
    for slot in layout.fields:
        text, problem = slot.rule.encode(slot.spec, batch.column(slot.column))
        groups[slot.wire_group].append((msgspec.json.encode(slot.spec.name).decode(), text))
        if problem is not None:
            problems.append((problem, slot.column))
    null_id = ids.is_null()
    problem = _first([p for p, _ in problems], len(batch))
    problem = pc.if_else(null_id, layout.null_id, problem)
    column = _first([_where(p.is_valid(), c) for p, c in problems], len(batch))
    column = pc.if_else(null_id, layout.id_column, column)
    pieces: list[Any] = ['{"id":', json_strings(ids)]
    for group, members in groups.items():
        pieces += [f',"{group}":{{', *_members(members), "}"]
    if layout.carries_timestamp:
        pieces += [',"occurredAt":', quote(datetime_texts(moments))]
    fragment = pc.if_else(problem.is_valid(), _NULL_TEXT, pc.binary_join_element_wise(*pieces, "}", ""))
    return pa.RecordBatch.from_arrays(
        [
            ids,
            fragment,
            problem,
            column,
            _excerpts(batch, problem, column),
            _reread(moments, window_start),
        ],
        schema=JUDGED,
    )


def _members(members: list[tuple[str, pa.Array]]) -> list[Any]:
    """The pieces of a JSON object's members (key, wire JSON; null: left out), for one join of the whole fragment.

    Arrow's join costs ~20 ns a row per piece and a join of its own costs more, so a value without nulls goes in as it
    is; one with nulls as its `,"key":value` (empty where null). An object whose first member has nulls is joined
    apart, its leading comma cut."""
    pieces: list[Any] = []
    for index, (key, text) in enumerate(members):
        if text.null_count:
            pieces.append(pc.fill_null(pc.binary_join_element_wise(f",{key}:", text, ""), ""))
        else:
            pieces += [f"{',' if index else ''}{key}:", text]
    if members and members[0][1].null_count:
        pieces = [pc.utf8_slice_codeunits(pc.binary_join_element_wise(*pieces, ""), 1)]
    return pieces


def judge_routed(
    batch: pa.RecordBatch, layouts: Sequence[SourceLayout], routing: Routing, window_start: datetime
) -> list[pa.RecordBatch]:
    """The verdicts (`ROUTED`) of a batch holding several versions' rows: each version's rows judged by its own
    layout (`layouts`, in `routing.versions` order), then the rows naming no version the sync serves, with their
    problem and a null version. Versions are compared as text (an integer column names versions "1", "2")."""
    names = id_texts(batch.column(routing.column))
    judged = []
    for version, layout in zip(routing.versions, layouts, strict=True):
        verdicts = judge(batch.filter(pc.fill_null(pc.equal(names, version), False)), layout, window_start)
        judged.append(verdicts.append_column("version", pa.array([version] * verdicts.num_rows, STRING)))
    other = pc.invert(pc.fill_null(pc.is_in(names, value_set=pa.array(list(routing.versions), STRING)), False))
    first = layouts[0]
    if first.presence_columns:  # a row that holds no actual yet is no row, of any version
        other = pc.and_(other, reduce(pc.or_, [batch.column(c).is_valid() for c in first.presence_columns]))
    others, names = batch.filter(other), names.filter(other)
    if others.num_rows:
        problem = pc.if_else(
            names.is_null(),
            routing.problem(None),
            pc.binary_join_element_wise(f"{routing.column} names '", names, f"', {routing.NOT_SERVED}", ""),
        )
        rows = others.num_rows
        moments = others.column(first.source.timestamp_column)
        columns = [
            id_texts(others.column(first.id_column)),
            pa.nulls(rows, STRING),
            problem,
            pa.array([routing.column] * rows, STRING),
            pc.utf8_slice_codeunits(names, 0, EXCERPT_CHARACTERS),
            _reread(moments, window_start),
            pa.nulls(rows, STRING),
        ]
        judged.append(pa.RecordBatch.from_arrays(columns, schema=ROUTED))
    return judged


def id_texts(values: pa.Array) -> pa.Array:
    """Ids as Spark's cast to string writes them."""
    kind = values.type
    if pa.types.is_string(kind):
        return values
    if pa.types.is_boolean(kind):
        return pc.if_else(values, "true", "false")
    if pa.types.is_floating(kind):
        return pa.array([None if v is None else java_double(v) for v in values.to_pylist()], STRING)
    if pa.types.is_decimal(kind):
        return pa.array([None if v is None else format(v, "f") for v in values.to_pylist()], STRING)
    return pc.cast(values, STRING)


def java_double(value: float) -> str:
    """A double as Java's Double.toString writes it: plain from 10^-3 to 10^7, else like 1.0E7 or 1.5E-4."""
    if not math.isfinite(value) or value == 0 or 1e-3 <= abs(value) < 1e7:
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(value), repr(value))
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = f"{digits[0]}." + ("".join(str(d) for d in digits[1:]) or "0")
    return f"{'-' if sign else ''}{mantissa}E{len(digits) + exponent - 1}"


def passing(judged: pa.RecordBatch, repeated: pa.Array) -> pa.Array:
    """The fragments of a batch of verdicts that pass: no problem of their own, and an id not among `repeated` (the
    window's repeated ids, every row of which is rejected)."""
    fragments = judged.column("fragment")
    if len(repeated):
        fragments = pc.if_else(pc.is_in(judged.column("id"), value_set=repeated), None, fragments)
    return fragments.drop_null()


def request_texts(fragments: Iterable[pa.Array], batch_size: int) -> Iterator[tuple[str, int]]:
    """The fragments of consecutive arrays in requests' texts of `batch_size` (`fragment_texts`), only the last
    one shorter."""
    return (text for part in _rebatched(fragments, batch_size) for text in fragment_texts(part, batch_size))


def fragment_texts(fragments: pa.Array, batch_size: int) -> Iterator[tuple[str, int]]:
    """The non-null fragments in consecutive batches of `batch_size`, each as one text of comma-separated JSON
    objects (what a request's list holds), with its count."""
    fragments = fragments.drop_null()
    for start in range(0, len(fragments), batch_size):
        part = fragments.slice(start, batch_size)
        offsets = pa.array([0, len(part)], pa.int32())
        yield pc.binary_join(pa.ListArray.from_arrays(offsets, part), ",")[0].as_py(), len(part)


def _rebatched(arrays: Iterable[pa.Array], size: int) -> Iterator[pa.Array]:
    """The arrays' values again, in arrays of at most `size` whose concatenation is the same."""
    waiting: list[pa.Array] = []
    held = 0
    for values in arrays:
        waiting.append(values)
        held += len(values)
        if held >= size:
            merged = pa.concat_arrays(waiting)
            whole = len(merged) - len(merged) % size
            yield merged.slice(0, whole)
            waiting, held = [merged.slice(whole)], len(merged) - whole
    if held:
        yield pa.concat_arrays(waiting)


def _where(mask: pa.Array, text: str) -> pa.Array:
    """`text` where `mask` holds, else null."""
    return pc.if_else(mask, text, _NULL_TEXT)


def _first(arrays: list[pa.Array], rows: int) -> pa.Array:
    """Per row, the first non-null of `arrays`."""
    if not arrays:
        return pa.nulls(rows, STRING)
    return pc.coalesce(*arrays) if len(arrays) > 1 else arrays[0]


def _excerpts(batch: pa.RecordBatch, problem: pa.Array, column: pa.Array) -> pa.Array:
    """An excerpt of the value at fault, for the rows with a problem (null elsewhere)."""
    if problem.null_count == len(problem):
        return pa.nulls(len(problem), STRING)
    values: list[str | None] = [None] * len(problem)
    columns = column.to_pylist()
    for index in pc.indices_nonzero(problem.is_valid()).to_pylist():
        values[index] = excerpt(batch.column(columns[index])[index].as_py())
    return pa.array(values, STRING)


def _reread(moments: pa.Array, window_start: datetime) -> pa.Array:
    """Whether each row lies before the run's window (false without a timestamp)."""
    if pa.types.is_date(moments.type):
        earlier = pc.less(moments, pa.scalar(window_start.date(), pa.date32()))
    elif pa.types.is_timestamp(moments.type):
        earlier = pc.less(pc.cast(moments, UTC_MICROS), pa.scalar(window_start, UTC_MICROS))
    else:
        return pa.array([False] * len(moments), pa.bool_())
    return pc.fill_null(earlier, False)
