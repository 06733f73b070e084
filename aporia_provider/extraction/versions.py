"""Model versions from one table: the window read once, each row routed to the version its column names.

``model_version_column`` names the column, `Routing.versions` the versions the sync serves (each with its own plan:
its schema from Aporia). Each source's window (predictions, then actuals) is counted and read once, by the task or
by Spark as for a sync of one version (`run`); each Arrow batch is judged by `columnar.judge_routed`, in the task or
in Spark's executors: every row by the layout of the version it names. Each version's verdicts then go their own
way, as a sync of its own would (its spool, or its part of Spark's kept read): decided, counted and sent, with its
own summary. A row naming a version the sync does not serve is an invalid row of the sync
(``on_unknown_version="reject"``: counted, named, kept) or is left out and counted (``"ignore"``). Actuals follow
the version their row names, from the same query or actuals_query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from aporia_provider.client import AporiaClient
from aporia_provider.exceptions import InvalidRowsError
from aporia_provider.extraction.columnar import arrow_batch, judge_routed
from aporia_provider.extraction.expectations import expect_volume, judge_window
from aporia_provider.extraction.failures import failures_of
from aporia_provider.extraction.in_spark import (
    SparkReads,
    SparkVerdicts,
    project_routed,
    read_with_spark,
    union,
    verdicts_here,
)
from aporia_provider.extraction.in_task import FETCH_ROWS, Spool, _judge_sized, _verdicts, deliver_in_task, found_in
from aporia_provider.extraction.layout import MAX_EXAMPLES, RejectedRows, SourceLayout, layout_of, require_columns
from aporia_provider.extraction.mapping import map_columns, warn_of_drift
from aporia_provider.extraction.options import SyncOptions
from aporia_provider.extraction.plan import Routing, SyncPlan
from aporia_provider.extraction.progress import Progress, SparkStarter, counted
from aporia_provider.extraction.run import _Checked, _count_in_window, _Reader, _unpersist, send
from aporia_provider.extraction.sql import Window, quoted, windowed
from aporia_provider.extraction.warehouse import Warehouse
from aporia_provider.sync.outcome import SyncSummary

if TYPE_CHECKING:
    from aporia_provider.extraction.spark import StartSpark

log = logging.getLogger(__name__)


@dataclass
class OtherVersions:
    """The rows of the window that name a version this sync does not serve, as `judge_routed` judged them."""

    rows: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, layout: SourceLayout, verdicts: list[dict[str, Any]], keep: RejectedRows | None) -> None:
        for row in verdicts:
            self.rows += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(layout.rejected_example(row["id"], row["problem"]))
            if keep is not None:
                keep(layout.rejected_row(row["id"], row["problem"], row["column"], row["value"]))


def run_versions(
    plans: Mapping[str, SyncPlan],
    routing: Routing,
    window: Window,
    warehouse: Warehouse,
    spark: StartSpark,
    client: AporiaClient,
    options: SyncOptions,
    summaries: Mapping[str, SyncSummary],
    tag: str | None = None,
    stop: threading.Event | None = None,
    spark_where: str = "Spark",
    rejected_rows: Mapping[str, RejectedRows] | None = None,
    other_rejected: RejectedRows | None = None,
) -> Mapping[str, SyncSummary]:
    """Sync the window of every version in `routing` (its plan in `plans`, its summary in `summaries`, filled in as
    the sync goes) with one read of each source; rejected rows go to their version's `rejected_rows`, those naming
    another version to `other_rejected`. Every version is judged before anything is sent. `spark`, `tag`, `stop` and
    `spark_where` as for `run.run_sync`."""
    started = time.monotonic()
    versions = routing.versions
    read_window = window.widened(options.lookback)
    for summary in summaries.values():
        summary.window_start, summary.window_end = window.start.isoformat(), window.end.isoformat()
        summary.read_start, summary.dry_run = read_window.start.isoformat(), options.dry_run
    first = plans[versions[0]]
    subject = f"{first.model_id} {', '.join(versions)}"
    warehouse.identifier(routing.column, "model_version_column")
    reading = f"reading the window from {warehouse.name}"
    other = OtherVersions()
    checked: dict[str, list[_Checked]] = {version: [] for version in versions}
    with ExitStack() as stack:
        progress = stack.enter_context(Progress(subject, spark_where))
        reader = _Reader(
            plan=first,
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
            rejected_rows=None,
        )
        if first.prefixes:  # the fields the prefixes map, and the drift from the schemas, before any row is read
            with failures_of(warehouse, reading, subject, "query"):
                present = reader.columns(first.query)
            mapped = [map_columns(plans[version], present) for version in versions]
            warn_of_drift(subject, mapped)
            plans = {version: m.plan for version, m in zip(versions, mapped, strict=True)}
        layouts = {version: layout_of(plans[version], warehouse.identifier) for version in versions}
        for index, layout in enumerate(layouts[versions[0]]):
            with failures_of(warehouse, reading, subject, layout.source.query_argument):
                reads = _read_routed(
                    reader,
                    subject,
                    routing,
                    [layouts[version][index] for version in versions],
                    rejected_rows or {},
                    other,
                    other_rejected if routing.on_unknown == "reject" else None,
                )
            for version, read in zip(versions, reads, strict=True):
                stack.callback(read.release)
                checked[version].append(read)
                _count_in_window(summaries[version], read)
                model = f"{first.model_id} {version}"
                log.info(
                    "Checked %s of %s: %s, %d rejected.", read.kind, model, counted(read.rows, "row"), read.rejected
                )
        _decide_other_versions(subject, routing, options, other, sum(r.rows for c in checked.values() for r in c))
        for version in versions:
            summaries[version].other_version_rows = other.rows
            judge_window(summaries[version], plans[version], options, checked[version])
            expect_volume(summaries[version], f"{first.model_id} {version}", options)
        if not options.dry_run:
            for version in versions:
                progress.phase = f"sending {version}"
                send(checked[version], summaries[version], f"{first.model_id} {version}", warehouse, stop)
    for summary in summaries.values():
        summary.seconds = round(time.monotonic() - started, 3)  # the versions' shared read and their sends
    return summaries


def _read_routed(
    reader: _Reader,
    subject: str,
    routing: Routing,
    layouts: list[SourceLayout],
    rejected_rows: Mapping[str, RejectedRows],
    other: OtherVersions,
    keep_other: RejectedRows | None,
) -> list[_Checked]:
    """One source's window, counted and read once, the way its size and types ask (as `run._Reader.read` decides
    for one version); each row judged by the layout of the version it names."""
    first, options = layouts[0], reader.options
    source = first.source
    probe, types, timestamp_type, total = reader.probe(first)
    rows, versions = counted(total, "row"), len(layouts)
    if reader.plan.select_expr or isinstance(probe, SparkReads):
        log.info("Reading %s of %s with Spark: %s, one read for the %d versions.", first.kind, subject, rows, versions)
        return _with_spark(
            reader, routing, layouts, total, timestamp_type.category == "date", rejected_rows, other, keep_other
        )
    for layout in layouts:
        layout.require(list(types))
    require_columns(list(types), subject, {"model_version_column": [routing.column]})
    columns = list(dict.fromkeys([routing.column, *(c for layout in layouts for c in layout.columns)]))
    why = options.spark_reason([column for column in columns if types[column] is None], total)
    if why:
        log.info(
            "Reading %s of %s with Spark: %s, %s, one read for the %d versions.",
            first.kind,
            subject,
            rows,
            why,
            versions,
        )
        return _with_spark(
            reader, routing, layouts, total, timestamp_type.category == "date", rejected_rows, other, keep_other
        )
    log.info("Reading %s of %s in this task: %s, one read for the %d versions.", first.kind, subject, rows, versions)
    reader.progress.phase = f"reading and checking {first.kind}"
    for layout in layouts:
        layout.fit(types)
    selected = ", ".join(quoted(column) for column in columns)
    select = f"SELECT {selected} FROM {windowed(source.query, source.timestamp_column, reader.window)}"
    spools = [Spool() for _ in layouts]
    try:
        for chunk in _judge_sized(reader.warehouse.stream(reader.cursor(), select, FETCH_ROWS)):
            judged = judge_routed(arrow_batch(chunk, columns, types), layouts, routing, reader.window_start)
            for spool, part in zip(spools, judged, strict=False):  # one per version, then the others'
                spool.add(part.drop_columns(["version"]))
            if len(judged) > len(layouts):
                other.add(first, judged[-1].to_pylist(), keep_other)
        verdicts = [
            _verdicts(layout, spool, rejected_rows.get(version))
            for layout, spool, version in zip(layouts, spools, routing.versions, strict=True)
        ]
    except BaseException:
        for spool in spools:
            spool.close()
        raise
    model_id = reader.plan.model_id
    return [
        _Checked.of(
            layout.kind,
            task,
            partial(
                deliver_in_task,
                task,
                reader.client,
                f"{model_id} {version}",
                (model_id, version),
                options.batch_size,
                reader.stop,
            ),
            task.release,
        )
        for layout, task, version in zip(layouts, verdicts, routing.versions, strict=True)
    ]


def _with_spark(
    reader: _Reader,
    routing: Routing,
    layouts: list[SourceLayout],
    total: int,
    dates: bool,
    rejected_rows: Mapping[str, RejectedRows],
    other: OtherVersions,
    keep_other: RejectedRows | None,
) -> list[_Checked]:
    """Spark reads the window once (kept on its disk), its executors judge each row by its version's layout; each
    version is checked and sent from its part of the kept read."""
    from pyspark.sql import functions as F

    first = layouts[0]
    reads = reader.spark_reads(f"reading and checking {first.kind} with Spark")
    projection = partial(project_routed, layouts=layouts, routing=routing, window_start=reader.window_start)
    parts = read_with_spark(
        reads, first, reader.window, reader.window_start, total, dates, reader.options.num_partitions, projection
    )
    reader.stack.callback(_unpersist, parts)
    kept = union(parts)
    checked = []
    model_id = reader.plan.model_id
    for version, layout in zip(routing.versions, layouts, strict=True):
        verdicts = SparkVerdicts(kept.where(F.col("version") == version))
        found = found_in(layout, verdicts, rejected_rows.get(version))
        send = partial(verdicts.send, found.repeated, reader.client, (model_id, version), reader.options.batch_size)
        checked.append(_Checked.of(layout.kind, found, send))
    others = kept.where(F.col("version").isNull())
    total_others = others.agg(F.coalesce(F.sum("rows"), F.lit(0))).first()
    rows, seen = (total_others[0] if total_others else 0), 0
    if rows:  # every one to keep_other, when given; else the examples from the first of them
        for verdicts in verdicts_here(others):
            named = verdicts.select(["id", "problem", "column", "value"]).to_pylist()
            other.add(first, named, keep_other)
            seen += len(named)
            if keep_other is None and len(other.examples) >= MAX_EXAMPLES:
                break
    other.rows += rows - seen
    return checked


def _decide_other_versions(
    subject: str, routing: Routing, options: SyncOptions, other: OtherVersions, rows: int
) -> None:
    """Rows naming another version: left out and counted (ignore), or invalid rows of the sync, which the invalid-row
    policy decides on before anything is sent (reject)."""
    if not other.rows:
        return
    found = "1 row" if other.rows == 1 else f"{other.rows:,} rows"
    message = (
        f"{found} of the window of {subject} name a version this sync does not serve (e.g. {'; '.join(other.examples)})"
    )
    if routing.on_unknown == "ignore":
        log.info("%s; left out, as on_unknown_version='ignore' asks.", message)
        return
    allowed = options.invalid_rows_allowed(rows + other.rows)
    if allowed is not None and other.rows > allowed:
        raise InvalidRowsError(
            f"{message}; nothing was sent: add the version to model_versions, or pass on_unknown_version='ignore'."
        )
    if allowed is None:
        log.warning("%s; skipping them as on_invalid_rows='skip' asks.", message)
    else:
        log.warning("%s; left out, within max_invalid_rows=%r (%s).", message, options.max_invalid_rows, f"{allowed:,}")
