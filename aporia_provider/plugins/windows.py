"""The sync view's data: one row per synced window, grouped by model version, with the gaps between them.

A window synced more than once (a retry, a re-run, a backfill, a manual run of the same bounds) is one row: the
latest successful sync's, which is what Aporia holds (delivery is idempotent by id), with the other syncs listed
on it; so totals count each window once. Its counts are the rows whose timestamp (for actuals, arrival) lies in
the window; the rows only the lookback re-read, which the previous window's sync delivered, are shown apart.

Pure functions over plain records (no database, no Airflow imports), so they are tested on their own; the
plugin (``sync_view.py``) reads the records from Airflow's metadata and renders what these build.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

UNKNOWN = "(unknown)"
SUCCESS = "success"
FAILED_STATES = frozenset({"failed", "upstream_failed"})
NEVER = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class SyncRecord:
    """One task instance of an AporiaSyncOperator, as Airflow's metadata holds it.

    ``summary`` is the task's XCom return value (None when it failed before returning one); ``failure`` the XCom
    its latest failed try pushed (FAILURE_XCOM_KEY: the sentence it failed with and its counts so far);
    ``rendered`` its rendered template fields, when Airflow still keeps them; ``declared`` the operator's arguments
    as the DAG declares them (possibly unrendered templates), the last resort for naming the model version.
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


@dataclass(frozen=True)
class WindowRow:
    """One sync of one window, as the view shows it; `other_syncs` are the window's other syncs, if any."""

    start: datetime | None
    end: datetime | None
    state: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    rows_read: int | None  # predictions read, the lookback's included
    fragments_sent: int | None  # predictions delivered, the lookback's included
    predictions_sent: int | None  # predictions in the window delivered (validate only: that would be)
    predictions_reread: int | None  # predictions before the window the lookback read again and delivered
    actuals_read: int | None
    actuals_sent: int | None  # actuals that arrived in the window, delivered
    actuals_reread: int | None
    rows_rejected: int | None
    rejected_examples: tuple[str, ...]
    failure: str | None  # the sentence the sync failed with
    min_rows: int | None  # the volume the window was expected to deliver, when one was set
    low_volume: bool  # it delivered fewer predictions than that
    task_retries: int
    delivery_retries: int | None
    warnings: int | None
    seconds: float | None
    ended_at: datetime | None  # when the task instance's latest try ended (None: not yet)
    delivered_at: datetime | None
    lag: timedelta | None
    dry_run: bool
    other_syncs: tuple[WindowRow, ...] = ()

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
    # Task instances whose window is unknown (e.g. a manual run without a data interval that failed).
    unplaced: list[WindowRow] = field(default_factory=list)

    @property
    def failed(self) -> list[WindowRow]:
        return [w for w in self.windows + self.unplaced if w.failed]

    @property
    def succeeded(self) -> list[WindowRow]:
        return [w for w in self.windows if w.succeeded]

    def total(self, name: str) -> int:
        """A count summed over the windows, each once: what reached Aporia, or for rows_rejected what was rejected
        (a failed window's too)."""
        counted = self.windows if name == "rows_rejected" else [w for w in self.windows if w.delivered]
        return sum(getattr(w, name) or 0 for w in counted)

    @property
    def max_lag(self) -> timedelta | None:
        lags = [w.lag for w in self.windows if w.lag is not None]
        return max(lags) if lags else None

    def timeline(self) -> list[WindowRow | Gap]:
        """Windows and gaps in time order, as the table lists them."""
        items: list[WindowRow | Gap] = [*self.windows, *self.gaps]
        return sorted(items, key=lambda item: (_start(item), isinstance(item, WindowRow)))


def _start(item: WindowRow | Gap) -> datetime:
    assert item.start is not None  # placed windows and gaps always have a start
    return item.start


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
    examples = summary.get("rejected_examples") if summary else None
    return WindowRow(
        start=start,
        end=end,
        state=state,
        dag_id=record.dag_id,
        task_id=record.task_id,
        run_id=record.run_id,
        map_index=record.map_index,
        rows_read=_int(summary, "rows_read"),
        fragments_sent=_int(summary, "fragments_sent"),
        predictions_sent=_in_window(returned, "predictions_in_window", "fragments_sent")
        if in_window
        else _int(summary, "fragments_sent"),
        predictions_reread=_int(returned, "predictions_reread"),
        actuals_read=_int(summary, "actuals_read"),
        actuals_sent=_in_window(returned, "actuals_in_window", "actuals_sent")
        if in_window
        else _int(summary, "actuals_sent"),
        actuals_reread=_int(returned, "actuals_reread"),
        rows_rejected=_int(summary, "rows_rejected"),
        rejected_examples=tuple(str(e) for e in examples) if isinstance(examples, list) else (),
        failure=_text(failure.get("error")) if failure else None,
        min_rows=_int(summary, "min_rows"),
        low_volume=bool(summary.get("low_volume")) if summary else False,
        task_retries=max(record.try_number - 1, 0),
        delivery_retries=_int(summary, "retries"),
        warnings=_int(summary, "warnings"),
        seconds=float(seconds) if seconds is not None else None,
        ended_at=ended_at,
        delivered_at=delivered_at,
        lag=delivered_at - end if delivered_at and end else None,
        dry_run=bool(summary.get("dry_run")) if summary else False,
    )


def find_gaps(windows: Iterable[WindowRow]) -> list[Gap]:
    """Stretches between consecutive windows that no window (of any state) covers.

    A failed window is not a gap: it is shown as failed. Overlapping and repeated windows are fine.
    """
    placed = sorted((w for w in windows if w.start and w.end), key=lambda w: (w.start, w.end))
    gaps: list[Gap] = []
    covered_until: datetime | None = None
    for window in placed:
        assert window.start is not None and window.end is not None
        if covered_until is not None and window.start > covered_until:
            gaps.append(Gap(covered_until, window.start))
        covered_until = window.end if covered_until is None else max(covered_until, window.end)
    return gaps


def _recency(row: WindowRow) -> tuple[bool, datetime]:
    """Later syncs rank higher; one that has not ended yet is the latest."""
    return row.ended_at is None, row.ended_at or NEVER


def one_per_window(rows: Iterable[WindowRow]) -> list[WindowRow]:
    """Each window once: the latest sync that delivered it, else the latest one that succeeded (validate only),
    else the latest; the window's other syncs listed on it. In time order."""
    by_window: dict[tuple[datetime | None, datetime | None], list[WindowRow]] = {}
    for row in rows:
        by_window.setdefault((row.start, row.end), []).append(row)
    shown = []
    for syncs in by_window.values():
        syncs.sort(key=lambda w: (w.delivered, w.succeeded, *_recency(w)))
        *others, chosen = syncs
        shown.append(replace(chosen, other_syncs=tuple(sorted(others, key=_recency, reverse=True))))
    return sorted(shown, key=lambda w: (w.start, w.end))


def build_views(records: Iterable[SyncRecord]) -> list[VersionView]:
    """One view per model version, each window once in time order, gaps found; versions sorted by name."""
    views: dict[tuple[str, str], VersionView] = {}
    for record in records:
        key = model_version_of(record)
        view = views.setdefault(key, VersionView(*key))
        row = window_row(record)
        (view.windows if row.start and row.end else view.unplaced).append(row)
    for view in views.values():
        view.windows = one_per_window(view.windows)
        view.gaps = find_gaps(view.windows)
    return [views[key] for key in sorted(views)]


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
