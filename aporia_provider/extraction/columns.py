"""Spark column builders: each row's fragment JSON and its first problem, computed in the JVM."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import reduce
from typing import TYPE_CHECKING

from aporia_provider.extraction.plan import SyncPlan
from aporia_provider.extraction.sql import SyncInputError
from aporia_provider.schema import FieldSpec
from aporia_provider.vocabulary import FIELD_GROUPS, wire_group

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame
    from pyspark.sql.types import DataType

OCCURRED_AT_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"


def prediction_fragment(frame: DataFrame, plan: SyncPlan) -> tuple[Column, Column]:
    from pyspark.sql import functions as F

    require_columns(frame.columns, plan, {"id_column": [plan.id_column], "timestamp_column": [plan.timestamp_column]})
    groups: list[Column] = []
    problems: list[Column] = [F.when(F.col(plan.timestamp_column).isNull(), F.lit(f"{plan.timestamp_column} is null"))]
    for group in FIELD_GROUPS:
        wire = wire_group(group)
        specs = plan.schema.group(group)
        if not specs:
            continue
        columns = {spec: plan.column_for(group, spec) for spec in specs}
        require_columns(frame.columns, plan, {group: list(columns.values())})
        values = []
        for spec, column in columns.items():
            value, problem = _field(frame, spec, column, group)
            values.append(value.alias(spec.name))
            problems.append(problem)
        groups.append(F.struct(*values).alias(wire))
    occurred_at = F.date_format(F.col(plan.timestamp_column), OCCURRED_AT_FORMAT).alias("occurredAt")
    fragment = F.to_json(F.struct(F.col(plan.id_column).cast("string").alias("id"), *groups, occurred_at))
    return fragment, F.coalesce(*problems)


def actuals_fragment(frame: DataFrame, plan: SyncPlan) -> tuple[Column, Column]:
    from pyspark.sql import functions as F

    specs = {spec.name: spec for spec in plan.schema.predictions}
    assert plan.actuals_timestamp_column is not None
    require_columns(
        frame.columns,
        plan,
        {
            "id_column": [plan.id_column],
            "actuals_timestamp_column": [plan.actuals_timestamp_column],
            "actuals": list(plan.actuals.values()),
        },
    )
    values, problems = [], []
    for name, column in plan.actuals.items():
        value, problem = _field(frame, specs[name], column, "actuals")
        values.append(value.alias(name))
        problems.append(problem)
    # Null actuals are not sent: a row whose actuals are all null is no actual at all.
    present = reduce(lambda a, b: a | b, [F.col(c).isNotNull() for c in plan.actuals.values()])
    fragment = F.when(
        present,
        F.to_json(F.struct(F.col(plan.id_column).cast("string").alias("id"), F.struct(*values).alias("actuals"))),
    )
    return fragment, F.coalesce(*problems)


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


def _field(frame: DataFrame, spec: FieldSpec, column: str, group: str) -> tuple[Column, Column]:
    """The JSON-ready value of one field and the problem (or null) of its value in a row."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    data_type = frame.schema[column].dataType
    col = F.col(column)
    label = f"{spec.name}"
    expected = _accepts(spec, data_type)
    if expected:
        raise SyncInputError(
            f"Column {column!r} for {group[:-1].replace('_', ' ')} {spec.name!r} is {data_type.simpleString()}, but "
            f"the field is {spec.type}; {expected}."
        )
    no_problem = F.lit(None).cast("string")
    if spec.type == "numeric":
        return col.cast("double"), F.when(col.isNotNull() & ~_finite(col), F.lit(f"{label}: not a finite number"))
    if spec.type == "datetime":
        return F.date_format(col, OCCURRED_AT_FORMAT), no_problem
    if spec.type not in ("vector", "tensor", "dict"):
        return col, no_problem
    unparsed = no_problem
    if isinstance(data_type, T.StringType):
        # SUPER and JSON-holding VARCHAR arrive as JSON text. Text that does not parse to the field's shape
        # is a problem of its row, never a missing value; SQL NULL and JSON null stay missing.
        data_type = _json_type(spec)
        text = col
        col = F.from_json(text, data_type.simpleString())
        is_json_null = F.lower(F.trim(text)) == "null"
        unparsed = F.when(
            text.isNotNull() & ~is_json_null & col.isNull(),
            F.lit(f"{label}: not JSON holding {_json_shape(spec)}"),
        )
    if spec.type == "dict":
        bad_value = F.exists(F.map_values(col), lambda x: x.isNull() | ~_finite(x))
        return col, F.coalesce(unparsed, F.when(bad_value, F.lit(f"{label}: holds a null or non-finite value")))
    problem = F.when(
        F.exists(_flatten(col, data_type), lambda x: x.isNull() | ~_finite(x)),
        F.lit(f"{label}: holds a null or non-finite element"),
    )
    if spec.type == "tensor":
        wrong_shape = ~_has_shape(col, list(spec.dimensions or ()))
        problem = F.when(
            col.isNotNull() & wrong_shape,
            F.lit(f"{label}: expected a tensor of shape {list(spec.dimensions or ())}"),
        ).otherwise(problem)
    return col, F.coalesce(unparsed, problem)


