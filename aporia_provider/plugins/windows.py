"""The sync view's data: one row per synced window, grouped by model version, with the gaps between them.

A window synced more than once (a retry, a re-run, a backfill, a manual run of the same bounds) is one row: the
latest successful sync's, which is what Aporia holds (delivery is idempotent by id), with the other syncs listed
on it, earlier tries of the same task instance included. Windows of other bounds that overlap (a manual run over
``[03:30, 04:30)`` beside hourly windows) make one timeline in `timeline.py`, where each row is counted once. A
row's counts are those of the summary (`aporia_provider.sync.outcome`), by the same names: the rows whose timestamp
(for actuals, arrival) lies in the window; the rows only the lookback re-read, which the previous window's sync
delivered, are shown apart.

Pure functions over plain records (no database, no Airflow imports), so they are tested on their own; the
plugin (``sync_view.py``) reads the records from Airflow's metadata and renders what these build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

UNKNOWN = "(unknown)"
SUCCESS = "success"
FAILED_STATES = frozenset({"failed", "upstream_failed"})
# What an earlier try of a task instance ended as when it failed: retried, or failed for good (then cleared).
FAILED_TRY_STATES = frozenset({"failed", "up_for_retry"})
NEVER = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class EarlierTry:
    """A try of a task instance before its latest one (Airflow's task instance history): a failed try that was
    retried, or a whole sync that a clear, a re-run or a backfill replaced. Its XComs went with it."""

    try_number: int
    state: str | None
    start_date: datetime | None = None
    end_date: datetime | None = None


@dataclass(frozen=True)
class SyncRecord:
    """One task instance of a sync (an AporiaSyncOperator or a subclass), as Airflow's metadata holds it.

    ``summary`` is the task's XCom return value (None when it failed before returning one); ``failure`` the XCom
    its latest failed try pushed (FAILURE_XCOM_KEY: the sentence it failed with and its counts so far);
    ``rendered`` its rendered template fields, when Airflow still keeps them; ``declared`` the operator's arguments
    as the DAG declares them (possibly unrendered templates), the last resort for naming the model version;
    ``earlier_tries`` its tries before the latest.
    """

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    state: str | None = None
    try_number: int = 0
    start_date: datetime | None = None
    end_date: datetime | None = None
    duration: float | None = None
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    summary: Mapping[str, Any] | None = None
    failure: Mapping[str, Any] | None = None
    rendered: Mapping[str, Any] | None = None
    declared: Mapping[str, Any] | None = None
    earlier_tries: tuple[EarlierTry, ...] = ()


@dataclass(frozen=True)
class WindowRow:
    """One sync of one window, as the view shows it; `other_syncs` are the window's other syncs, if any; `overlaps`
    the windows of other bounds on the timeline it overlaps (then they count its rows, and it is not counted)."""

    start: datetime | None
    end: datetime | None
    state: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    # The figures of the summary, by its names (aporia_provider.sync.outcome.SyncSummary).
    rows_read: int | None
    fragments_sent: int | None
    predictions_in_window: int | None  # delivered (validate only: that would be)
    predictions_reread: int | None
    actuals_read: int | None
    actuals_sent: int | None
    actuals_in_window: int | None
    actuals_reread: int | None
    rows_rejected: int | None
    rejected_examples: tuple[str, ...]
    failure: str | None  # the sentence the sync failed with
    min_rows: int | None
    low_volume: bool
    task_retries: int  # the task instance's failed tries before this one
    retries: int | None
    warnings: int | None
    logged_warnings: tuple[str, ...]
    seconds: float | None
    ended_at: datetime | None  # when the task instance's latest try ended (None: not yet)
    delivered_at: datetime | None
    lag: timedelta | None
    dry_run: bool
    # Whether the window is its run's data interval (scheduled, backfilled, or a manual run with a logical date),
    # not bounds given to the task: on the timeline such windows come first.
    is_run_interval: bool = True
    other_syncs: tuple[WindowRow, ...] = ()
    overlaps: tuple[tuple[datetime, datetime], ...] = ()

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCESS

    @property
    def delivered(self) -> bool:
        """Whether what the row counts reached Aporia."""
        return self.succeeded and not self.dry_run

    @property
    def overlapping(self) -> bool:
        return bool(self.overlaps)

    @property
    def warnings_shown(self) -> int | None:
        """Aporia's delivery warnings and the sync's own logged ones."""
        if self.warnings is None and not self.logged_warnings:
            return None
        return (self.warnings or 0) + len(self.logged_warnings)

    @property
    def reread(self) -> int | None:
        """Rows the lookback read again and delivered (the previous window's sync had delivered them)."""
        if self.predictions_reread is None and self.actuals_reread is None:
            return None
        return (self.predictions_reread or 0) + (self.actuals_reread or 0)


@dataclass(frozen=True)
class Gap:
    """Time between two consecutive windows that no sync covered."""

    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        return self.end - self.start


@dataclass
class VersionView:
    """Everything the view shows for one (model id, model version)."""

    model_id: str
    model_version: str
    windows: list[WindowRow] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    # Windows overlapping others on the timeline: shown, marked, and not counted (the windows they overlap are).
    overlapping: list[WindowRow] = field(default_factory=list)
    # Task instances whose window is unknown (e.g. a manual run without a data interval that failed).
    unplaced: list[WindowRow] = field(default_factory=list)

    @property
    def failed(self) -> list[WindowRow]:
        return [w for w in self.windows + self.overlapping + self.unplaced if w.failed]

    @property
    def succeeded(self) -> list[WindowRow]:
        return [w for w in self.windows if w.succeeded]

    def total(self, name: str) -> int:
        """A count summed over the timeline's windows, each once (not the overlapping ones): what reached Aporia, or
        for rows_rejected and warnings what was rejected and warned of (a failed window's too)."""
        every = name in ("rows_rejected", "warnings_shown")
        counted = self.windows if every else [w for w in self.windows if w.delivered]
        return sum(getattr(w, name) or 0 for w in counted)

    @property
    def max_lag(self) -> timedelta | None:
        lags = [w.lag for w in self.windows if w.lag is not None]
        return max(lags) if lags else None

    def timeline(self) -> list[WindowRow | Gap]:
        """Windows (overlapping ones beside those they overlap) and gaps in time order, as the table lists them."""
        items: list[WindowRow | Gap] = [*self.windows, *self.overlapping, *self.gaps]
        return sorted(items, key=lambda item: (_start(item), isinstance(item, WindowRow), _overlapping(item)))


def _start(item: WindowRow | Gap) -> datetime:
    assert item.start is not None  # placed windows and gaps always have a start
    return item.start


def _overlapping(item: WindowRow | Gap) -> bool:
    return isinstance(item, WindowRow) and item.overlapping


def parse_time(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from a datetime or an ISO-8601 string; None if there is none."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _int(summary: Mapping[str, Any] | None, key: str) -> int | None:
    value = summary.get(key) if summary else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def model_version_of(record: SyncRecord) -> tuple[str, str]:
    """Which model version the record synced: from its summary (or failure), else its rendered fields, else the
    DAG."""
    for source in (record.summary, record.failure, record.rendered, record.declared):
        if source and _text(source.get("model_id")) and _text(source.get("model_version")):
            return str(source["model_id"]), str(source["model_version"])
    return UNKNOWN, UNKNOWN


def window_of(record: SyncRecord) -> tuple[datetime | None, datetime | None]:
    """The window the record synced: the summary's (or failure's), else explicit rendered bounds, else the run's
    interval."""
    for source in (record.summary, record.failure, record.rendered):
        if source:
            start, end = parse_time(source.get("window_start")), parse_time(source.get("window_end"))
            if start and end:
                return start, end
    start, end = parse_time(record.interval_start), parse_time(record.interval_end)
    if start and end and end > start:
        return start, end
    return None, None


def _in_window(summary: Mapping[str, Any] | None, in_window: str, sent: str) -> int | None:
    """An in-window count; a summary from before they were recorded has only its sent count (the lookback's
    included)."""
    if summary is not None and in_window not in summary:
        return _int(summary, sent)
    return _int(summary, in_window)


def window_row(record: SyncRecord) -> WindowRow:
    """The record's latest try as a row; its earlier tries are `earlier_rows`."""
    state = record.state or "none"
    failure = record.failure if isinstance(record.failure, Mapping) and state != SUCCESS else None
    returned = record.summary if isinstance(record.summary, Mapping) else None
    # A sync that did not return a summary says how far it got in its failure's; of what it read, only what it
    # had sent when it failed (if anything) reached Aporia.
    summary = returned or failure
    in_window = returned is not None
    start, end = window_of(record)
    ended_at = parse_time(record.end_date)
    delivered_at = ended_at if state == SUCCESS else None
    seconds = summary.get("seconds") if summary else None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        seconds = record.duration
    return WindowRow(
        start=start,
        end=end,
        state=state,
        dag_id=record.dag_id,
        task_id=record.task_id,
        run_id=record.run_id,
        map_index=record.map_index,
        try_number=record.try_number,
        rows_read=_int(summary, "rows_read"),
        fragments_sent=_int(summary, "fragments_sent"),
        predictions_in_window=_in_window(returned, "predictions_in_window", "fragments_sent")
        if in_window
        else _int(summary, "fragments_sent"),
        predictions_reread=_int(returned, "predictions_reread"),
        actuals_read=_int(summary, "actuals_read"),
        actuals_sent=_int(summary, "actuals_sent"),
        actuals_in_window=_in_window(returned, "actuals_in_window", "actuals_sent")
        if in_window
        else _int(summary, "actuals_sent"),
        actuals_reread=_int(returned, "actuals_reread"),
        rows_rejected=_int(summary, "rows_rejected"),
        rejected_examples=_texts(summary.get("rejected_examples") if summary else None),
        failure=_text(failure.get("error")) if failure else None,
        min_rows=_int(summary, "min_rows"),
        low_volume=bool(summary.get("low_volume")) if summary else False,
        task_retries=sum(1 for earlier in record.earlier_tries if earlier.state in FAILED_TRY_STATES),
        retries=_int(summary, "retries"),
        warnings=_int(summary, "warnings"),
        logged_warnings=_texts(summary.get("logged_warnings") if summary else None),
        seconds=float(seconds) if seconds is not None else None,
        ended_at=ended_at,
        delivered_at=delivered_at,
        lag=delivered_at - end if delivered_at and end else None,
        dry_run=bool(summary.get("dry_run")) if summary else False,
        is_run_interval=(start, end) == (parse_time(record.interval_start), parse_time(record.interval_end)),
    )


def earlier_rows(record: SyncRecord, latest: WindowRow) -> list[WindowRow]:
    """The record's earlier tries as rows of the same window: what they counted went with their XComs."""
    rows = []
    for earlier in record.earlier_tries:
        ended_at = parse_time(earlier.end_date)
        rows.append(
            replace(
                latest,
                state=earlier.state or "none",
                try_number=earlier.try_number,
                rows_read=None,
                fragments_sent=None,
                predictions_in_window=None,
                predictions_reread=None,
                actuals_read=None,
                actuals_sent=None,
                actuals_in_window=None,
                actuals_reread=None,
                rows_rejected=None,
                min_rows=None,
                retries=None,
                warnings=None,
                rejected_examples=(),
                failure=None,
                low_volume=False,
                task_retries=0,
                logged_warnings=(),
                seconds=None,
                ended_at=ended_at,
                delivered_at=ended_at if earlier.state == SUCCESS else None,
                lag=None,
            )
        )
    return rows


def human_duration(value: timedelta | float | None) -> str:
    """12.3 s, 4 min 05 s, 2 h 10 min, 3 d 4 h; an em dash for nothing."""
    if value is None:
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{sign}{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} d {hours} h"


def window_label(start: datetime | None, end: datetime | None) -> str:
    """[2026-11-21 00:00, 01:00) in UTC; the end's date is shown only when it differs."""
    if not start or not end:
        return "no window"
    end_format = "%H:%M" if end.date() == start.date() or end == _midnight_after(start) else "%Y-%m-%d %H:%M"
    return f"[{start:%Y-%m-%d %H:%M}, {end.strftime(end_format)})"


def _midnight_after(moment: datetime) -> datetime:
    return (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
