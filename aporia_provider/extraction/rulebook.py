"""The field rulebook: per Aporia field type, one entry that states everything the sync knows about it.

An entry says which column types can feed a field of its type (and the fix when one cannot), how the task's reader
checks a value and encodes it for the wire, the Spark expression that does the same in the JVM, and the words for
the value's problems. Both readers of a window go through these entries, so a column is accepted or refused, and a
value judged and sent, in the same words whichever reader reads it. A new field type is a new entry in ``RULES``.
Column types are described as Spark names them (``ColumnType``), whichever reader learnt them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from aporia_provider.schema import FieldSpec
from aporia_provider.vocabulary import FIELD_TYPES

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql.types import DataType

NUMERIC = frozenset({"integral", "fractional", "decimal"})
# How Spark writes a timestamp for the wire (UTC, microseconds); `occurred_at` writes it the same way.
OCCURRED_AT_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
_CAST_HINT = "cast it in the query or with select_expr"
_JSON_TEXT_HINT = "or JSON text (SUPER or VARCHAR)"
# Strings Spark's JSON reader takes as non-finite doubles.
_NON_FINITE_WORDS = frozenset({"NaN", "Infinity", "+Infinity", "-Infinity", "+INF", "-INF"})


@dataclass(frozen=True)
class ColumnType:
    """A column's type as the rules see it: a category and the name messages show (Spark's names)."""

    category: str  # integral, fractional, decimal, string, boolean, timestamp, date, time, array, map or other
    name: str
    element: ColumnType | None = None  # an array's elements, a map's values


# A non-null value -> (what to send, or None when nothing is sent; the problem, or None).
Check = Callable[[Any], tuple[Any, str | None]]


class FieldRule:
    """One field type's entry; `accepts` and `target` state which columns fit and the cast that fixes the others."""

    accepts: frozenset[str] = frozenset()
    target = ""

    def refusal(self, spec: FieldSpec, column_type: ColumnType) -> str | None:
        """The fix for a column of this type that cannot feed the field, or None when it can."""
        return None if column_type.category in self.accepts else f"{_CAST_HINT} to {self.target}"

    def task_check(self, spec: FieldSpec) -> Check:
        """The task reader's check of the field's non-null values; the value as the driver returns it is sent."""
        return _as_it_is

    def spark_parse(self, spec: FieldSpec, col: Column, data_type: DataType) -> Column | None:
        """A parse the column's values need first (JSON text), or None. The reader projects it once, in a column
        of its own, so the value and each of its checks read the parsed value instead of parsing it again."""
        return None

    def spark_value(
        self, spec: FieldSpec, col: Column, data_type: DataType, parsed: Column | None = None
    ) -> tuple[Column, Column | None]:
        """Spark's value for the wire and its problem (null when fine), or None when the type has no problem;
        `parsed` is the column `spark_parse` asked for."""
        return col, None


def _as_it_is(value: Any) -> tuple[Any, str | None]:
    return value, None


class _Plain(FieldRule):
    def __init__(self, accepts: frozenset[str], target: str) -> None:
        self.accepts, self.target = accepts, target


class _Numeric(FieldRule):
    """Sent as a double; NaN and infinities are problems."""

    accepts, target = NUMERIC, "a number"

    def task_check(self, spec: FieldSpec) -> Check:
        problem = not_finite(spec.name)

        def check(value: Any) -> tuple[Any, str | None]:
            number = float(value)
            return number, None if math.isfinite(number) else problem

        return check

    def spark_value(
        self, spec: FieldSpec, col: Column, data_type: DataType, parsed: Column | None = None
    ) -> tuple[Column, Column | None]:
        from pyspark.sql import functions as F

        return col.cast("double"), F.when(col.isNotNull() & ~_finite(col), F.lit(not_finite(spec.name)))


class _Datetime(FieldRule):
    """Sent as ISO-8601 text in UTC, as `OCCURRED_AT_FORMAT` writes it."""

    accepts, target = frozenset({"timestamp", "date"}), "a timestamp"

    def task_check(self, spec: FieldSpec) -> Check:
        return lambda value: (occurred_at(value), None)

    def spark_value(
        self, spec: FieldSpec, col: Column, data_type: DataType, parsed: Column | None = None
    ) -> tuple[Column, Column | None]:
        from pyspark.sql import functions as F

        return F.date_format(col, OCCURRED_AT_FORMAT), None