def _finite(col: Column) -> Column:
    from pyspark.sql import functions as F

    return ~(F.isnan(col) | col.isin(math.inf, -math.inf))


def _json_type(spec: FieldSpec) -> DataType:
    """The Spark type that JSON text of a vector, tensor or dict field parses into."""
    from pyspark.sql import types as T

    if spec.type == "dict":
        return T.MapType(T.StringType(), T.DoubleType())
    parsed: DataType = T.DoubleType()
    for _ in range(len(spec.dimensions or ()) if spec.type == "tensor" else 1):
        parsed = T.ArrayType(parsed)
    return parsed


def _json_shape(spec: FieldSpec) -> str:
    if spec.type == "dict":
        return "an object of numbers"
    if spec.type == "tensor" and len(spec.dimensions or ()) > 1:
        return f"{len(spec.dimensions or ())} levels of lists of numbers"
    return "a list of numbers"


def _accepts(spec: FieldSpec, data_type: DataType) -> str | None:
    """Why a column of `data_type` cannot feed the field, or None when it can."""
    from pyspark.sql import types as T

    numeric = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)
    cast_hint = "cast it in the query or with select_expr"
    if spec.type == "numeric":
        return None if isinstance(data_type, numeric) else f"{cast_hint} to a number"
    if spec.type == "categorical":
        integral = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
        return None if isinstance(data_type, integral) else f"{cast_hint} to an integer"
    if spec.type in ("string", "text"):
        return None if isinstance(data_type, T.StringType) else f"{cast_hint} to a string"
    if spec.type == "boolean":
        return None if isinstance(data_type, T.BooleanType) else f"{cast_hint} to a boolean"
    if spec.type == "datetime":
        return (
            None
            if isinstance(data_type, T.TimestampType | T.TimestampNTZType | T.DateType)
            else (f"{cast_hint} to a timestamp")
        )
    if isinstance(data_type, T.StringType):
        return None  # JSON text, parsed in Spark
    if spec.type == "dict":
        ok = isinstance(data_type, T.MapType) and isinstance(data_type.valueType, numeric)
        return None if ok else "select a map of string to number, or JSON text (SUPER or VARCHAR)"
    depth = len(spec.dimensions or ()) if spec.type == "tensor" else 1
    inner = data_type
    for _ in range(depth):
        if not isinstance(inner, T.ArrayType):
            return f"select an array of {depth} level(s) of numbers, or JSON text (SUPER or VARCHAR)"
        inner = inner.elementType
    return None if isinstance(inner, numeric) else f"{cast_hint} to an array of numbers"


def _flatten(col: Column, data_type: DataType) -> Column:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    while isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, T.ArrayType):
        col, data_type = F.flatten(col), data_type.elementType
    return col


def _has_shape(col: Column, dimensions: list[int]) -> Column:
    from pyspark.sql import functions as F

    size_matches = F.size(col) == dimensions[0]
    if len(dimensions) == 1:
        return size_matches
    return size_matches & F.forall(col, lambda inner: _has_shape(inner, dimensions[1:]))


def project(frame: DataFrame, plan: SyncPlan, kind: str) -> DataFrame:
    """Each row as (__id, __fragment JSON, __problem or null); rows without a fragment (no actual yet) dropped."""
    from pyspark.sql import functions as F

    build = prediction_fragment if kind == "predictions" else actuals_fragment
    fragment, problem = build(frame, plan)
    row_id = F.col(plan.id_column).cast("string")
    return frame.select(
        row_id.alias("__id"),
        fragment.alias("__fragment"),
        F.when(row_id.isNull(), F.lit(f"{plan.id_column} is null")).otherwise(problem).alias("__problem"),
    ).where(F.col("__fragment").isNotNull())


def last_of_each_name(frame: DataFrame) -> DataFrame:
    """Keep the last column of each name: select_expr's `*, expr AS col` redefines col, it does not add one."""
    names = frame.columns
    if len(set(names)) == len(names):
        return frame
    last = {name: index for index, name in enumerate(names)}
    renamed = [name if last[name] == index else f"__replaced_{index}" for index, name in enumerate(names)]
    return frame.toDF(*renamed).drop(*[name for name in renamed if name.startswith("__replaced_")])


def timestamp_problem(argument: str, column: str, data_type: DataType, whole_days: bool) -> str | None:
    """Why the window cannot be read by this column's type, or None when it can."""
    from pyspark.sql import types as T

    if isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        return None
    if isinstance(data_type, T.DateType):
        if whole_days:
            return None
        return (
            f"{argument} {column!r} is a DATE, which only serves windows that start and end at midnight UTC; "
            f"schedule the sync daily (e.g. CronDataIntervalTimetable('0 0 * * *', timezone='UTC')) or name a "
            "TIMESTAMP column."
        )
    return (
        f"{argument} {column!r} is {data_type.simpleString()}, but the window is compared as time; select it as a "
        f"TIMESTAMP, e.g. CAST({column} AS TIMESTAMP) AS {column} in the query."
    )
