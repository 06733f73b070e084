"""A small window read, checked and sent by the task itself, over the Redshift connection: no Spark.

Most hourly windows are small, and Spark's fixed costs (a JVM, or a session and a Python worker on a
shared server, and several jobs) dwarf them. Below `spark_min_rows` a source's window is read with one
query naming only the columns the plan maps, each row is judged by the same rules in the same words as
Spark's path (`fields`), and its fragment JSON is built here. Vectors and tensors that arrive as JSON text
(SUPER) are checked by a typed decoder and sent as the text they are, never re-encoded.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import msgspec

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import InvalidRowsError, SyncFailed, SyncInputError
from aporia_provider.extraction.fields import (
    ColumnType,
    bad_element,
    duplicate_id,
    not_finite,
    not_json,
    refused_column,
    rejected_example,
    require_columns,
    tensor_depth,
    too_many_repeated_ids,
    wrong_shape,
)
from aporia_provider.extraction.plan import MAX_DUPLICATES_LISTED, MAX_EXAMPLES, SyncPlan
from aporia_provider.extraction.sql import Window, windowed
from aporia_provider.schema import FieldSpec
from aporia_provider.vocabulary import FIELD_GROUPS, wire_group

FETCH_ROWS = 10_000

_STRING = ColumnType("string", "string")
# Redshift's type codes (PostgreSQL's where they agree) as Spark's JDBC reader types them, so a refusal names
# the type the same way on both paths. Other types (time, varbyte, geometry, arrays) go through Spark.
REDSHIFT_TYPES: dict[int, ColumnType] = {
    16: ColumnType("boolean", "boolean"),
    20: ColumnType("integral", "bigint"),
    21: ColumnType("integral", "smallint"),
    23: ColumnType("integral", "int"),
    700: ColumnType("fractional", "float"),
    701: ColumnType("fractional", "double"),
    1700: ColumnType("decimal", "decimal"),
    18: _STRING,  # "char"
    25: _STRING,  # text
    1042: _STRING,  # char(n)
    1043: _STRING,  # varchar
    3802: _STRING,  # jsonb (SUPER in the local stand-in)
    4000: _STRING,  # SUPER: JSON text
    1082: ColumnType("date", "date"),
    1114: ColumnType("timestamp", "timestamp"),
    1184: ColumnType("timestamp", "timestamp"),
}
# Strings Spark's JSON reader takes as non-finite doubles.
_NON_FINITE_WORDS = frozenset({"NaN", "Infinity", "+Infinity", "-Infinity", "+INF", "-INF"})

Check = Callable[[Any], tuple[Any, str | None]]


@dataclass(frozen=True)
class _Field:
    wire_group: str | None  # None for actuals
    name: str
    index: int
    check: Check


@dataclass
class TaskRows:
    """A source's window as read in the task: counts, examples and the fragments to send."""

    rows: int = 0
    rejected: int = 0
    examples: list[str] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)


def column_types(description: Sequence[Sequence[Any]]) -> dict[str, ColumnType | None]:
    """Name -> type of each column of a DB-API cursor description; None for types read only by Spark."""
    return {str(column[0]): REDSHIFT_TYPES.get(int(column[1])) for column in description}


def needed_columns(plan: SyncPlan, kind: str, present: list[str]) -> list[str]:
    """The columns a source's rows need, refusing (as Spark's path does) any the query lacks."""
    if kind == "predictions":
        require_columns(present, plan, {"id_column": [plan.id_column], "timestamp_column": [plan.timestamp_column]})
        needed = [plan.id_column, plan.timestamp_column]
        for group in FIELD_GROUPS:
            columns = [plan.column_for(group, spec) for spec in plan.schema.group(group)]
            require_columns(present, plan, {group: columns})
            needed += columns
    else:
        assert plan.actuals_timestamp_column is not None
        needed = [plan.id_column, plan.actuals_timestamp_column, *plan.actuals.values()]
        require_columns(
            present,
            plan,
            {
                "id_column": [plan.id_column],
                "actuals_timestamp_column": [plan.actuals_timestamp_column],
                "actuals": list(plan.actuals.values()),
            },
        )
    return list(dict.fromkeys(needed))