class _JsonNumbers(FieldRule):
    """Numbers in a structure (lists of lists, or an object): from an array/map column, or JSON text (SUPER).

    JSON text that does not parse to the field's shape is a problem of its row, never a missing value; SQL NULL and
    JSON null stay missing. The task's reader sends text that passed as it is, never re-encoded.
    """

    def refusal(self, spec: FieldSpec, column_type: ColumnType) -> str | None:
        return None if column_type.category == "string" else self.structure_refusal(spec, column_type)

    def structure_refusal(self, spec: FieldSpec, column_type: ColumnType) -> str | None:
        raise NotImplementedError

    def shape(self, spec: FieldSpec) -> str:
        """What the JSON text must hold, for messages."""
        raise NotImplementedError

    def decoded_type(self, spec: FieldSpec) -> Any:
        """The Python type a clean value decodes to (msgspec checks it in C)."""
        raise NotImplementedError

    def json_type(self, spec: FieldSpec) -> DataType:
        """The Spark type the JSON text parses into."""
        raise NotImplementedError

    def judge_parsed(self, spec: FieldSpec, parsed: Any) -> str | None:
        """The problem of JSON the strict decoder refused (a null or non-finite leaf, a wrong shape)."""
        raise NotImplementedError

    def problem_of(self, spec: FieldSpec, col: Column, data_type: DataType) -> Column:
        """Spark's problem of a parsed value (null when fine)."""
        raise NotImplementedError

    def well_shaped(self, spec: FieldSpec, decoded: Any) -> bool:
        return True

    def task_check(self, spec: FieldSpec) -> Check:
        decoder = msgspec.json.Decoder(self.decoded_type(spec))

        def check(text: Any) -> tuple[Any, str | None]:
            try:
                decoded = decoder.decode(text)
            except msgspec.DecodeError:
                return None, self._judge_text(spec, text)
            if not self.well_shaped(spec, decoded):
                return None, wrong_shape(spec)
            return msgspec.Raw(text.encode() if isinstance(text, str) else text), None

        return check

    def _judge_text(self, spec: FieldSpec, text: str) -> str | None:
        """Text the strict decoder refused, judged as Spark's from_json does: JSON null is missing; NaN,
        infinities and nulls are bad elements; any other shape is not JSON of the field's shape."""
        if text.strip(" ").lower() == "null":  # as Spark's trim, which takes spaces only
            return None
        try:
            parsed = json.loads(text)
        except ValueError:
            return not_json(spec, self.shape(spec))
        return self.judge_parsed(spec, parsed)

    def spark_parse(self, spec: FieldSpec, col: Column, data_type: DataType) -> Column | None:
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        if not isinstance(data_type, T.StringType):
            return None
        return F.from_json(col, self.json_type(spec).simpleString())

    def spark_value(
        self, spec: FieldSpec, col: Column, data_type: DataType, parsed: Column | None = None
    ) -> tuple[Column, Column | None]:
        from pyspark.sql import functions as F

        unparsed = None
        if parsed is not None:
            text, col, data_type = col, parsed, self.json_type(spec)
            is_json_null = F.lower(F.trim(text)) == "null"
            unparsed = F.when(text.isNotNull() & ~is_json_null & col.isNull(), F.lit(not_json(spec, self.shape(spec))))
        problem = self.problem_of(spec, col, data_type)
        return col, problem if unparsed is None else F.coalesce(unparsed, problem)


class _NumberLists(_JsonNumbers):
    """A vector (one level of numbers) or a tensor (one level per dimension, each of its size)."""

    def structure_refusal(self, spec: FieldSpec, column_type: ColumnType) -> str | None:
        depth = _depth(spec)
        inner: ColumnType | None = column_type
        for _ in range(depth):
            if inner is None or inner.category != "array":
                return f"select an array of {depth} level(s) of numbers, {_JSON_TEXT_HINT}"
            inner = inner.element
        return None if inner is not None and inner.category in NUMERIC else f"{_CAST_HINT} to an array of numbers"

    def shape(self, spec: FieldSpec) -> str:
        depth = _depth(spec)
        return f"{depth} levels of lists of numbers" if depth > 1 else "a list of numbers"

    def decoded_type(self, spec: FieldSpec) -> Any:
        decoded: Any = float
        for _ in range(_depth(spec)):
            decoded = list[decoded]
        return decoded

    def json_type(self, spec: FieldSpec) -> DataType:
        from pyspark.sql import types as T

        parsed: DataType = T.DoubleType()
        for _ in range(_depth(spec)):
            parsed = T.ArrayType(parsed)
        return parsed

    def well_shaped(self, spec: FieldSpec, decoded: Any) -> bool:
        return spec.type != "tensor" or _has_shape(decoded, list(spec.dimensions or ()))

    def judge_parsed(self, spec: FieldSpec, parsed: Any) -> str | None:
        if _leaves(parsed, _depth(spec)) is None:
            return not_json(spec, self.shape(spec))
        if not self.well_shaped(spec, parsed):
            return wrong_shape(spec)
        return bad_element(spec, "element")

    def problem_of(self, spec: FieldSpec, col: Column, data_type: DataType) -> Column:
        from pyspark.sql import functions as F

        flat = _flatten(col, data_type)
        problem = F.when(F.exists(flat, lambda x: x.isNull() | ~_finite(x)), F.lit(bad_element(spec, "element")))
        if spec.type != "tensor":
            return problem
        # A null inner list makes the shape check null (size(null) is null under ANSI): that is a wrong shape too.
        fits = F.coalesce(_spark_has_shape(col, list(spec.dimensions or ())), F.lit(False))
        return F.when(col.isNotNull() & ~fits, F.lit(wrong_shape(spec))).otherwise(problem)


