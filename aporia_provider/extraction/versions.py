"""Model versions from one table: the window read once, each row routed to the version its column names.

``model_version_column`` names the column, `Routing.versions` the versions the sync serves (each with its own plan:
its schema from Aporia). Each source's window (predictions, then actuals) is read once, in this task; each Arrow
batch is split by the version column (`route`, a columnar step before the row rules) and each part judged by its
own version's layout (`columnar.judge`) into its own spool. So every version is decided, counted and sent as a sync
of its own would be, with its own summary, while the window is read and counted once. A row naming a version the
sync does not serve is an invalid row of the sync (``on_unknown_version="reject"``: counted, named, kept) or is left
out and counted (``"ignore"``). Actuals follow the version their row names, from the same query or actuals_query.

Spark does not route rows yet: a sync with a version column reads every window in the task, and refuses what only
Spark reads, in one sentence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from functools import partial, reduce
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import InvalidRowsError, SyncInputError, SyncStopped
from aporia_provider.extraction.columnar import arrow_batch, id_texts, judge
from aporia_provider.extraction.failures import failures_of
from aporia_provider.extraction.in_spark import TASK_READ_OPTIONS
from aporia_provider.extraction.in_task import (
    FETCH_ROWS,
    Spool,
    TaskRows,
    _judge_sized,
    _verdicts,
    deliver_in_task,
)
from aporia_provider.extraction.layout import MAX_EXAMPLES, RejectedRows, SourceLayout, excerpt, layout_of
from aporia_provider.extraction.mapping import map_columns, warn_of_drift
from aporia_provider.extraction.options import SyncOptions
from aporia_provider.extraction.plan import Routing, SyncPlan
from aporia_provider.extraction.rulebook import ColumnType
from aporia_provider.extraction.run import _Checked, _count_in_window, _counted, _decide, _expect_volume, _TaskProbe
from aporia_provider.extraction.sql import Window, quoted, windowed
from aporia_provider.extraction.warehouse import Warehouse
from aporia_provider.sync.outcome import SyncSummary

log = logging.getLogger(__name__)


def route(
    batch: pa.RecordBatch, column: str, versions: Sequence[str]
) -> tuple[list[pa.RecordBatch], pa.RecordBatch, pa.Array]:
    """The batch's rows of each version (in `versions` order), the rows of none of them, and those rows' version
    values as text (compared as text: a version column of integers names versions "1", "2")."""
    names = id_texts(batch.column(column))
    parts = [batch.filter(pc.fill_null(pc.equal(names, version), False)) for version in versions]
    other = pc.invert(pc.fill_null(pc.is_in(names, value_set=pa.array(list(versions), pa.string())), False))
    return parts, batch.filter(other), names.filter(other)


@dataclass
class OtherVersions:
    """The rows of the window that name a version this sync does not serve."""

    rows: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, layout: SourceLayout, routing: Routing, batch: pa.RecordBatch, names: pa.Array, keep: Any) -> None:
        ids = id_texts(batch.column(layout.id_column)).to_pylist()
        for identity, name in zip(ids, names.to_pylist(), strict=True):
            self.rows += 1
            problem = routing.problem(name)
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(layout.rejected_example(identity, problem))
            if keep is not None:
                keep(layout.rejected_row(identity, problem, routing.column, excerpt(name)))


def run_versions(
    plans: Mapping[str, SyncPlan],
    routing: Routing,
    window: Window,
    warehouse: Warehouse,
    client: AporiaClient,
    options: SyncOptions,
    summaries: Mapping[str, SyncSummary],
    stop: threading.Event | None = None,
    rejected_rows: Mapping[str, RejectedRows] | None = None,
    other_rejected: RejectedRows | None = None,
) -> Mapping[str, SyncSummary]:
    """Sync the window of every version in `routing` (its plan in `plans`, its summary in `summaries`, filled in as
    the sync goes) with one read of each source; rejected rows go to their version's `rejected_rows`, those naming
    another version to `other_rejected`. Every version is judged before anything is sent."""
    started = time.monotonic()
    versions = routing.versions
    read_window = window.widened(options.lookback)
    for summary in summaries.values():
        summary.window_start, summary.window_end = window.start.isoformat(), window.end.isoformat()
        summary.read_start, summary.dry_run = read_window.start.isoformat(), options.dry_run
    first = plans[versions[0]]
    subject = f"{first.model_id} {', '.join(versions)}"
    if set(first.read_options) - TASK_READ_OPTIONS:
        raise SyncInputError(_SPARK_ONLY.format(what=f"apply read_options {sorted(first.read_options)}"))
    warehouse.identifier(routing.column, "model_version_column")
    reading = f"reading the window from {warehouse.name}"
    other = OtherVersions()
    checked: dict[str, list[_Checked]] = {version: [] for version in versions}
    with ExitStack() as stack:
        cursor = stack.enter_context(closing(warehouse.connect())).cursor()
        probe = _TaskProbe(lambda: cursor, warehouse)
        types: dict[str, dict[str, ColumnType | None]] = {}
        with failures_of(warehouse, reading, subject, "query"):
            types[first.query] = probe.column_types(first.query)
        if first.prefixes:
            mapped = [map_columns(plans[version], list(types[first.query])) for version in versions]
            warn_of_drift(subject, mapped)
            plans = {version: m.plan for version, m in zip(versions, mapped, strict=True)}
        layouts = {version: layout_of(plans[version], warehouse.identifier) for version in versions}
        for index, layout in enumerate(layouts[versions[0]]):
            query = layout.source.query
            with failures_of(warehouse, reading, subject, layout.source.query_argument):
                if query not in types:
                    types[query] = probe.column_types(query)
                verdicts = _read_routed(
                    subject,
                    [layouts[version][index] for version in versions],
                    routing,
                    types[query],
                    read_window,
                    window,
                    warehouse,
                    cursor,
                    probe,
                    rejected_rows or {},
                    other,
                    other_rejected,
                )
            for version, rows in zip(versions, verdicts, strict=True):
                stack.callback(rows.release)
                model = (first.model_id, version)
                send = partial(deliver_in_task, rows, client, " ".join(model), model, options.batch_size, stop)
                read = _Checked(layout.kind, rows.rows, rows.rejected, rows.reread, rows.examples, send)
                checked[version].append(read)
                _count_in_window(summaries[version], read)
                log.info(
                    "Checked %s of %s %s: %s, %d rejected.",
                    layout.kind,
                    first.model_id,
                    version,
                    _counted(read.rows, "row"),
                    read.rejected,
                )
        _decide_other_versions(
            subject, routing, options, other, sum(r.rows for reads in checked.values() for r in reads)
        )
        for version in versions:
            summaries[version].other_version_rows = other.rows
            _decide(summaries[version], plans[version], options, checked[version])
            _expect_volume(summaries[version], f"{first.model_id} {version}", options)
        if not options.dry_run:
            for version in versions:
                _send(checked[version], summaries[version], f"{first.model_id} {version}", warehouse, stop)
    for summary in summaries.values():
        summary.seconds = round(time.monotonic() - started, 3)  # the versions' shared read and their sends
    return summaries


_SPARK_ONLY = (
    "A sync with model_version_column reads in the task, which cannot {what} (only Spark can); drop it, or sync "
    "each version with its own operator."
)


def _read_routed(
    subject: str,
    layouts: list[SourceLayout],
    routing: Routing,
    types: dict[str, ColumnType | None],
    read_window: Window,
    window: Window,
    warehouse: Warehouse,
    cursor: Any,
    probe: _TaskProbe,
    rejected_rows: Mapping[str, RejectedRows],
    other: OtherVersions,
    other_rejected: RejectedRows | None,
) -> list[TaskRows]:
    """One read of a source's window, each row judged by the layout of the version it names."""
    first = layouts[0]
    source = first.source
    first.require_timestamp(list(types))
    for layout in layouts:
        layout.require(list(types))
    if routing.column not in types:
        raise SyncInputError(
            f"The {source.query_argument} for {subject} has no column {routing.column!r} named by "
            f"model_version_column; it returns {', '.join(types)}; select it, or set model_version_column to the "
            "column naming each row's version."
        )
    timestamp_type = types[source.timestamp_column]
    columns = list(dict.fromkeys([routing.column, *(c for layout in layouts for c in layout.columns)]))
    unread = [column for column in columns if types[column] is None]
    if timestamp_type is None or unread:
        raise SyncInputError(
            _SPARK_ONLY.format(what=f"read the type of {', '.join(unread or [source.timestamp_column])}")
        )
    problem = first.timestamp_problem(timestamp_type, window.whole_days())
    if problem:
        raise SyncInputError(problem)
    total = probe.count(source.query, source.timestamp_column, read_window)
    log.info(
        "Reading %s of %s in this task: %s, one read for the %d versions.",
        first.kind,
        subject,
        _counted(total, "row"),
        len(layouts),
    )
    for layout in layouts:
        for slot in layout.fields:
            column_type = types[slot.column]
            assert column_type is not None
            slot.fit(column_type)
    selected = ", ".join(quoted(column) for column in columns)
    select = f"SELECT {selected} FROM {windowed(source.query, source.timestamp_column, read_window)}"
    spools = [Spool() for _ in layouts]
    versions = routing.versions
    try:
        for rows in _judge_sized(warehouse.stream(cursor, select, FETCH_ROWS)):
            batch = arrow_batch(rows, columns, types)
            if first.presence_columns:  # a row that holds no actual yet is no row, of any version
                batch = batch.filter(reduce(pc.or_, [batch.column(c).is_valid() for c in first.presence_columns]))
            parts, others, names = route(batch, routing.column, versions)
            for layout, spool, part in zip(layouts, spools, parts, strict=True):
                spool.add(judge(part, layout, window.start))
            if others.num_rows:
                keep = other_rejected if routing.on_unknown == "reject" else None
                other.add(first, routing, others, names, keep)
        verdicts = [
            _verdicts(layout, spool, rejected_rows.get(version))
            for layout, spool, version in zip(layouts, spools, versions, strict=True)
        ]
    except BaseException:
        for spool in spools:
            spool.close()
        raise
    return verdicts


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


def _send(
    checked: list[_Checked], summary: SyncSummary, subject: str, warehouse: Warehouse, stop: threading.Event | None
) -> None:
    """Send one version's sources, as a sync of its own would."""
    sent = LogResult()
    for rows in checked:
        if stop is not None and stop.is_set():
            raise SyncStopped(f"before sending the {rows.kind}", subject)
        with failures_of(warehouse, "delivering the window to Aporia", subject, "query"):
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