def read_in_task(
    cursor: Any, plan: SyncPlan, kind: str, query: str, timestamp_column: str, window: Window, types: dict[str, Any]
) -> TaskRows:
    """Read the window of one source with `cursor`, judge every row, and build the fragments to send."""
    columns = needed_columns(plan, kind, list(types))
    position = {column: index for index, column in enumerate(columns)}
    fields = _fields(plan, kind, types, position)
    quoted = ", ".join(f'"{column}"' for column in columns)
    cursor.execute(f"SELECT {quoted} FROM {windowed(query, timestamp_column, window)}")
    build = _prediction if kind == "predictions" else _actual
    id_index = position[plan.id_column]
    judged: list[tuple[str | None, str | None, str | None]] = []  # (id, fragment, problem)
    while batch := cursor.fetchmany(FETCH_ROWS):
        for row in batch:
            judged.append(build(row, plan, id_index, position, fields))
    return _verdicts(plan, kind, [entry for entry in judged if entry[1] is not None])


def deliver_in_task(
    fragments: list[str],
    client: AporiaClient,
    plan: SyncPlan,
    batch_size: int,
    stop: threading.Event | None = None,
) -> LogResult:
    """Post the fragments in batches; a stop request ends the delivery before its next batch."""
    result = LogResult()
    for start in range(0, len(fragments), batch_size):
        if stop is not None and stop.is_set():
            raise SyncFailed(
                f"The sync of {plan.model_id} {plan.model_version} was stopped after {result.fragments} fragments; "
                "re-run the task to deliver the rest (delivery is idempotent: nothing is duplicated)."
            )
        result.add(client.log_fragment_json(plan.model_id, plan.model_version, fragments[start : start + batch_size]))
    return result


def _fields(plan: SyncPlan, kind: str, types: dict[str, Any], position: dict[str, int]) -> list[_Field]:
    if kind == "actuals":
        specs = {spec.name: spec for spec in plan.schema.predictions}
        return [
            _Field(None, name, position[column], _check(specs[name], column, "actuals", types[column]))
            for name, column in plan.actuals.items()
        ]
    found = []
    for group in FIELD_GROUPS:
        for spec in plan.schema.group(group):
            column = plan.column_for(group, spec)
            found.append(
                _Field(wire_group(group), spec.name, position[column], _check(spec, column, group, types[column]))
            )
    return found


def _check(spec: FieldSpec, column: str, group: str, column_type: ColumnType) -> Check:
    """The check of one field's non-null values: (value to send, problem or None)."""
    refused = refused_column(spec, column, group, column_type)
    if refused:
        raise SyncInputError(refused)
    if spec.type == "numeric":
        return _numeric(spec.name)
    if spec.type == "datetime":
        return lambda value: (occurred_at(value), None)
    if spec.type in ("vector", "tensor", "dict"):
        return _json_text(spec)  # a string column: other types make the window go through Spark
    return lambda value: (value, None)


def _numeric(name: str) -> Check:
    problem = not_finite(name)

    def check(value: Any) -> tuple[Any, str | None]:
        number = float(value)
        return number, None if math.isfinite(number) else problem

    return check


def _json_text(spec: FieldSpec) -> Check:
    """JSON text of a vector, tensor or dict: a typed decode checks the clean case in C and the text is sent as
    it is; text the decoder refuses is judged the way Spark's `from_json` does."""
    depth = tensor_depth(spec)
    shape: Any = dict[str, float] if spec.type == "dict" else float
    if spec.type != "dict":
        for _ in range(depth):
            shape = list[shape]
    decoder = msgspec.json.Decoder(shape)
    dimensions = list(spec.dimensions or ()) if spec.type == "tensor" else None

    def check(text: Any) -> tuple[Any, str | None]:
        try:
            parsed = decoder.decode(text)
        except msgspec.DecodeError:
            return _judge_text(spec, text, depth, dimensions)
        if dimensions is not None and not _has_shape(parsed, dimensions):
            return None, wrong_shape(spec)
        return msgspec.Raw(text.encode() if isinstance(text, str) else text), None

    return check


