"""The sync run: read a window from Redshift with Spark, check it, and deliver fragments to Aporia.

It knows nothing of Airflow and uses only the DataFrame API, so it runs unchanged on local[*], a cluster
and Spark Connect. Rows never pass through the calling process: Spark reads partitions over JDBC (the
window predicate pushed down), builds each fragment's JSON and each row's verdict in the JVM
(`columns`), and Spark tasks post batches to Aporia themselves (`mapInArrow`). Only counts and a few
examples come back.

Each source (predictions, actuals) is read from Redshift once: the read is kept on Spark's disk, one job
counts rows and rejects, and a second sends from that copy, so `on_invalid_rows="fail"` sends nothing
when any row is invalid. Large windows are read in parts, each with credentials fetched just before it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial, reduce
from typing import TYPE_CHECKING, Any, cast

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.extraction.columns import last_of_each_name, project, require_columns, timestamp_problem
from aporia_provider.extraction.failures import failures_of
from aporia_provider.extraction.plan import InvalidRowsError, SyncPlan, SyncSummary
from aporia_provider.extraction.spark import is_connect, tagged
from aporia_provider.extraction.sql import SyncInputError, Window, derived, windowed

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.connect.shell.progress import ProgressHandler

log = logging.getLogger(__name__)

DEFAULT_READ_OPTIONS = {"fetchsize": "10000"}
# One read partition per this many rows: a small window is one task (no scheduling overhead), a large one
# spreads over the cores and keeps each task's share of the kept copy small.
ROWS_PER_PARTITION = 50_000
# Windows larger than this are read in parts, each part with credentials fetched just before its read,
# so a read longer than the credentials' lifetime still completes.
ROWS_PER_READ = 2_000_000
MAX_EXAMPLES = 5
MAX_DUPLICATES_LISTED = 10_000
PROGRESS_SECONDS = 30.0
_DELIVERY_SCHEMA = "fragments long, batches long, retries long, warnings array<string>"


@dataclass(frozen=True)
class _Source:
    kind: str  # "predictions" or "actuals"
    query: str
    timestamp_argument: str  # the argument naming its timestamp column
    timestamp_column: str
    query_argument: str  # the argument holding its query


@dataclass
class _Checked:
    kind: str
    frame: DataFrame  # (__fragment) of the rows to send
    kept: list[DataFrame]  # the persisted reads, released at the end
    rows: int = 0
    rejected: int = 0
    examples: list[str] = field(default_factory=list)


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
    tag: str | None = None,
) -> SyncSummary:
    """Sync predictions whose timestamp, and actuals whose arrival, fall in the window (widened by lookback).

    `jdbc_options` is called before every read, so each read starts on fresh credentials. The Spark jobs
    carry `tag` (when given), so another thread can stop them with `extraction.spark.cancel(spark, tag)`.
    """
    started = time.monotonic()
    summary = SyncSummary(window.start.isoformat(), window.end.isoformat(), dry_run=dry_run)
    subject = f"{plan.model_id} {plan.model_version}"
    sources = [_Source("predictions", plan.query, "timestamp_column", plan.timestamp_column, "query")]
    if plan.actuals_timestamp_column and plan.actuals:
        query, argument = (plan.actuals_query, "actuals_query") if plan.actuals_query else (plan.query, "query")
        sources.append(_Source("actuals", query, "actuals_timestamp_column", plan.actuals_timestamp_column, argument))
    progress = _Progress(spark, subject)
    checked: list[_Checked] = []
    try:
        with progress, tagged(spark, tag) if tag else nullcontext():
            for source in sources:
                with failures_of("Reading the window from Redshift", subject, source.query_argument):
                    read = _read_source(spark, plan, window, lookback, jdbc_options, source, num_partitions, progress)
                    checked.append(read)
                    _check(read, plan, progress)
                log.info("Checked %s of %s: %d rows, %d rejected.", source.kind, subject, read.rows, read.rejected)
            _decide(summary, plan, checked)
            if not dry_run:
                sent = LogResult()
                for rows in checked:
                    progress.phase = f"sending {rows.kind}"
                    with failures_of("Delivering the window to Aporia", subject, "query"):
                        delivered = _deliver(rows.frame, client, plan, batch_size)
                    log.info(
                        "Sent %d %s of %s in %d batches.", delivered.fragments, rows.kind, subject, delivered.batches
                    )
                    if rows.kind == "predictions":
                        summary.fragments_sent = delivered.fragments
                    else:
                        summary.actuals_sent = delivered.fragments
                    sent.add(delivered)
                summary.batches, summary.retries, summary.warnings = sent.batches, sent.retries, len(sent.warnings)
    finally:
        for rows in checked:
            for frame in rows.kept:
                frame.unpersist()
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _decide(summary: SyncSummary, plan: SyncPlan, checked: list[_Checked]) -> None:
    """Fill in what was read; fail before anything is sent when rows are invalid and the policy says so."""
    by_kind = {rows.kind: rows for rows in checked}
    summary.rows_read = by_kind["predictions"].rows
    summary.actuals_read = by_kind["actuals"].rows if "actuals" in by_kind else 0
    summary.rows_rejected = sum(rows.rejected for rows in checked)
    summary.rejected_examples = [e for rows in checked for e in rows.examples][:MAX_EXAMPLES]
    if not summary.rows_rejected:
        return
    message = (
        f"{summary.rows_rejected} of {summary.rows_read + summary.actuals_read} rows in the window do not "
        f"fit the schema of {plan.model_id} {plan.model_version} (e.g. {'; '.join(summary.rejected_examples)})"
    )
    if plan.on_invalid_rows == "fail":
        raise InvalidRowsError(
            message + "; nothing was sent: fix the rows or the mapping, or pass on_invalid_rows='skip'."
        )
    log.warning("%s; skipping them as on_invalid_rows='skip' asks.", message)


def _read_source(
    spark: SparkSession,
    plan: SyncPlan,
    window: Window,
    lookback: timedelta,
    jdbc_options: Callable[[], Mapping[str, str]],
    source: _Source,
    num_partitions: int | None,
    progress: _Progress,
) -> _Checked:
    """Read the source's window once, in parts when it is large, each part projected and kept on disk."""
    from pyspark import StorageLevel
    from pyspark.sql import types as T

    timestamp_column = source.timestamp_column
    read_window = window.widened(lookback)
    options = _connection(plan, jdbc_options)
    # The window predicate names the timestamp column inside Redshift: make sure it is there, and of a type
    # the window can be compared with, before anything is read (Spark fetches only the columns here).
    probe = spark.read.format("jdbc").options(**options, dbtable=derived(source.query)).load()
    require_columns(probe.columns, plan, {source.timestamp_argument: [timestamp_column]})
    timestamp_type = probe.schema[timestamp_column].dataType
    problem = timestamp_problem(source.timestamp_argument, timestamp_column, timestamp_type, window.whole_days())
    if problem:
        raise SyncInputError(problem)
    progress.phase = f"counting {source.kind}"
    counted = f"(SELECT count(*) AS n FROM {windowed(source.query, timestamp_column, read_window)}) AS counted"
    total = int(spark.read.format("jdbc").options(**options, dbtable=counted).load().first()[0])  # type: ignore[index]
    parts = read_window.split(max(1, math.ceil(total / ROWS_PER_READ)))
    kept: list[DataFrame] = []
    for number, part in enumerate(parts, 1):
        progress.phase = f"reading {source.kind}" + (f" (part {number} of {len(parts)})" if len(parts) > 1 else "")
        partitions = num_partitions or max(1, math.ceil(total / len(parts) / ROWS_PER_PARTITION))
        connection = options if number == 1 else _connection(plan, jdbc_options)
        frame = _read(spark, connection, part, partitions, source, dates=isinstance(timestamp_type, T.DateType))
        frame = last_of_each_name(frame.selectExpr(*plan.select_expr)) if plan.select_expr else frame
        projected = project(frame, plan, source.kind).persist(StorageLevel.DISK_ONLY)
        kept.append(projected)
        if len(parts) > 1:
            projected.count()  # read this part now, while its credentials are fresh
    union = reduce(lambda a, b: a.unionAll(b), kept)
    return _Checked(source.kind, union, kept)


