"""What a column may feed, and the words for a value's problem: one statement for both ways of reading.

Spark (`columns`) and the task itself (`in_task`) describe a column's type as a ColumnType, so a column
is accepted or refused, and a value is judged, in the same words whichever way the window is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aporia_provider.exceptions import SyncInputError
from aporia_provider.schema import FieldSpec

if TYPE_CHECKING:
    from aporia_provider.extraction.plan import SyncPlan

NUMERIC = frozenset({"integral", "fractional", "decimal"})
_CAST_HINT = "cast it in the query or with select_expr"


@dataclass(frozen=True)
class ColumnType:
    """A column's type as the checks see it: a category and the name messages show (Spark's names)."""

    category: str  # integral, fractional, decimal, string, boolean, timestamp, date, array, map or other
    name: str
    element: ColumnType | None = None  # an array's elements, a map's values


def refusal(spec: FieldSpec, column_type: ColumnType) -> str | None:
    """Why a column of this type cannot feed the field, or None when it can."""
    category = column_type.category
    if spec.type == "numeric":
        return None if category in NUMERIC else f"{_CAST_HINT} to a number"
    if spec.type == "categorical":
        return None if category == "integral" else f"{_CAST_HINT} to an integer"
    if spec.type in ("string", "text"):
        return None if category == "string" else f"{_CAST_HINT} to a string"
    if spec.type == "boolean":
        return None if category == "boolean" else f"{_CAST_HINT} to a boolean"
    if spec.type == "datetime":
        return None if category in ("timestamp", "date") else f"{_CAST_HINT} to a timestamp"
    if category == "string":
        return None  # JSON text (SUPER, or JSON in a VARCHAR)
    if spec.type == "dict":
        ok = category == "map" and column_type.element is not None and column_type.element.category in NUMERIC
        return None if ok else "select a map of string to number, or JSON text (SUPER or VARCHAR)"
    depth = tensor_depth(spec)
    inner: ColumnType | None = column_type
    for _ in range(depth):
        if inner is None or inner.category != "array":
            return f"select an array of {depth} level(s) of numbers, or JSON text (SUPER or VARCHAR)"
        inner = inner.element
    return None if inner is not None and inner.category in NUMERIC else f"{_CAST_HINT} to an array of numbers"


def refused_column(spec: FieldSpec, column: str, group: str, column_type: ColumnType) -> str | None:
    """The whole sentence for a column that cannot feed its field, or None."""
    fix = refusal(spec, column_type)
    if fix is None:
        return None
    return (
        f"Column {column!r} for {group[:-1].replace('_', ' ')} {spec.name!r} is {column_type.name}, but the field is "
        f"{spec.type}; {fix}."
    )


def require_columns(present: list[str], plan: SyncPlan, needed: Mapping[str, list[str]]) -> None:
    """Fail, naming the argument to fix, when a column some argument needs is not among `present`.

    `needed` maps an argument (id_column, timestamp_column, ...) or a field group (features, ...) to the
    columns it names.
    """
    for argument, columns in needed.items():
        missing = [c for c in dict.fromkeys(columns) if c not in present]
        if not missing:
            continue
        if argument.endswith("_column"):
            role, fix = f"named by {argument}", f"set {argument} to an existing column"
        else:
            role, fix = f"needed for {argument}", "map the field to an existing column"
        raise SyncInputError(
            f"The query for {plan.model_id} {plan.model_version} has no column {', '.join(repr(m) for m in missing)} "
            f"{role}; it returns {', '.join(present)}; add the column to the query or select_expr, or {fix}."
        )


def tensor_depth(spec: FieldSpec) -> int:
    """Levels of lists a vector (1) or tensor (one per dimension) holds."""
    return len(spec.dimensions or ()) if spec.type == "tensor" else 1


def json_shape(spec: FieldSpec) -> str:
    if spec.type == "dict":
        return "an object of numbers"
    if spec.type == "tensor" and len(spec.dimensions or ()) > 1:
        return f"{len(spec.dimensions or ())} levels of lists of numbers"
    return "a list of numbers"


# A value's problem, prefixed with its field's name.
def not_finite(name: str) -> str:
    return f"{name}: not a finite number"


def not_json(spec: FieldSpec) -> str:
    return f"{spec.name}: not JSON holding {json_shape(spec)}"


def bad_element(spec: FieldSpec) -> str:
    kind = "value" if spec.type == "dict" else "element"
    return f"{spec.name}: holds a null or non-finite {kind}"


def wrong_shape(spec: FieldSpec) -> str:
    return f"{spec.name}: expected a tensor of shape {list(spec.dimensions or ())}"


def duplicate_id(id_column: str) -> str:
    """The problem of every row whose id repeats in the window, before the id itself."""
    return f"duplicate {id_column} "


def too_many_repeated_ids(id_column: str, limit: int) -> str:
    return (
        f"More than {limit} {id_column} values repeat within the window; the query probably joins rows it should "
        "not; make it return one row per prediction."
    )


def rejected_example(kind: str, identity: str | None, problem: str) -> str:
    """One rejected row as the summary and the log name it."""
    return f"{kind} {identity if identity is not None else '(no id)'}: {problem}"


def timestamp_problem(argument: str, column: str, column_type: ColumnType, whole_days: bool) -> str | None:
    """Why the window cannot be read by this column's type, or None when it can."""
    if column_type.category == "timestamp":
        return None
    if column_type.category == "date":
        if whole_days:
            return None
        return (
            f"{argument} {column!r} is a DATE, which only serves windows that start and end at midnight UTC; "
            f"schedule the sync daily (e.g. CronDataIntervalTimetable('0 0 * * *', timezone='UTC')) or name a "
            "TIMESTAMP column."
        )
    return (
        f"{argument} {column!r} is {column_type.name}, but the window is compared as time; select it as a "
        f"TIMESTAMP, e.g. CAST({column} AS TIMESTAMP) AS {column} in the query."
    )
