"""One timeline per model version, where every row Aporia holds is counted once, whatever the windows' bounds.

Syncs of the same bounds (retries, re-runs, backfills, a manual run of an existing window) are one row, the
latest that delivered, the others listed on it. Windows of other bounds that overlap cannot be split by their
counts (a summary counts its whole window), so the timeline keeps windows that do not overlap: first the runs' own
data intervals (scheduled, backfilled, manual with a logical date), then bounds given to the task, each by its
start; a window overlapping one already kept is shown beside it, marked, and left out of the totals, whose rows
the kept windows count. With hourly windows and a manual run over ``[03:30, 04:30)``, the header is what Aporia
holds for the span.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from aporia_provider.plugins.windows import (
    NEVER,
    Gap,
    SyncRecord,
    VersionView,
    WindowRow,
    earlier_rows,
    model_version_of,
    window_row,
)
from aporia_provider.sync.outcome import VERSIONS_KEY


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
        shown.append(
            replace(
                chosen,
                other_syncs=tuple(sorted(others, key=_recency, reverse=True)),
                is_run_interval=any(sync.is_run_interval for sync in syncs),
            )
        )
    return sorted(shown, key=lambda w: (w.start, w.end))


def counted_once(windows: Iterable[WindowRow]) -> tuple[list[WindowRow], list[WindowRow]]:
    """The windows the timeline counts (none overlapping another) and the overlapping ones, marked with the
    bounds of the counted windows they overlap; each list in time order."""
    kept: list[WindowRow] = []
    overlapping: list[WindowRow] = []
    for window in sorted(windows, key=lambda w: (not w.is_run_interval, *_bounds(w))):
        start, end = _bounds(window)
        under = sorted(_bounds(k) for k in kept if _bounds(k)[0] < end and start < _bounds(k)[1])
        if under:
            overlapping.append(replace(window, overlaps=tuple(under)))
        else:
            kept.append(window)
    return sorted(kept, key=_bounds), sorted(overlapping, key=_bounds)


def _bounds(row: WindowRow) -> tuple[datetime, datetime]:
    assert row.start is not None and row.end is not None
    return row.start, row.end


def per_version(record: SyncRecord) -> list[SyncRecord]:
    """A sync of several versions (model_version_column) as one record per version, each as a sync of its own: its
    summary and failure that version's (the failure's sentence shared); any other record as it is."""
    sources = (record.summary, record.failure, record.rendered, record.declared)
    versions = next((s[VERSIONS_KEY] for s in sources if s and isinstance(s.get(VERSIONS_KEY), Mapping)), None)
    if versions is None:
        named = next((s.get("model_versions") for s in sources[2:] if s and s.get("model_versions")), None)
        if not isinstance(named, list):
            return [record]
        versions = {str(version): {} for version in named}

    def of(source: Mapping[str, Any] | None, version: str) -> Mapping[str, Any] | None:
        if source is None:
            return None
        counts = (source.get(VERSIONS_KEY) or {}).get(version) or {}
        rest = {key: value for key, value in source.items() if key not in (VERSIONS_KEY, "model_versions")}
        return {**rest, **counts, "model_version": version}

    return [
        replace(
            record,
            summary=of(record.summary, version),
            failure=of(record.failure, version),
            rendered=of(record.rendered, version),
            declared=of(record.declared, version),
        )
        for version in versions
    ]


def build_views(records: Iterable[SyncRecord]) -> list[VersionView]:
    """One view per model version: its timeline in time order, overlaps apart, gaps found; versions by name."""
    views: dict[tuple[str, str], VersionView] = {}
    placed: dict[tuple[str, str], list[WindowRow]] = {}
    for record in (one for each in records for one in per_version(each)):
        key = model_version_of(record)
        view = views.setdefault(key, VersionView(*key))
        row = window_row(record)
        if row.start and row.end:
            placed.setdefault(key, []).extend([row, *earlier_rows(record, row)])
        else:
            view.unplaced.append(row)
    for key, view in views.items():
        windows = one_per_window(placed.get(key, []))
        view.windows, view.overlapping = counted_once(windows)
        view.gaps = find_gaps(windows)
    return [views[key] for key in sorted(views)]
