"""The sync run: read a window from Redshift, check it, and deliver fragments to Aporia.

It knows nothing of Airflow. Each source (predictions, actuals) is probed and counted over the Redshift
connection first. A small window is read, judged and sent by the task itself (`in_task`). A large one goes
to Spark, with the DataFrame API only, so it runs unchanged on local[*], a cluster and Spark Connect: Spark
reads partitions over JDBC (the window predicate pushed down), builds each fragment's JSON and each row's
verdict in the JVM (`columns`), and Spark tasks post batches to Aporia themselves (`mapInArrow`); only
counts and a few examples come back.

Either way each source is read from Redshift once and every row is judged before anything is sent, so
`on_invalid_rows="fail"` sends nothing when any row is invalid. With Spark the read is kept on its disk
between the check and the send, and large windows are read in parts, each with credentials fetched just
before it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import InvalidRowsError, SyncFailed, SyncInputError
from aporia_provider.extraction.failures import failures_of
from aporia_provider.extraction.fields import ColumnType, require_columns, timestamp_problem
from aporia_provider.extraction.in_spark import TASK_READ_OPTIONS, check_with_spark, deliver_with_spark, read_with_spark
from aporia_provider.extraction.in_task import column_types, deliver_in_task, needed_columns, read_in_task
from aporia_provider.extraction.plan import MAX_EXAMPLES, SPARK_MIN_ROWS, Source, SyncPlan, SyncSummary
from aporia_provider.extraction.spark import is_connect, tagged
from aporia_provider.extraction.sql import Window, derived, windowed

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.connect.shell.progress import ProgressHandler

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 30.0


@dataclass(frozen=True)
class Redshift:
    """How a sync reaches Redshift; both fetch fresh credentials when called."""

    connect: Callable[[], Any]  # a DB-API connection, for probes, counts and the task's own reads
    jdbc_options: Callable[[], Mapping[str, str]]  # for Spark's JDBC reads


@dataclass
class _Checked:
    """A source's window, read and judged: what it holds, and how to send what passed."""

    kind: str
    rows: int
    rejected: int
    examples: list[str]
    send: Callable[[], LogResult]
    release: Callable[[], None] = lambda: None


def run_sync(
    plan: SyncPlan,
    window: Window,
    redshift: Redshift,
    spark: Callable[[], SparkSession],
    client: AporiaClient,
    lookback: timedelta = timedelta(0),
    dry_run: bool = False,
    batch_size: int = 5000,
    num_partitions: int | None = None,
    spark_min_rows: int = SPARK_MIN_ROWS,
    tag: str | None = None,
    stop: threading.Event | None = None,
) -> SyncSummary:
    """Sync predictions whose timestamp, and actuals whose arrival, fall in the window (widened by lookback).

    A source's window of fewer than `spark_min_rows` rows is read and sent by this process; a larger one (or any,
    with select_expr) by Spark, whose session `spark` starts on first use. The Spark jobs carry `tag` (when
    given), so another thread can stop them with `extraction.spark.cancel(spark, tag)`; `stop` ends the
    task's own delivery before its next batch.
    """
    started = time.monotonic()
    summary = SyncSummary(window.start.isoformat(), window.end.isoformat(), dry_run=dry_run)
    subject = f"{plan.model_id} {plan.model_version}"
    sources = [Source("predictions", plan.query, "timestamp_column", plan.timestamp_column, "query")]
    if plan.actuals_timestamp_column and plan.actuals:
        query, argument = (plan.actuals_query, "actuals_query") if plan.actuals_query else (plan.query, "query")
        sources.append(Source("actuals", query, "actuals_timestamp_column", plan.actuals_timestamp_column, argument))
    progress = _Progress(subject)
    checked: list[_Checked] = []
    with ExitStack() as stack:
        stack.enter_context(progress)
        stack.callback(_release, checked)
        session: list[SparkSession] = []

        def started_spark() -> SparkSession:
            if not session:
                session.append(spark())
                if tag:
                    stack.enter_context(tagged(session[0], tag))
                progress.watch(session[0])
            return session[0]

        reader = _Reader(
            plan=plan,
            window=window.widened(lookback),
            whole_days=window.whole_days(),
            redshift=redshift,
            spark=started_spark,
            client=client,
            progress=progress,
            stack=stack,
            num_partitions=num_partitions,
            spark_min_rows=spark_min_rows,
            batch_size=batch_size,
            stop=stop,
        )
        for source in sources:
            with failures_of("Reading the window from Redshift", subject, source.query_argument):
                read = reader.read(source)
            checked.append(read)
            log.info(
                "Checked %s of %s: %s, %d rejected.", source.kind, subject, _counted(read.rows, "row"), read.rejected
            )
        _decide(summary, plan, checked)
        if not dry_run:
            sent = LogResult()
            for rows in checked:
                if stop is not None and stop.is_set():
                    raise SyncFailed(
                        f"The sync of {subject} was stopped before sending its {rows.kind}; re-run the task to "
                        "deliver them (delivery is idempotent: nothing is duplicated)."
                    )
                progress.phase = f"sending {rows.kind}"
                with failures_of("Delivering the window to Aporia", subject, "query"):
                    delivered = rows.send()
                log.info(
                    "Sent %s of %s in %s.",
                    _counted(delivered.fragments, rows.kind[:-1]),
                    subject,
                    _counted(delivered.batches, "batch"),
                )
                if rows.kind == "predictions":
                    summary.fragments_sent = delivered.fragments
                else:
                    summary.actuals_sent = delivered.fragments
                sent.add(delivered)
            summary.batches, summary.retries, summary.warnings = sent.batches, sent.retries, len(sent.warnings)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _counted(number: int, noun: str) -> str:
    """'1 row', '12 rows', '1 batch', '3 batches', '1,000,000 predictions' for the log."""
    if number == 1:
        return f"1 {noun}"
    return f"{number:,} {noun}es" if noun.endswith("ch") else f"{number:,} {noun}s"