def _connection(plan: SyncPlan, jdbc_options: Callable[[], Mapping[str, str]]) -> dict[str, str]:
    return {**DEFAULT_READ_OPTIONS, **plan.read_options, **jdbc_options()}


def _read(
    spark: SparkSession, options: Mapping[str, str], window: Window, partitions: int, source: _Source, dates: bool
) -> DataFrame:
    """The window of the source's query over JDBC, in partitions of its timestamp range."""
    bound = "%Y-%m-%d" if dates else "%Y-%m-%d %H:%M:%S"
    return (
        spark.read.format("jdbc")
        .options(
            **options,
            dbtable=windowed(source.query, source.timestamp_column, window),
            partitionColumn=source.timestamp_column,
            lowerBound=window.start.strftime(bound),
            upperBound=window.end.strftime(bound),
            numPartitions=str(partitions),
        )
        .load()
    )


def _check(read: _Checked, plan: SyncPlan, progress: _Progress) -> None:
    """Count rows and rejects (problems and repeated ids) in one Spark job; more only when rows are rejected."""
    from pyspark.sql import functions as F

    progress.phase = f"checking {read.kind}"
    frame = read.frame
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
    if totals["rejected"]:
        read.examples = [
            f"{read.kind} {row['__id'] if row['__id'] is not None else '(no id)'}: {row['__problem']}"
            for row in verdict.where(problem.isNotNull()).limit(MAX_EXAMPLES).collect()
        ]
    read.frame = verdict.where(problem.isNull()).select("__fragment")
    read.rows, read.rejected = totals["rows"], totals["rejected"]