def _judge_text(spec: FieldSpec, text: str, depth: int, dimensions: list[int] | None) -> tuple[Any, str | None]:
    """Text the strict decoder refused: JSON null is missing; NaN, infinities and nulls are bad elements; any
    other shape is not JSON of the field's shape (as Spark's from_json gives null)."""
    if text.strip(" ").lower() == "null":  # as Spark's trim, which takes spaces only
        return None, None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None, not_json(spec)
    if spec.type == "dict":
        if not isinstance(parsed, dict) or not all(_is_leaf(v) for v in parsed.values()):
            return None, not_json(spec)
        return None, bad_element(spec)
    leaves = _leaves(parsed, depth)
    if leaves is None:
        return None, not_json(spec)
    if dimensions is not None and not _has_shape(parsed, dimensions):
        return None, wrong_shape(spec)
    return None, bad_element(spec)


def _is_leaf(value: Any) -> bool:
    if value is None or (isinstance(value, str) and value in _NON_FINITE_WORDS):
        return True
    return isinstance(value, int | float) and not isinstance(value, bool)


def _leaves(value: Any, depth: int) -> list[Any] | None:
    """The leaves of `depth` levels of lists, or None when the value is not of that shape."""
    if not isinstance(value, list):
        return None
    if depth == 1:
        return value if all(_is_leaf(v) for v in value) else None
    found: list[Any] = []
    for inner in value:
        if inner is None:
            found.append(None)
            continue
        leaves = _leaves(inner, depth - 1)
        if leaves is None:
            return None
        found += leaves
    return found


def _has_shape(value: Any, dimensions: list[int]) -> bool:
    if not isinstance(value, list) or len(value) != dimensions[0]:
        return False
    return len(dimensions) == 1 or all(_has_shape(inner, dimensions[1:]) for inner in value)


def occurred_at(value: datetime | date) -> str:
    """A timestamp as Spark's date_format writes it (UTC, microseconds, Z); timestamps without a zone are UTC."""
    if isinstance(value, datetime):
        m = value.astimezone(timezone.utc) if value.tzinfo else value
        return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T00:00:00.000000Z"


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


def _prediction(
    row: Sequence[Any], plan: SyncPlan, id_index: int, position: dict[str, int], fields: list[_Field]
) -> tuple[str | None, str | None, str | None]:
    identity = row_id(row[id_index])
    moment = row[position[plan.timestamp_column]]
    problem = None if moment is not None else f"{plan.timestamp_column} is null"
    fragment: dict[str, Any] = {"id": identity}
    for entry in fields:
        group = fragment.setdefault(entry.wire_group or "", {})
        value = row[entry.index]
        if value is None:
            continue
        sent, wrong = entry.check(value)
        if sent is not None:
            group[entry.name] = sent
        problem = problem or wrong
    if moment is not None:
        fragment["occurredAt"] = occurred_at(moment)
    if identity is None:
        problem = f"{plan.id_column} is null"
    return identity, msgspec.json.encode(fragment).decode(), problem


def _actual(
    row: Sequence[Any], plan: SyncPlan, id_index: int, position: dict[str, int], fields: list[_Field]
) -> tuple[str | None, str | None, str | None]:
    identity = row_id(row[id_index])
    values: dict[str, Any] = {}
    problem = None
    present = False
    for entry in fields:
        value = row[entry.index]
        if value is None:
            continue
        present = True
        sent, wrong = entry.check(value)
        if sent is not None:
            values[entry.name] = sent
        problem = problem or wrong
    if not present:
        return identity, None, None  # no actual has arrived for this row
    if identity is None:
        problem = f"{plan.id_column} is null"
    return identity, msgspec.json.encode({"id": identity, "actuals": values}).decode(), problem


def _verdicts(plan: SyncPlan, kind: str, judged: list[tuple[str | None, str | None, str | None]]) -> TaskRows:
    """Counts and examples; rows whose id repeats within the window are rejected, every one of them."""
    counts = Counter(identity for identity, _, _ in judged if identity is not None)
    repeated = {identity for identity, n in counts.items() if n > 1}
    if len(repeated) > MAX_DUPLICATES_LISTED:
        raise InvalidRowsError(too_many_repeated_ids(plan.id_column, MAX_DUPLICATES_LISTED))
    result = TaskRows(rows=len(judged))
    for identity, fragment, problem in judged:
        if identity in repeated:
            problem = duplicate_id(plan.id_column) + identity
        if problem is None:
            result.fragments.append(fragment or "")
            continue
        result.rejected += 1
        if len(result.examples) < MAX_EXAMPLES:
            result.examples.append(rejected_example(kind, identity, problem))
    return result