def _release(checked: list[_Checked]) -> None:
    for rows in checked:
        rows.release()


def _unpersist(kept: list[DataFrame]) -> None:
    for frame in kept:
        frame.unpersist()


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


@dataclass
class _Reader:
    """Reads each source's window once: in this process when it is small, with Spark otherwise."""

    plan: SyncPlan
    window: Window  # already widened by the lookback
    whole_days: bool  # the run's window (before the lookback) is whole days: what a DATE column can serve
    redshift: Redshift
    spark: Callable[[], SparkSession]
    client: AporiaClient
    progress: _Progress
    stack: ExitStack
    num_partitions: int | None
    spark_min_rows: int
    batch_size: int
    stop: threading.Event | None
    _cursor: Any = None
    _columns: dict[str, dict[str, ColumnType | None]] = field(default_factory=dict)  # by query: one probe each

    def cursor(self) -> Any:
        if self._cursor is None:
            connection = self.stack.enter_context(closing(self.redshift.connect()))
            # Each statement its own transaction, so no lock on the source tables outlives its query; bounds
            # compared in UTC, as Spark's JDBC sessions compare them, whatever the user's time zone.
            connection.autocommit = True
            self._cursor = connection.cursor()
            self._cursor.execute("SET TIME ZONE 'UTC'")
        return self._cursor

    def read(self, source: Source) -> _Checked:
        plan, subject = self.plan, f"{self.plan.model_id} {self.plan.model_version}"
        spark_min_rows = self.spark_min_rows
        if plan.select_expr or set(plan.read_options) - TASK_READ_OPTIONS:
            # Spark SQL expressions, or JDBC options (a session init statement, a custom schema): only Spark
            # applies them.
            return self._with_spark(source, None)
        # The window predicate names the timestamp column inside Redshift: make sure it is there, and of a type
        # the window can be compared with, before anything is counted or read.
        cursor = self.cursor()
        self.progress.phase = f"counting {source.kind}"
        if source.query not in self._columns:
            cursor.execute(f"SELECT * FROM {derived(source.query)} LIMIT 0")
            self._columns[source.query] = column_types(cursor.description)
        types = self._columns[source.query]
        require_columns(list(types), plan, {source.timestamp_argument: [source.timestamp_column]})
        timestamp_type = types[source.timestamp_column]
        if timestamp_type is None:  # a type only Spark reads: Spark judges it, in its own words
            return self._with_spark(source, None)
        problem = timestamp_problem(source.timestamp_argument, source.timestamp_column, timestamp_type, self.whole_days)
        if problem:
            raise SyncInputError(problem)
        cursor.execute(f"SELECT count(*) FROM {windowed(source.query, source.timestamp_column, self.window)}")
        total = int(cursor.fetchone()[0])
        needed = needed_columns(plan, source.kind, list(types))
        unread = [column for column in needed if types[column] is None]
        if total >= spark_min_rows or unread:
            why = f"of a type only Spark reads ({', '.join(unread)})" if unread else f"at least {spark_min_rows:,}"
            log.info("Reading %s of %s with Spark: %s, %s.", source.kind, subject, _counted(total, "row"), why)
            return self._with_spark(source, total)
        log.info(
            "Reading %s of %s in this task: %s, under %s.",
            source.kind,
            subject,
            _counted(total, "row"),
            f"{spark_min_rows:,}",
        )
        self.progress.phase = f"reading {source.kind}"
        rows = read_in_task(cursor, plan, source.kind, source.query, source.timestamp_column, self.window, types)
        send = partial(deliver_in_task, rows.fragments, self.client, plan, self.batch_size, self.stop)
        return _Checked(source.kind, rows.rows, rows.rejected, rows.examples, send)

    def _with_spark(self, source: Source, total: int | None) -> _Checked:
        spark = self.spark()
        read = read_with_spark(
            spark,
            self.plan,
            self.window,
            self.whole_days,
            self.redshift.jdbc_options,
            source,
            total,
            self.num_partitions,
        )
        self.progress.phase = f"checking {source.kind}"
        frame, rows, rejected, examples = check_with_spark(read, self.plan, source.kind)
        return _Checked(
            source.kind,
            rows,
            rejected,
            examples,
            send=partial(deliver_with_spark, frame, self.client, self.plan, self.batch_size),
            release=partial(_unpersist, read),
        )


class _Progress:
    """Logs, at most every PROGRESS_SECONDS, what the sync is doing and how far Spark got (once it runs)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.phase = "starting"
        self.spark: SparkSession | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="aporia-sync-progress", daemon=True)
        self._tasks: tuple[int, int] | None = None

    def watch(self, spark: SparkSession) -> None:
        self.spark = spark
        if is_connect(spark):
            spark.registerProgressHandler(cast("ProgressHandler", self._on_connect_progress))

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.spark is not None and is_connect(self.spark):
            self.spark.removeProgressHandler(cast("ProgressHandler", self._on_connect_progress))

    def _on_connect_progress(
        self, stages: Iterable[Any] | None, inflight_tasks: int, operation_id: str | None, done: bool
    ) -> None:
        known = list(stages or [])
        self._tasks = (sum(s.num_completed_tasks for s in known), sum(s.num_tasks for s in known))

    def _tasks_done(self) -> tuple[int, int] | None:
        if self.spark is None or is_connect(self.spark):
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
