"""The sync run: read a window from the warehouse, check it, and deliver fragments to Aporia.

It knows nothing of Airflow, nor of Redshift: the warehouse is a `Warehouse`. The plan's layout (`layout`) says
what each source (predictions, actuals) needs; each source's timestamp column is checked and its window counted
over the warehouse's connection first. A window is read, judged and sent by the task itself (`in_task`), unless
`spark_min_rows` (or what only Spark reads) sends it to Spark, with the DataFrame API only, so it runs unchanged on
local[*], a cluster and Spark Connect: Spark reads partitions over JDBC (the window predicate pushed down), its
executors judge the rows with the same columnar rules (`columnar`, through `mapInArrow`) and post batches to Aporia
themselves; only counts, a few examples and the rejected rows come back.

Either way each source is read once and every row is judged before anything is sent, so
`on_invalid_rows="fail"` sends nothing when any row is invalid. With Spark the read is kept on its disk
between the check and the send, and large windows are read in parts, each with credentials fetched just
before it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import SyncInputError, SyncStopped
from aporia_provider.extraction.expectations import expect_volume, judge_window
from aporia_provider.extraction.failures import failures_of
from aporia_provider.extraction.in_spark import (
    TASK_READ_OPTIONS,
    SparkReads,
    SparkVerdicts,
    read_unloaded_with_spark,
    read_with_spark,
    union,
)
from aporia_provider.extraction.in_task import (
    FETCH_ROWS,
    Found,
    TaskRows,
    deliver_in_task,
    found_in,
    judge_in_task,
    read_in_task,
    select_columns,
)
from aporia_provider.extraction.layout import RejectedRows, SourceLayout, layout_of
from aporia_provider.extraction.mapping import map_columns, warn_of_drift
from aporia_provider.extraction.options import SyncOptions
from aporia_provider.extraction.plan import SyncPlan
from aporia_provider.extraction.probe import Probe, TaskProbe
from aporia_provider.extraction.progress import Progress, SparkStarter, counted
from aporia_provider.extraction.rulebook import ColumnType
from aporia_provider.extraction.spark import StartSpark
from aporia_provider.extraction.sql import Window, derived
from aporia_provider.extraction.unload import Unload, UnloadedFiles, read_files
from aporia_provider.extraction.warehouse import Warehouse
from aporia_provider.sync.outcome import SyncSummary

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
# Rows sampled to estimate a window's size as a cursor's result.
CURSOR_SAMPLE_ROWS = 200


@dataclass
class _Checked:
    """A source's window, read and judged: what it holds, and how to send what passed."""

    kind: str
    rows: int
    rejected: int
    reread: int  # rows that pass, read only for the lookback
    examples: list[str]
    send: Callable[[], LogResult]
    release: Callable[[], None] = lambda: None

    @classmethod
    def of(
        cls, kind: str, found: Found, send: Callable[[], LogResult], release: Callable[[], None] = lambda: None
    ) -> _Checked:
        return cls(kind, found.rows, found.rejected, found.reread, found.examples, send, release)


