"""The field rulebook: per Aporia field type, one entry that states everything the sync knows about it.

An entry says which column types can feed a field of its type (and the fix when one cannot), and judges a column
of values at once, as an Arrow array: each value's wire JSON (null where nothing is sent) and each value's problem
in the project's words (null where it is fine). The row rules (`columnar`) assemble fragments from these, in the
task and in Spark's executors alike, so a column is accepted or refused, and a value judged and sent, by the same
code whichever reads it. A new field type is a new entry in ``RULES``. Column types are described as Spark names
them (``ColumnType``), whichever reader learnt them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from aporia_provider.schema import FieldSpec
from aporia_provider.vocabulary import FIELD_TYPES

NUMERIC = frozenset({"integral", "fractional", "decimal"})
_CAST_HINT = "cast it in the query or with select_expr"
_JSON_TEXT_HINT = "or JSON text (SUPER or VARCHAR)"
# Strings Spark's JSON reader takes as non-finite doubles.
_NON_FINITE_WORDS = frozenset({"NaN", "Infinity", "+Infinity", "-Infinity", "+INF", "-INF"})
UTC_MICROS = pa.timestamp("us", tz="UTC")
STRING = pa.string()


@dataclass(frozen=True)
class ColumnType:
    """A column's type as the rules see it: a category and the name messages show (Spark's names)."""

    category: str  # integral, fractional, decimal, string, boolean, timestamp, date, time, array, map or other
    name: str
    element: ColumnType | None = None  # an array's elements, a map's values


class FieldRule:
    """One field type's entry; `accepts` and `target` state which columns fit and the cast that fixes the others."""

    accepts: frozenset[str] = frozenset()
    target = ""

    def refusal(self, spec: FieldSpec, column_type: ColumnType) -> str | None:
        """The fix for a column of this type that cannot feed the field, or None when it can."""
        return None if column_type.category in self.accepts else f"{_CAST_HINT} to {self.target}"

    def encode(self, spec: FieldSpec, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        """Each value's wire JSON (null: not sent) and its problem (null: fine; None: the type has none)."""
        raise NotImplementedError


class _Categorical(FieldRule):
    accepts, target = frozenset({"integral"}), "an integer"

    def encode(self, spec: FieldSpec, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        return pc.cast(values, STRING), None


class _Text(FieldRule):
    accepts, target = frozenset({"string"}), "a string"

    def encode(self, spec: FieldSpec, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        return json_strings(values), None


class _Boolean(FieldRule):
    accepts, target = frozenset({"boolean"}), "a boolean"

    def encode(self, spec: FieldSpec, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        return pc.if_else(values, "true", "false"), None


class _Numeric(FieldRule):
    """Sent as a double; NaN and infinities are problems."""

    accepts, target = NUMERIC, "a number"

    def encode(self, spec: FieldSpec, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        numbers = doubles(values)
        problem = pc.if_else(pc.is_finite(numbers), pa.scalar(None, STRING), not_finite(spec.name))
        return float_texts(numbers), problem


class _Datetime(FieldRule):
    """Sent as ISO-8601 text in UTC with microseconds and a Z; timestamps without a zone are UTC."""

    accepts, target = frozenset({"timestamp", "date"}), "a timestamp"

    def encode(self, spec: FieldSpec, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        return quote(datetime_texts(values)), None


class _JsonNumbers(FieldRule):
    """Numbers in a structure (lists of lists, or an object): from an array/map column, or JSON text (SUPER).

    JSON text that does not parse to the field's shape is a problem of its row, never a missing value; SQL NULL and
    JSON null stay missing. Text that passed is sent as it is, never re-encoded.
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

    def judge_parsed(self, spec: FieldSpec, parsed: Any) -> str | None:
        """The problem of JSON the strict decoder refused (a null or non-finite leaf, a wrong shape)."""
        raise NotImplementedError

    def well_shaped(self, spec: FieldSpec, decoded: Any) -> bool:
        return True

    def encode(self, spec: FieldSpec, values: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        one = msgspec.json.Decoder(self.decoded_type(spec))
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            return self._judge_texts(spec, one, values.cast(STRING))
        # An array or map column (Spark reads those): each value judged as the JSON text it would be.
        texts: list[str | None] = []
        problems: list[str | None] = []
        for value in _python_values(values):
            problem = None
            if value is not None:
                problem, _ = self._judge_one(spec, one, json.dumps(value, allow_nan=True))
            texts.append(msgspec.json.encode(value).decode() if value is not None and problem is None else None)
            problems.append(problem)
        return pa.array(texts, STRING), pa.array(problems, STRING)

    def _judge_texts(self, spec: FieldSpec, one: msgspec.json.Decoder, texts: pa.Array) -> tuple[pa.Array, pa.Array]:
        """Each text decoded on its own (text joined with others could close or open another's brackets); a batch
        with a value the strict decoder refuses is judged value by value, in the words of that value's problem."""
        values = texts.to_pylist()
        fast = msgspec.json.Decoder(self.decoded_type(spec) | None)
        shaped, wrong = self.well_shaped, wrong_shape(spec)
        missing: list[bool] = []
        problems: list[str | None] = []
        try:
            for text in values:  # each decoded value dropped at once: 768 floats are 25 kB of Python objects
                value = None if text is None else fast.decode(text)
                missing.append(value is None)
                problems.append(None if value is None or shaped(spec, value) else wrong)
        except msgspec.DecodeError:
            judged = [(None, True) if text is None else self._judge_one(spec, one, text) for text in values]
            problems = [problem for problem, _ in judged]
            missing = [absent for _, absent in judged]
        problem_array = pa.array(problems, STRING)
        sent = pc.and_(pc.invert(pa.array(missing, pa.bool_())), pc.is_null(problem_array))
        return pc.if_else(sent, texts, pa.scalar(None, STRING)), problem_array

    def _judge_one(self, spec: FieldSpec, one: msgspec.json.Decoder, text: str) -> tuple[str | None, bool]:
        """(problem, whether the value is missing) of one JSON text."""
        try:
            value = one.decode(text)
        except msgspec.DecodeError:
            problem = self._judge_text(spec, text)
            return problem, problem is None
        return (None if self.well_shaped(spec, value) else wrong_shape(spec)), False

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

    def well_shaped(self, spec: FieldSpec, decoded: Any) -> bool:
        return spec.type != "tensor" or _has_shape(decoded, list(spec.dimensions or ()))

    def judge_parsed(self, spec: FieldSpec, parsed: Any) -> str | None:
        if _leaves(parsed, _depth(spec)) is None:
            return not_json(spec, self.shape(spec))
        if not self.well_shaped(spec, parsed):
            return wrong_shape(spec)
        return bad_element(spec, "element")


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

    def judge_parsed(self, spec: FieldSpec, parsed: Any) -> str | None:
        if not isinstance(parsed, dict) or not all(_is_leaf(v) for v in parsed.values()):
            return not_json(spec, self.shape(spec))
        return bad_element(spec, "value")


_TEXT = _Text()
RULES: dict[str, FieldRule] = {
    "numeric": _Numeric(),
    "categorical": _Categorical(),
    "string": _TEXT,
    "text": _TEXT,
    "boolean": _Boolean(),
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


def doubles(values: pa.Array) -> pa.Array:
    """Numbers (or decimal text) as doubles. Decimals through Python's float, which rounds correctly (as the JVM's
    doubleValue does)."""
    if pa.types.is_decimal(values.type):
        return pa.array([None if v is None else float(v) for v in values.to_pylist()], pa.float64())
    return pc.cast(values, pa.float64())


def float_texts(numbers: pa.Array) -> pa.Array:
    """Doubles as msgspec writes them (shortest round trip; `1.0`, `1e16`): one encode of the whole column, split
    by Arrow, so no Python object is made per value. Non-finite values come out as `null`; callers reject them."""
    if not len(numbers):
        return pa.array([], STRING)
    encoded = msgspec.json.encode(numbers.fill_null(0.0).to_pylist())
    texts = pc.split_pattern(pa.array([encoded[1:-1].decode()], STRING), ",").flatten()
    return pc.if_else(numbers.is_valid(), texts, pa.scalar(None, STRING))


def json_strings(values: pa.Array) -> pa.Array:
    """Strings as JSON string literals, byte for byte as msgspec writes them (UTF-8 kept, only `"`, `\\` and control
    characters escaped)."""
    values = pc.cast(values, STRING)
    if pc.any(pc.match_substring_regex(values, r"[\x00-\x1f]")).as_py():
        return pa.array([None if v is None else msgspec.json.encode(v).decode() for v in values.to_pylist()], STRING)
    return quote(pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"'))


def quote(texts: pa.Array) -> pa.Array:
    """Text that needs no escaping, in quotes."""
    return pc.binary_join_element_wise('"', texts, '"', "")


def datetime_texts(values: pa.Array) -> pa.Array:
    """Timestamps (or dates, at midnight) as UTC text with microseconds and a Z, e.g. 2026-11-20T10:30:00.000000Z."""
    # Arrow's cast of a timestamp without a zone writes "2026-11-20 10:30:00.000000" (zero-padded years); strftime,
    # or the cast of one with a zone, takes thirty times as long (both look the zone up per value).
    wall = pc.cast(pc.cast(utc_micros(values), pa.timestamp("us")), STRING)
    return pc.binary_join_element_wise(pc.replace_substring(wall, " ", "T", max_replacements=1), "Z", "")


def utc_micros(values: pa.Array) -> pa.Array:
    """Timestamps or dates as UTC microseconds; a timestamp without a zone is UTC."""
    if pa.types.is_date(values.type):
        values = pc.cast(values, pa.timestamp("us"))
    return pc.cast(values, UTC_MICROS)


def _python_values(values: pa.Array) -> list[Any]:
    """An array or map column's values as Python lists and dicts (maps arrive as lists of pairs)."""
    if pa.types.is_map(values.type):
        return [None if v is None else dict(v) for v in values.to_pylist()]
    return values.to_pylist()


# ------------------------------------------------------------------------------------ shapes


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
