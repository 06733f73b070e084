"""Spark column builders: each row's fragment JSON and its first problem, computed in the JVM."""

from __future__ import annotations

import math
from functools import reduce
from typing import TYPE_CHECKING

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.fields import (
    ColumnType,
    bad_element,
    not_finite,
    not_json,
    refused_column,
    require_columns,
    tensor_depth,
    wrong_shape,
)
from aporia_provider.extraction.plan import SyncPlan
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


def _field(frame: DataFrame, spec: FieldSpec, column: str, group: str) -> tuple[Column, Column]:
    """The JSON-ready value of one field and the problem (or null) of its value in a row."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    data_type = frame.schema[column].dataType
    col = F.col(column)
    refused = refused_column(spec, column, group, spark_column_type(data_type))
    if refused:
        raise SyncInputError(refused)
    no_problem = F.lit(None).cast("string")
    if spec.type == "numeric":
        return col.cast("double"), F.when(col.isNotNull() & ~_finite(col), F.lit(not_finite(spec.name)))
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
        unparsed = F.when(text.isNotNull() & ~is_json_null & col.isNull(), F.lit(not_json(spec)))
    if spec.type == "dict":
        bad_value = F.exists(F.map_values(col), lambda x: x.isNull() | ~_finite(x))
        return col, F.coalesce(unparsed, F.when(bad_value, F.lit(bad_element(spec))))
    problem = F.when(F.exists(_flatten(col, data_type), lambda x: x.isNull() | ~_finite(x)), F.lit(bad_element(spec)))
    if spec.type == "tensor":
        problem = F.when(
            # A null inner list makes the check null (size(null) is null under ANSI): that is a wrong shape too.
            col.isNotNull() & ~F.coalesce(_has_shape(col, list(spec.dimensions or ())), F.lit(False)),
            F.lit(wrong_shape(spec)),
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
    for _ in range(tensor_depth(spec)):
        parsed = T.ArrayType(parsed)
    return parsed


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


def spark_column_type(data_type: DataType) -> ColumnType:
    """A Spark column type as the shared checks (`fields`) see it."""
    from pyspark.sql import types as T

    element: ColumnType | None = None
    if isinstance(data_type, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        category = "integral"
    elif isinstance(data_type, T.FloatType | T.DoubleType):
        category = "fractional"
    elif isinstance(data_type, T.DecimalType):
        # Named without precision: the task's reads do not learn it, and messages must read alike.
        return ColumnType("decimal", "decimal")
    elif isinstance(data_type, T.StringType):
        category = "string"
    elif isinstance(data_type, T.BooleanType):
        category = "boolean"
    elif isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        category = "timestamp"
    elif isinstance(data_type, T.DateType):
        category = "date"
    elif isinstance(data_type, T.ArrayType):
        category, element = "array", spark_column_type(data_type.elementType)
    elif isinstance(data_type, T.MapType):
        category, element = "map", spark_column_type(data_type.valueType)
    else:
        category = "other"
    return ColumnType(category, data_type.simpleString(), element)