def run_sync(
    plan: SyncPlan,
    window: Window,
    warehouse: Warehouse,
    spark: StartSpark,
    client: AporiaClient,
    options: SyncOptions,
    tag: str | None = None,
    stop: threading.Event | None = None,
    spark_where: str = "Spark",
    rejected_rows: RejectedRows | None = None,
    summary: SyncSummary | None = None,
    unload: Unload | None = None,
) -> SyncSummary:
    """Sync predictions whose timestamp, and actuals whose arrival, fall in the window (widened by the lookback).

    A source's window of fewer than `options.spark_min_rows` rows is read and sent by this process; a larger one
    (or any, with select_expr) by Spark, whose session `spark` starts on first use. The Spark jobs carry `tag`
    (when given), so another thread can stop them with `extraction.spark.cancel(spark, tag)`; `stop` ends the
    task's own delivery before its next batch. `spark_where` names where Spark runs, for the progress lines. When
    given, `rejected_rows` gets every rejected row, and `summary` the counts as the sync goes (kept if it raises).
    """
    started = time.monotonic()
    read_window = window.widened(options.lookback)
    summary = summary if summary is not None else SyncSummary()
    summary.window_start, summary.window_end = window.start.isoformat(), window.end.isoformat()
    summary.read_start, summary.dry_run = read_window.start.isoformat(), options.dry_run
    subject = f"{plan.model_id} {plan.model_version}"
    layouts = layout_of(plan, warehouse.identifier)
    progress = Progress(subject, spark_where)
    checked: list[_Checked] = []
    with ExitStack() as stack:
        stack.enter_context(progress)
        stack.callback(_release, checked)
        reader = _Reader(
            plan=plan,
            options=options,
            window=read_window,
            window_start=window.start,
            whole_days=window.whole_days(),
            warehouse=warehouse,
            spark=SparkStarter(stack, progress, spark, spark_where, tag),
            client=client,
            progress=progress,
            stack=stack,
            stop=stop,
            rejected_rows=rejected_rows,
            unload=unload,
        )
        reading = f"reading the window from {warehouse.name}"
        if plan.prefixes:  # the fields the prefixes map, and the drift from the schema, before any row is read
            with failures_of(warehouse, reading, subject, "query"):
                mapped = map_columns(plan, reader.columns(plan.query))
            warn_of_drift(subject, [mapped])
            plan = reader.plan = mapped.plan
            layouts = layout_of(plan, warehouse.identifier)
        for layout in layouts:
            with failures_of(warehouse, reading, subject, layout.source.query_argument):
                read = reader.read(layout)
            checked.append(read)
            if unload is not None and reader.unload_seconds is not None:  # where a failed try's files are kept
                summary.unloaded_to, summary.unload_seconds = unload.prefix, round(reader.unload_seconds, 3)
            _count_in_window(summary, read)
            log.info(
                "Checked %s of %s: %s, %d rejected.", layout.kind, subject, counted(read.rows, "row"), read.rejected
            )
        judge_window(summary, plan, options, checked)
        expect_volume(summary, subject, options)
        if not options.dry_run:
            send(checked, summary, subject, warehouse, stop, progress)
        if unload is not None and reader.unload_seconds is not None:
            # Kept after a failure, for its diagnosis; a retry unloads to a prefix of its own.
            unload.remove()
            log.info("Deleted the files unloaded to %s.", unload.prefix)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def send(
    checked: list[_Checked],
    summary: SyncSummary,
    subject: str,
    warehouse: Warehouse,
    stop: threading.Event | None,
    progress: Progress | None = None,
) -> None:
    """Send each source that was read and judged, and count what was delivered; `progress`, when given, says
    which source is being sent."""
    sent = LogResult()
    for rows in checked:
        if stop is not None and stop.is_set():
            raise SyncStopped(f"before sending the {rows.kind}", subject)
        if progress is not None:
            progress.phase = f"sending {rows.kind}"
        with failures_of(warehouse, "delivering the window to Aporia", subject, "query"):
            delivered = rows.send()
        log.info(
            "Sent %s of %s in %s.",
            counted(delivered.fragments, rows.kind[:-1]),
            subject,
            counted(delivered.batches, "batch"),
        )
        if rows.kind == "predictions":
            summary.fragments_sent = delivered.fragments
        else:
            summary.actuals_sent = delivered.fragments
        sent.add(delivered)
    summary.batches, summary.retries, summary.warnings = sent.batches, sent.retries, len(sent.warnings)


def _count_in_window(summary: SyncSummary, read: _Checked) -> None:
    """What of a source passes from the window itself, and what only the lookback re-read."""
    in_window = read.rows - read.rejected - read.reread
    if read.kind == "predictions":
        summary.predictions_in_window, summary.predictions_reread = in_window, read.reread
    else:
        summary.actuals_in_window, summary.actuals_reread = in_window, read.reread


def _release(checked: list[_Checked]) -> None:
    for rows in checked:
        rows.release()


def _unpersist(kept: list[DataFrame]) -> None:
    for frame in kept:
        frame.unpersist()