class _NumberMap(_JsonNumbers):
    """A dict: string keys to numbers."""

    def structure_refusal(self, spec: FieldSpec, column_type: ColumnType) -> str | None:
        values = column_type.element
        fits = column_type.category == "map" and values is not None and values.category in NUMERIC
        return None if fits else f"select a map of string to number, {_JSON_TEXT_HINT}"

    def shape(self, spec: FieldSpec) -> str:
        return "an object of numbers"

    def decoded_type(self, spec: FieldSpec) -> Any:
        return dict[str, float]

    def json_type(self, spec: FieldSpec) -> DataType:
        from pyspark.sql import types as T

        return T.MapType(T.StringType(), T.DoubleType())

    def judge_parsed(self, spec: FieldSpec, parsed: Any) -> str | None:
        if not isinstance(parsed, dict) or not all(_is_leaf(v) for v in parsed.values()):
            return not_json(spec, self.shape(spec))
        return bad_element(spec, "value")

    def problem_of(self, spec: FieldSpec, col: Column, data_type: DataType) -> Column:
        from pyspark.sql import functions as F

        bad_value = F.exists(F.map_values(col), lambda x: x.isNull() | ~_finite(x))
        return F.when(bad_value, F.lit(bad_element(spec, "value")))


_TEXT = _Plain(frozenset({"string"}), "a string")
RULES: dict[str, FieldRule] = {
    "numeric": _Numeric(),
    "categorical": _Plain(frozenset({"integral"}), "an integer"),
    "string": _TEXT,
    "text": _TEXT,
    "boolean": _Plain(frozenset({"boolean"}), "a boolean"),
    "datetime": _Datetime(),
    "vector": _NumberLists(),
    "tensor": _NumberLists(),
    "dict": _NumberMap(),
}
assert set(RULES) == set(FIELD_TYPES), "every Aporia field type needs its entry"


# ------------------------------------------------------------------------------------ the words for problems


def not_finite(name: str) -> str:
    return f"{name}: not a finite number"


def not_json(spec: FieldSpec, shape: str) -> str:
    return f"{spec.name}: not JSON holding {shape}"


def bad_element(spec: FieldSpec, kind: str) -> str:
    return f"{spec.name}: holds a null or non-finite {kind}"


def wrong_shape(spec: FieldSpec) -> str:
    return f"{spec.name}: expected a tensor of shape {list(spec.dimensions or ())}"


def refused_column(spec: FieldSpec, column: str, group: str, column_type: ColumnType) -> str | None:
    """The whole sentence for a column that cannot feed its field, or None."""
    fix = RULES[spec.type].refusal(spec, column_type)
    if fix is None:
        return None
    return (
        f"Column {column!r} for {group[:-1].replace('_', ' ')} {spec.name!r} is {column_type.name}, but the field is "
        f"{spec.type}; {fix}."
    )


# ------------------------------------------------------------------------------------ the wire encodings


def occurred_at(value: datetime | date) -> str:
    """A timestamp as Spark's date_format writes it (UTC, microseconds, Z); timestamps without a zone are UTC."""
    if isinstance(value, datetime):
        m = value.astimezone(timezone.utc) if value.tzinfo else value
        return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T00:00:00.000000Z"


# ------------------------------------------------------------------------------------ shapes, both ways


def _depth(spec: FieldSpec) -> int:
    """Levels of lists a vector (1) or tensor (one per dimension) holds."""
    return len(spec.dimensions or ()) if spec.type == "tensor" else 1


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


def _finite(col: Column) -> Column:
    from pyspark.sql import functions as F

    return ~(F.isnan(col) | col.isin(math.inf, -math.inf))


def _flatten(col: Column, data_type: DataType) -> Column:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    while isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, T.ArrayType):
        col, data_type = F.flatten(col), data_type.elementType
    return col


def _spark_has_shape(col: Column, dimensions: list[int]) -> Column:
    from pyspark.sql import functions as F

    size_matches = F.size(col) == dimensions[0]
    if len(dimensions) == 1:
        return size_matches
    return size_matches & F.forall(col, lambda inner: _spark_has_shape(inner, dimensions[1:]))
