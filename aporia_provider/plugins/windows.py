"""The sync view's data: one row per sync task instance, grouped by model version, with the gaps between them.

Pure functions over plain records (no database, no Airflow imports), so they are tested on their own; the
plugin (``sync_view.py``) reads the records from Airflow's metadata and renders what these build.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

UNKNOWN = "(unknown)"
SUCCESS = "success"
FAILED_STATES = frozenset({"failed", "upstream_failed"})


@dataclass(frozen=True)
class SyncRecord:
    """One task instance of an AporiaSyncOperator, as Airflow's metadata holds it.

    ``summary`` is the task's XCom return value (None when it failed before returning one); ``rendered`` its
    rendered template fields, when Airflow still keeps them; ``declared`` the operator's arguments as the DAG
    declares them (possibly unrendered templates), the last resort for naming the model version.
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
    rendered: Mapping[str, Any] | None = None
    declared: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class WindowRow:
    """One sync of one window, as the view shows it."""

    start: datetime | None
    end: datetime | None
    state: str
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    rows_read: int | None
    fragments_sent: int | None
    actuals_read: int | None
    actuals_sent: int | None
    rows_rejected: int | None
    rejected_examples: tuple[str, ...]
    task_retries: int
    delivery_retries: int | None
    warnings: int | None
    seconds: float | None
    delivered_at: datetime | None
    lag: timedelta | None
    dry_run: bool

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCESS


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
        return sum(getattr(w, name) or 0 for w in self.windows if w.succeeded)

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
    """Which model version the record synced: from its summary, else its rendered fields, else the DAG."""
    for source in (record.summary, record.rendered, record.declared):
        if source and _text(source.get("model_id")) and _text(source.get("model_version")):
            return str(source["model_id"]), str(source["model_version"])
    return UNKNOWN, UNKNOWN


def window_of(record: SyncRecord) -> tuple[datetime | None, datetime | None]:
    """The window the record synced: the summary's, else explicit rendered bounds, else the run's interval."""
    for source in (record.summary, record.rendered):
        if source:
            start, end = parse_time(source.get("window_start")), parse_time(source.get("window_end"))
            if start and end:
                return start, end
    start, end = parse_time(record.interval_start), parse_time(record.interval_end)
    if start and end and end > start:
        return start, end
    return None, None


def window_row(record: SyncRecord) -> WindowRow:
    summary = record.summary if isinstance(record.summary, Mapping) else None
    start, end = window_of(record)
    state = record.state or "none"
    delivered_at = parse_time(record.end_date) if state == SUCCESS else None
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
        actuals_read=_int(summary, "actuals_read"),
        actuals_sent=_int(summary, "actuals_sent"),
        rows_rejected=_int(summary, "rows_rejected"),
        rejected_examples=tuple(str(e) for e in examples) if isinstance(examples, list) else (),
        task_retries=max(record.try_number - 1, 0),
        delivery_retries=_int(summary, "retries"),
        warnings=_int(summary, "warnings"),
        seconds=float(seconds) if seconds is not None else None,
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


def build_views(records: Iterable[SyncRecord]) -> list[VersionView]:
    """One view per model version, windows in time order, gaps found; versions sorted by name."""
    views: dict[tuple[str, str], VersionView] = {}
    for record in records:
        key = model_version_of(record)
        view = views.setdefault(key, VersionView(*key))
        row = window_row(record)
        (view.windows if row.start and row.end else view.unplaced).append(row)
    for view in views.values():
        view.windows.sort(key=lambda w: (w.start, w.end, w.delivered_at or datetime.max.replace(tzinfo=timezone.utc)))
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