@dataclass
class _Reader:
    """Reads each source's window once: in this process when it is small, with Spark otherwise."""

    plan: SyncPlan
    options: SyncOptions
    window: Window  # already widened by the lookback
    window_start: datetime  # the run's: rows before it are read only for the lookback
    whole_days: bool  # the run's window (before the lookback) is whole days: what a DATE column can serve
    warehouse: Warehouse
    spark: SparkStarter
    client: AporiaClient
    progress: Progress
    stack: ExitStack
    stop: threading.Event | None
    rejected_rows: RejectedRows | None
    unload: Unload | None = None
    unload_seconds: float | None = None  # what UNLOAD took, when a source went by it
    _cursor: Any = None
    _types: dict[str, dict[str, ColumnType | None]] = field(default_factory=dict)  # by query: one probe each

    def cursor(self) -> Any:
        if self._cursor is None:
            self._cursor = self.stack.enter_context(closing(self.warehouse.connect())).cursor()
        return self._cursor

    def spark_reads(self, phase: str) -> SparkReads:
        """Spark's reads (starting Spark on first use, which the progress lines say), then `phase` begins."""
        plan = self.plan
        reads = SparkReads(self.spark(), self.warehouse.jdbc_options, plan.read_options, plan.select_expr)
        self.progress.phase = phase
        return reads

    def columns(self, query: str) -> list[str]:
        """The query's columns, learnt as `read` learns them (without reading a row)."""
        spark_only = bool(set(self.plan.read_options) - TASK_READ_OPTIONS)
        probe: Probe = (
            self.spark_reads("reading the query's columns") if spark_only else TaskProbe(self.cursor, self.warehouse)
        )
        return list(self._column_types(probe, query))

    def probe(self, layout: SourceLayout) -> tuple[Probe, dict[str, ColumnType | None], ColumnType, int]:
        """Learn the source's column types (by Spark where only Spark can say them), check its timestamp column and
        count its window: the probe that spoke, the types, the timestamp's type, the rows."""
        source = layout.source
        # JDBC options that change what is read (a session init statement, a custom schema): only Spark applies
        # them, so only Spark can say what the query returns.
        spark_only = bool(set(self.plan.read_options) - TASK_READ_OPTIONS)
        counting = f"counting {layout.kind}"
        self.progress.phase = counting
        probe: Probe = self.spark_reads(counting) if spark_only else TaskProbe(self.cursor, self.warehouse)
        types = self._column_types(probe, source.query)
        layout.require_timestamp(list(types))
        if types[source.timestamp_column] is None:  # a type only Spark reads: Spark names it, in its own words
            probe = self.spark_reads(counting)
            types = probe.column_types(source.query)
        timestamp_type = types[source.timestamp_column]
        assert timestamp_type is not None
        problem = layout.timestamp_problem(timestamp_type, self.whole_days)
        if problem:
            raise SyncInputError(problem)
        return probe, types, timestamp_type, probe.count(source.query, source.timestamp_column, self.window)

    def read(self, layout: SourceLayout) -> _Checked:
        """Check the source's timestamp column, count its window, and read it the way its size and types ask."""
        options = self.options
        probe, types, timestamp_type, total = self.probe(layout)
        dates = timestamp_type.category == "date"
        if self.plan.select_expr or isinstance(probe, SparkReads):
            # Spark SQL expressions, JDBC options and column types only Spark applies or reads.
            return self._with_spark(layout, total, dates)
        columns, select = select_columns(layout, types, self.window)
        unread = [column for column in columns if types[column] is None]
        subject, threshold, unload = layout.subject, options.spark_min_rows, self.unload
        if not unread and unload is not None and total >= unload.min_rows:
            why = f"at least unload_min_rows={unload.min_rows:,}"
            spark_wanted = threshold is not None and total >= threshold
            return self._by_unload(layout, unload, select, columns, types, (total, why), spark_wanted)
        why_spark = options.spark_reason(unread, total)
        if why_spark:
            log.info("Reading %s of %s with Spark: %s, %s.", layout.kind, subject, counted(total, "row"), why_spark)
            return self._with_spark(layout, total, dates)
        overflow = self._cursor_overflow(select, total)
        if overflow and unload is not None:
            return self._by_unload(layout, unload, select, columns, types, (total, overflow), False)
        if overflow:
            raise SyncInputError(
                f"The window of {layout.kind} of {subject} would be {overflow}: set unload_s3_prefix and "
                "unload_iam_role to unload it to S3 instead, or sync shorter windows."
            )
        why = f"under {threshold:,}" if threshold is not None else "as every window (spark_min_rows is not set)"
        log.info("Reading %s of %s in this task: %s, %s.", layout.kind, subject, counted(total, "row"), why)
        self.progress.phase = f"reading and checking {layout.kind}"
        stream = self.warehouse.stream(self.cursor(), select, FETCH_ROWS)
        return self._in_task(
            layout, read_in_task(stream, layout, columns, types, self.window_start, self.rejected_rows)
        )

    def _cursor_overflow(self, select: str, total: int) -> str | None:
        """How far the window's result would pass the warehouse's cursor limit (its rows times the mean size of a
        sample of them), or None when it fits."""
        limit = self.warehouse.cursor_limit_bytes
        if not limit or total <= FETCH_ROWS:
            return None
        cursor = self.cursor()
        cursor.execute(f"SELECT * FROM {derived(select)} LIMIT {CURSOR_SAMPLE_ROWS}")
        sample = cursor.fetchall()
        row_bytes = sum(len(str(value)) for row in sample for value in row if value is not None) / max(1, len(sample))
        if row_bytes * total <= limit:
            return None
        name = self.warehouse.name
        return (
            f"about {row_bytes * total / 1e6:,.0f} MB as a cursor's result, over the {limit / 1e6:,.0f} MB {name}'s "
            "leader node holds for cursors (cursor_result_limit_mb)"
        )

    def _in_task(self, layout: SourceLayout, rows: TaskRows) -> _Checked:
        self.stack.callback(rows.release)
        model = (self.plan.model_id, self.plan.model_version)
        send = partial(deliver_in_task, rows, self.client, layout.subject, model, self.options.batch_size, self.stop)
        return _Checked.of(layout.kind, rows, send)

    def _by_unload(
        self,
        layout: SourceLayout,
        unload: Unload,
        select: str,
        columns: list[str],
        types: dict[str, ColumnType | None],
        size: tuple[int, str],
        spark_wanted: bool,
    ) -> _Checked:
        """Unload the window (`size`: its rows, and why they go this way) to S3, written by Redshift's compute nodes,
        and read the files, in Spark's executors when the window is large enough for Spark, else in this task."""
        total, why = size
        log.info(
            "Unloading %s of %s to %s, read by %s: %s, %s.",
            layout.kind,
            layout.subject,
            unload.location(layout.kind),
            "Spark" if spark_wanted else "this task",
            counted(total, "row"),
            why,
        )
        self.progress.phase = f"unloading {layout.kind}"
        if spark_wanted and self.spark.begin():
            log.info("Starting Spark on %s while Redshift unloads.", self.spark.where)
        started = time.monotonic()
        self.cursor().execute(unload.statement(select, layout.kind))
        took = time.monotonic() - started
        self.unload_seconds, paths = (self.unload_seconds or 0.0) + took, unload.files(layout.kind)
        log.info("Unloaded %s of %s in %.1f s: %s.", layout.kind, layout.subject, took, counted(len(paths), "file"))
        if spark_wanted:
            spark = self.spark_reads(f"reading and checking {layout.kind} with Spark").spark
            files = UnloadedFiles(unload.filesystem, paths, layout, columns, types, self.window_start)
            return self._checked_by_spark(layout, [read_unloaded_with_spark(spark, files)])
        self.progress.phase = f"reading and checking {layout.kind}"
        batches = read_files(unload.filesystem, paths, columns, types)
        return self._in_task(layout, judge_in_task(batches, layout, types, self.window_start, self.rejected_rows))

    def _column_types(self, probe: Probe, query: str) -> dict[str, ColumnType | None]:
        if isinstance(probe, SparkReads):
            return probe.column_types(query)
        if query not in self._types:
            self._types[query] = probe.column_types(query)
        return self._types[query]

    def _with_spark(self, layout: SourceLayout, total: int, dates: bool) -> _Checked:
        # Spark reads lazily: the check job is what reads the window.
        reads = self.spark_reads(f"reading and checking {layout.kind} with Spark")
        read = read_with_spark(reads, layout, self.window, self.window_start, total, dates, self.options.num_partitions)
        return self._checked_by_spark(layout, read)

    def _checked_by_spark(self, layout: SourceLayout, kept: list[DataFrame]) -> _Checked:
        self.stack.callback(_unpersist, kept)
        verdicts = SparkVerdicts(union(kept))
        found = found_in(layout, verdicts, self.rejected_rows)
        model = (self.plan.model_id, self.plan.model_version)
        return _Checked.of(
            layout.kind, found, partial(verdicts.send, found.repeated, self.client, model, self.options.batch_size)
        )
