"""The sync engine: read a window from Redshift with Spark, validate, and deliver fragments to Aporia.

It knows nothing of Airflow. Rows never pass through the calling process: Spark reads partitions over
JDBC (the window predicate pushed down), builds each fragment's JSON and each row's validation verdict
in the JVM, and Spark tasks post batches to Aporia themselves. Only counts and a few examples come back.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial, reduce
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.extraction.sql import SyncInputError, Window, identifier, single_statement, windowed
from aporia_provider.schema import FieldSpec, VersionSchema

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType

log = logging.getLogger(__name__)

POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
DEFAULT_SPARK_CONF = {
    "spark.master": "local[*]",
    "spark.app.name": "aporia-sync",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    # JDBC sessions and timestamp conversion in UTC, whatever the host's zone. C1-only JIT: a sync's JVM
    # lives for minutes, and C2 compilation took more CPU than it saved (make bench, 2 cores).
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -XX:TieredStopAtLevel=1",
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    # Spark's 1 GB default is tight for the local driver that also runs the tasks.
    "spark.driver.memory": "2g",
}
DEFAULT_READ_OPTIONS = {"fetchsize": "10000"}
READ_PARTITIONS_PER_CORE = 4
MAX_EXAMPLES = 5
MAX_DUPLICATES_LISTED = 10_000
_OCCURRED_AT_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"
_WIRE_GROUPS = {"features": "features", "predictions": "predictions", "raw_inputs": "rawInputs"}


class InvalidRowsError(SyncInputError):
    """Rows in the window do not fit the version schema and the policy is to fail."""


class SyncFailed(RuntimeError):
    """Redshift or Aporia failed mid-sync; re-running is safe, since delivery is idempotent."""


_PYTHON_ERROR_LINE = re.compile(r"^[\w.]*(?:Error|Exception): (.+)$", re.MULTILINE)


@contextmanager
def _failures_of(stage: str, plan: SyncPlan) -> Iterator[None]:
    """Turn a Spark failure (a JVM stack or a Python worker's traceback) into one sentence."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import CapturedException, PythonException

    try:
        yield
    except PythonException as exc:
        # The worker's own exception is the last "...Error: message" line of its traceback.
        reasons = _PYTHON_ERROR_LINE.findall(str(exc))
        raise SyncFailed(_failure_sentence(stage, plan, reasons[-1] if reasons else str(exc))) from None
    except (CapturedException, Py4JJavaError) as exc:
        raise SyncFailed(_failure_sentence(stage, plan, _root_cause(exc))) from None


def _failure_sentence(stage: str, plan: SyncPlan, reason: str) -> str:
    return (
        f"{stage} for {plan.model_id} {plan.model_version} failed: {reason.strip().rstrip('.')}; "
        "re-run the task once that is fixed (delivery is idempotent: nothing is duplicated)."
    )


def _root_cause(exc: Exception) -> str:
    """The first cause outside Spark itself (the driver's or the network's own words)."""
    # Captured exceptions keep the Java throwable as _origin; raw py4j errors as java_exception.
    throwable = getattr(exc, "_origin", None) or getattr(exc, "java_exception", None)
    while throwable is not None:
        if not throwable.getClass().getName().startswith("org.apache.spark") and throwable.getMessage():
            return str(throwable.getMessage())
        throwable = throwable.getCause()
    return str(exc).splitlines()[0]


@dataclass(frozen=True)
class SyncPlan:
    """What to read and how it maps onto the version schema."""

    model_id: str
    model_version: str
    schema: VersionSchema
    query: str
    id_column: str
    timestamp_column: str
    # Field name -> column name, per group; unmapped fields read the column of the same name.
    features: Mapping[str, str] = field(default_factory=dict)
    predictions: Mapping[str, str] = field(default_factory=dict)
    raw_inputs: Mapping[str, str] = field(default_factory=dict)
    # Prediction field -> column holding its delayed actual.
    actuals: Mapping[str, str] = field(default_factory=dict)
    actuals_timestamp_column: str | None = None
    actuals_query: str | None = None
    select_expr: tuple[str, ...] = ()
    read_options: Mapping[str, str] = field(default_factory=dict)
    on_invalid_rows: str = "fail"

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", single_statement(self.query, "query"))
        if self.actuals_query is not None:
            object.__setattr__(self, "actuals_query", single_statement(self.actuals_query, "actuals_query"))
        identifier(self.id_column, "id_column")
        identifier(self.timestamp_column, "timestamp_column")
        if self.on_invalid_rows not in ("fail", "skip"):
            raise SyncInputError(f"on_invalid_rows {self.on_invalid_rows!r} is not supported; use 'fail' or 'skip'.")
        for group in ("features", "predictions", "raw_inputs"):
            known = {f.name for f in self.schema.group(group)}
            for name, column in getattr(self, group).items():
                if name not in known:
                    raise SyncInputError(
                        f"{group} mapping names {name!r}, which is not a {group[:-1].replace('_', ' ')} of "
                        f"{self.model_id} {self.model_version}; map only fields of the version schema."
                    )
                identifier(column, f"{group} mapping for {name!r}")
        predictions = {f.name for f in self.schema.predictions}
        for name, column in self.actuals.items():
            if name not in predictions:
                raise SyncInputError(
                    f"actuals mapping names {name!r}, which is not a prediction of the version; "
                    f"actuals are keyed by prediction names ({', '.join(sorted(predictions))})."
                )
            identifier(column, f"actuals mapping for {name!r}")
        if self.actuals and not self.actuals_timestamp_column:
            raise SyncInputError(
                "actuals are mapped but actuals_timestamp_column is not set; name the column that says when "
                "each actual arrived."
            )
        if self.actuals_timestamp_column:
            identifier(self.actuals_timestamp_column, "actuals_timestamp_column")

    def column_for(self, group: str, spec: FieldSpec) -> str:
        mapping: Mapping[str, str] = getattr(self, group)
        return mapping.get(spec.name, spec.name)


@dataclass
class SyncSummary:
    window_start: str
    window_end: str
    rows_read: int = 0
    fragments_sent: int = 0
    actuals_read: int = 0
    actuals_sent: int = 0
    rows_rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    batches: int = 0
    retries: int = 0
    warnings: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spark_session(spark_conf: Mapping[str, str] | None = None) -> SparkSession:
    """A Spark session: local[*] unless `spark_conf` names another master; the PostgreSQL JDBC driver added."""
    from pyspark.sql import SparkSession

    # PySpark starts its Python workers with PYSPARK_PYTHON (default: python3 on the PATH); point it at
    # this interpreter, which has the provider installed, unless the deployment chose one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # py4j narrates every gateway connection at INFO; the task log needs none of it.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    conf = {**DEFAULT_SPARK_CONF, **(spark_conf or {})}
    if POSTGRES_JDBC_JAR.exists() and "spark.jars" not in conf:
        conf["spark.jars"] = str(POSTGRES_JDBC_JAR)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def run_sync(
    spark: SparkSession,
    plan: SyncPlan,
    window: Window,
    jdbc_options: Callable[[], Mapping[str, str]],
    client: AporiaClient,
    lookback: timedelta = timedelta(0),
    dry_run: bool = False,
    batch_size: int = 5000,
    num_partitions: int | None = None,
) -> SyncSummary:
    """Sync predictions whose timestamp, and actuals whose arrival, fall in the window (widened by lookback)."""
    started = time.monotonic()
    read_window = window.widened(lookback)
    summary = SyncSummary(window.start.isoformat(), window.end.isoformat(), dry_run=dry_run)
    # Several read partitions per core keep each task's share of a large window (its persisted rows,
    # its part of the duplicate-id aggregation) small: with one per core a 10M-row window ran out of heap.
    partitions = num_partitions or READ_PARTITIONS_PER_CORE * spark.sparkContext.defaultParallelism
    reader = partial(_read, spark, jdbc_options, plan, read_window, partitions)

    # (kind, query, the argument naming its timestamp column)
    sources = [("predictions", plan.query, "timestamp_column")]
    if plan.actuals_timestamp_column and plan.actuals:
        sources.append(("actuals", plan.actuals_query or plan.query, "actuals_timestamp_column"))
    prepared: list[_Prepared] = []
    try:
        with _failures_of("Reading the window from Redshift", plan):
            for kind, query, timestamp_argument in sources:
                prepared.append(_prepare(reader(query, timestamp_argument), plan, kind))
            checked = {c.kind: c for c in (_check(p, plan) for p in prepared)}
        summary.rows_read = checked["predictions"].rows
        summary.actuals_read = checked["actuals"].rows if "actuals" in checked else 0
        summary.rows_rejected = sum(c.rejected for c in checked.values())
        summary.rejected_examples = [e for c in checked.values() for e in c.examples][:MAX_EXAMPLES]
        if summary.rows_rejected:
            message = (
                f"{summary.rows_rejected} of {summary.rows_read + summary.actuals_read} rows in the window do not "
                f"fit the schema of {plan.model_id} {plan.model_version} (e.g. {'; '.join(summary.rejected_examples)})"
            )
            if plan.on_invalid_rows == "fail":
                raise InvalidRowsError(
                    message + "; nothing was sent: fix the rows or the mapping, or pass on_invalid_rows='skip'."
                )
            log.warning("%s; skipping them as on_invalid_rows='skip' asks.", message)
        if not dry_run:
            sent = LogResult()
            with _failures_of("Delivering the window to Aporia", plan):
                for kind, rows in checked.items():
                    delivered = _deliver(rows, client, plan, batch_size)
                    if kind == "predictions":
                        summary.fragments_sent = delivered.fragments
                    else:
                        summary.actuals_sent = delivered.fragments
                    sent.add(delivered)
            summary.batches, summary.retries, summary.warnings = sent.batches, sent.retries, len(sent.warnings)
    finally:
        for frame in prepared:
            frame.unpersist()
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _read(
    spark: SparkSession,
    jdbc_options: Callable[[], Mapping[str, str]],
    plan: SyncPlan,
    window: Window,
    partitions: int,
    query: str,
    timestamp_argument: str,
) -> DataFrame:
    """The window of `query`, read over JDBC in partitions of the timestamp range; select_expr applied."""
    timestamp_column: str = getattr(plan, timestamp_argument)
    connection = {**DEFAULT_READ_OPTIONS, **plan.read_options, **jdbc_options()}
    # The window predicate names the timestamp column inside Redshift: make sure it is there first
    # (Spark only fetches the query's columns here, with a WHERE 1=0).
    columns = spark.read.format("jdbc").options(**connection, dbtable=f"({query}) AS source").load().columns
    _require_columns(columns, plan, {timestamp_argument: [timestamp_column]})
    options = {
        **connection,
        "dbtable": windowed(query, timestamp_column, window),
        "partitionColumn": timestamp_column,
        "lowerBound": window.start.strftime("%Y-%m-%d %H:%M:%S"),
        "upperBound": window.end.strftime("%Y-%m-%d %H:%M:%S"),
        "numPartitions": str(max(1, partitions)),
    }
    frame = spark.read.format("jdbc").options(**options).load()
    if plan.select_expr:
        frame = frame.selectExpr(*plan.select_expr)
    return frame


@dataclass
class _Prepared:
    frame: DataFrame
    kind: str  # "predictions" or "actuals"

    def unpersist(self) -> None:
        self.frame.unpersist()


@dataclass
class _Checked:
    frame: DataFrame  # (__fragment) of the rows to send
    kind: str
    rows: int
    rejected: int
    examples: list[str]


def _prepare(frame: DataFrame, plan: SyncPlan, kind: str) -> _Prepared:
    """Project each row to (id, fragment JSON, first problem); persisted so checks and delivery read once."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    build = _prediction_fragment if kind == "predictions" else _actuals_fragment
    fragment, problem = build(frame, plan)
    row_id = F.col(plan.id_column).cast("string")
    projected = (
        frame.select(
            row_id.alias("__id"),
            fragment.alias("__fragment"),
            F.when(row_id.isNull(), F.lit(f"{plan.id_column} is null")).otherwise(problem).alias("__problem"),
        )
        # Rows without a fragment (actuals not yet known) are not part of this sync.
        .where(F.col("__fragment").isNotNull())
        .persist(StorageLevel.DISK_ONLY)
    )
    return _Prepared(projected, kind)


def _check(prepared: _Prepared, plan: SyncPlan) -> _Checked:
    """Count rows and rejects (problems and repeated ids) in one Spark job; more only when rows are rejected."""
    from pyspark.sql import functions as F

    frame = prepared.frame
    per_id = frame.groupBy("__id").agg(F.count(F.lit(1)).alias("n"), F.count("__problem").alias("bad"))
    repeated_id = F.col("__id").isNotNull() & (F.col("n") > 1)
    totals = per_id.agg(
        F.coalesce(F.sum("n"), F.lit(0)).alias("rows"),
        F.coalesce(F.sum(F.when(repeated_id, F.col("n")).otherwise(F.col("bad"))), F.lit(0)).alias("rejected"),
        F.count(F.when(repeated_id, 1)).alias("repeated_ids"),
    ).first()
    assert totals is not None
    if totals["repeated_ids"] > MAX_DUPLICATES_LISTED:
        raise InvalidRowsError(
            f"More than {MAX_DUPLICATES_LISTED} {plan.id_column} values repeat within the window; the query "
            "probably joins rows it should not; make it return one row per prediction."
        )
    problem = F.col("__problem")
    if totals["repeated_ids"]:
        duplicates = [row["__id"] for row in per_id.where(repeated_id).select("__id").collect()]
        repeated = F.col("__id").isin(duplicates)
        problem = F.when(repeated, F.concat(F.lit(f"duplicate {plan.id_column} "), F.col("__id"))).otherwise(problem)
    verdict = frame.select("__id", "__fragment", problem.alias("__problem"))
    examples = []
    if totals["rejected"]:
        examples = [
            f"{prepared.kind} {row['__id'] if row['__id'] is not None else '(no id)'}: {row['__problem']}"
            for row in verdict.where(problem.isNotNull()).limit(MAX_EXAMPLES).collect()
        ]
    return _Checked(
        verdict.where(problem.isNull()).select("__fragment"),
        prepared.kind,
        totals["rows"],
        totals["rejected"],
        examples,
    )


def _deliver(checked: _Checked, client: AporiaClient, plan: SyncPlan, batch_size: int) -> LogResult:
    send = partial(_send_partition, client, plan.model_id, plan.model_version, batch_size)
    total = LogResult()
    for fragments, batches, retries, warnings in checked.frame.rdd.mapPartitions(send).collect():
        total.add(LogResult(fragments, batches, retries, warnings))
    return total


def _send_partition(
    client: AporiaClient, model_id: str, model_version: str, batch_size: int, rows: Iterator[Any]
) -> Iterator[tuple[int, int, int, list[str]]]:
    """Runs in a Spark task: post this partition's fragments in batches, report what it cost."""
    result = LogResult()
    batch: list[str] = []
    for row in rows:
        batch.append(row[0])
        if len(batch) >= batch_size:
            result.add(client.log_fragment_json(model_id, model_version, batch))
            batch = []
    if batch:
        result.add(client.log_fragment_json(model_id, model_version, batch))
    yield result.fragments, result.batches, result.retries, result.warnings[:MAX_EXAMPLES]


def _prediction_fragment(frame: DataFrame, plan: SyncPlan) -> tuple[Column, Column]:
    from pyspark.sql import functions as F

    _require_columns(frame.columns, plan, {"id_column": [plan.id_column], "timestamp_column": [plan.timestamp_column]})
    groups: list[Column] = []
    problems: list[Column] = [F.when(F.col(plan.timestamp_column).isNull(), F.lit(f"{plan.timestamp_column} is null"))]
    for group, wire in _WIRE_GROUPS.items():
        specs = plan.schema.group(group)
        if not specs:
            continue
        columns = {spec: plan.column_for(group, spec) for spec in specs}
        _require_columns(frame.columns, plan, {group: list(columns.values())})
        values = []
        for spec, column in columns.items():
            value, problem = _field(frame, spec, column, group)
            values.append(value.alias(spec.name))
            problems.append(problem)
        groups.append(F.struct(*values).alias(wire))
    occurred_at = F.date_format(F.col(plan.timestamp_column), _OCCURRED_AT_FORMAT).alias("occurredAt")
    fragment = F.to_json(F.struct(F.col(plan.id_column).cast("string").alias("id"), *groups, occurred_at))
    return fragment, F.coalesce(*problems)


def _actuals_fragment(frame: DataFrame, plan: SyncPlan) -> tuple[Column, Column]:
    from pyspark.sql import functions as F

    specs = {spec.name: spec for spec in plan.schema.predictions}
    assert plan.actuals_timestamp_column is not None
    _require_columns(
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


def _require_columns(present: list[str], plan: SyncPlan, needed: Mapping[str, list[str]]) -> None:
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
        finite = ~(F.isnan(col) | col.isin(math.inf, -math.inf))
        return col.cast("double"), F.when(col.isNotNull() & ~finite, F.lit(f"{label}: not a finite number"))
    if spec.type == "datetime":
        return F.date_format(col, _OCCURRED_AT_FORMAT), no_problem
    if spec.type in ("vector", "tensor"):
        problem = F.when(
            F.exists(_flatten(col, data_type), lambda x: x.isNull() | F.isnan(x)),
            F.lit(f"{label}: holds a null or NaN element"),
        )
        if spec.type == "tensor":
            wrong_shape = ~_has_shape(col, list(spec.dimensions or ()))
            problem = F.when(
                col.isNotNull() & wrong_shape,
                F.lit(f"{label}: expected a tensor of shape {list(spec.dimensions or ())}"),
            ).otherwise(problem)
        return col, problem
    return col, no_problem


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
    if spec.type == "dict":
        ok = isinstance(data_type, T.MapType) and isinstance(data_type.valueType, numeric)
        return None if ok else "select a map of string to number (e.g. from_json in select_expr)"
    depth = len(spec.dimensions or ()) if spec.type == "tensor" else 1
    inner = data_type
    for _ in range(depth):
        if not isinstance(inner, T.ArrayType):
            return f"select an array of {depth} level(s) of numbers (e.g. from_json in select_expr)"
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
