"""The sync run: read a window from Redshift with Spark, check it, and deliver fragments to Aporia.

It knows nothing of Airflow. Rows never pass through the calling process: Spark reads partitions over
JDBC (the window predicate pushed down), builds each fragment's JSON and each row's verdict in the JVM
(`columns`), and Spark tasks post batches to Aporia themselves. Only counts and a few examples come back.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.extraction.columns import actuals_fragment, prediction_fragment, require_columns
from aporia_provider.extraction.plan import InvalidRowsError, SyncPlan, SyncSummary
from aporia_provider.extraction.sql import Window, windowed

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

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
    require_columns(columns, plan, {timestamp_argument: [timestamp_column]})
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

    build = prediction_fragment if kind == "predictions" else actuals_fragment
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