def _deliver(frame: DataFrame, client: AporiaClient, plan: SyncPlan, batch_size: int) -> LogResult:
    """Spark tasks post their partitions' fragments; each task answers with one row of what it cost."""
    # Arrow hands each task its rows in batches of this size and the task posts each as it comes, so a
    # cancelled task stops at its next batch instead of posting a whole prefetched partition.
    frame.sparkSession.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    send = partial(_send_partition, client, plan.model_id, plan.model_version)
    total = LogResult()
    for row in frame.mapInArrow(send, _DELIVERY_SCHEMA).collect():
        total.add(LogResult(row["fragments"], row["batches"], row["retries"], list(row["warnings"] or [])))
    return total


def _send_partition(
    client: AporiaClient, model_id: str, model_version: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Runs in a Spark task: post each batch of this partition's fragments, report what it cost."""
    import pyarrow as pa

    result = LogResult()
    for record_batch in batches:
        if record_batch.num_rows:
            result.add(client.log_fragment_json(model_id, model_version, record_batch.column(0).to_pylist()))
    yield pa.RecordBatch.from_pylist(
        [
            {
                "fragments": result.fragments,
                "batches": result.batches,
                "retries": result.retries,
                "warnings": result.warnings[:MAX_EXAMPLES],
            }
        ]
    )


class _Progress:
    """Logs, at most every PROGRESS_SECONDS while Spark works, what the sync is doing and how far it got."""

    def __init__(self, spark: SparkSession, subject: str) -> None:
        self.spark = spark
        self.subject = subject
        self.phase = "starting"
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="aporia-sync-progress", daemon=True)
        self._tasks: tuple[int, int] | None = None
        if is_connect(spark):
            spark.registerProgressHandler(cast("ProgressHandler", self._on_connect_progress))

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if is_connect(self.spark):
            self.spark.removeProgressHandler(cast("ProgressHandler", self._on_connect_progress))

    def _on_connect_progress(
        self, stages: Iterable[Any] | None, inflight_tasks: int, operation_id: str | None, done: bool
    ) -> None:
        known = list(stages or [])
        self._tasks = (sum(s.num_completed_tasks for s in known), sum(s.num_tasks for s in known))

    def _tasks_done(self) -> tuple[int, int] | None:
        if is_connect(self.spark):
            return self._tasks
        tracker = self.spark.sparkContext.statusTracker()
        stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
        known = [s for s in stages if s is not None]
        return (sum(s.numCompletedTasks for s in known), sum(s.numTasks for s in known)) if known else None

    def _tick(self) -> None:
        while not self._stop.wait(PROGRESS_SECONDS):
            elapsed = timedelta(seconds=round(time.monotonic() - self._started))
            tasks = self._tasks_done()
            detail = f", {tasks[0]} of {tasks[1]} Spark tasks of this step done" if tasks else ""
            log.info("Syncing %s: %s, %s elapsed%s.", self.subject, self.phase, elapsed, detail)
