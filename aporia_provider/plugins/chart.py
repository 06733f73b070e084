"""The sync view's chart: server-side SVG (no script, no CDN), one bar pair per window on a time axis.

Predictions sent (blue) and actuals sent (green) per window, counted in the window (not what its lookback
re-read), rows rejected stacked on the predictions in orange; a failed window is a red band over the whole
height, a missing stretch between windows an amber hatched band; windows still queued or running are grey; a
window overlapping those on the timeline (counted there) a dashed outline. Every mark carries a <title> tooltip.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape

from aporia_provider.plugins.windows import Gap, VersionView, WindowRow, human_duration, window_label

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 34, 40
COLORS = {
    "predictions": "#017cee",
    "actuals": "#1e8e3e",
    "rejected": "#f29900",
    "failed": "#d93025",
    "gap": "#f9ab00",
    "pending": "#9aa0a6",
}
LEGEND = (
    ("predictions", "predictions sent"),
    ("actuals", "actuals sent"),
    ("rejected", "rows rejected"),
    ("failed", "failed window"),
    ("gap", "missing window"),
)


def _number(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _rect(x: float, y: float, width: float, height: float, css: str, fill: str, extra: str = "") -> str:
    return (
        f'<rect class="{css}" x="{_number(x)}" y="{_number(y)}" width="{_number(max(width, 1.0))}" '
        f'height="{_number(max(height, 0.0))}" fill="{fill}"{extra}/>'
    )


def window_tooltip(window: WindowRow) -> str:
    label = window_label(window.start, window.end)
    if window.succeeded:
        parts = [
            f"predictions sent {window.predictions_in_window or 0}",
            f"actuals sent {window.actuals_in_window or 0}",
            f"rows rejected {window.rows_rejected or 0}",
            f"lag {human_duration(window.lag)}",
        ]
        if window.reread:
            parts.insert(2, f"re-read {window.reread}")
        if window.overlapping:
            parts.append(
                "overlaps " + ", ".join(window_label(*bounds) for bounds in window.overlaps) + ": counted there"
            )
        return f"{label}: " + ", ".join(parts)
    return f"{label}: {window.state}" + (f": {window.failure}" if window.failure else "")


def sync_chart(view: VersionView, width: int = WIDTH, height: int = HEIGHT) -> str:
    """The SVG markup of one model version's windows."""
    head = (
        f'<svg class="sync-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(view.model_id)} {escape(view.model_version)}: windows synced">'
    )
    if not view.windows:
        return head + f'<text x="{LEFT}" y="{height // 2}" font-size="13">No windows synced yet.</text></svg>'

    starts = [w.start for w in view.windows if w.start] + [g.start for g in view.gaps]
    ends = [w.end for w in view.windows if w.end] + [g.end for g in view.gaps]
    t0, t1 = min(starts), max(ends)
    span = (t1 - t0).total_seconds() or 1.0
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    base = TOP + plot_h

    def x(moment: datetime) -> float:
        return LEFT + plot_w * (moment - t0).total_seconds() / span

    peak = max(
        [max((w.predictions_in_window or 0) + (w.rows_rejected or 0), w.actuals_in_window or 0) for w in view.succeeded]
        + [1]
    )

    def h(count: int | None) -> float:
        return plot_h * (count or 0) / peak

    parts = [head, _defs(), _legend()]
    for gap in view.gaps:
        parts.append(_gap(gap, x(gap.start), x(gap.end), plot_h))
    for window in view.windows:
        assert window.start is not None and window.end is not None
        left, right = x(window.start), x(window.end)
        slot = max(right - left - 1.0, 1.0)
        marks: list[str] = []
        if window.succeeded:
            half = max(slot / 2, 1.0)
            predictions, rejected = h(window.predictions_in_window), h(window.rows_rejected)
            actuals = h(window.actuals_in_window)
            marks.append(_rect(left, base - predictions, half, predictions, "bar predictions", COLORS["predictions"]))
            if window.rows_rejected:
                marks.append(
                    _rect(left, base - predictions - rejected, half, rejected, "bar rejected", COLORS["rejected"])
                )
            marks.append(_rect(left + half, base - actuals, half, actuals, "bar actuals", COLORS["actuals"]))
        elif window.failed:
            marks.append(_rect(left, TOP, slot, plot_h, "band failed", COLORS["failed"], ' fill-opacity="0.55"'))
        else:
            marks.append(_rect(left, TOP, slot, plot_h, "band pending", COLORS["pending"], ' fill-opacity="0.35"'))
        parts.append(
            f'<g class="window state-{escape(window.state)}" data-start="{window.start.isoformat()}">'
            f"<title>{escape(window_tooltip(window))}</title>{''.join(marks)}</g>"
        )
    for window in view.overlapping:
        assert window.start is not None and window.end is not None
        dashed = ' stroke="#5f6368" stroke-dasharray="4 3"'
        outline = _rect(
            x(window.start), TOP, x(window.end) - x(window.start), plot_h, "band overlapping", "none", dashed
        )
        parts.append(
            f'<g class="window overlapping state-{escape(window.state)}" data-start="{window.start.isoformat()}">'
            f"<title>{escape(window_tooltip(window))}</title>{outline}</g>"
        )
    parts.append(_axes(t0, t1, x, peak, plot_w, base))
    parts.append("</svg>")
    return "".join(parts)


def _defs() -> str:
    return (
        '<defs><pattern id="gap-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{COLORS["gap"]}" fill-opacity="0.25"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{COLORS["gap"]}" stroke-width="3"/></pattern></defs>'
    )


def _legend() -> str:
    items, left = [], LEFT
    for key, label in LEGEND:
        fill = "url(#gap-hatch)" if key == "gap" else COLORS[key]
        items.append(
            f'<rect x="{left}" y="10" width="12" height="12" fill="{fill}"/>'
            f'<text x="{left + 16}" y="20" font-size="12">{label}</text>'
        )
        left += 24 + 7 * len(label)
    return '<g class="legend">' + "".join(items) + "</g>"


def _gap(gap: Gap, left: float, right: float, plot_h: int) -> str:
    title = f"missing: no sync ran for {window_label(gap.start, gap.end)} ({human_duration(gap.length)})"
    return (
        f'<g class="gap" data-start="{gap.start.isoformat()}"><title>{escape(title)}</title>'
        f"{_rect(left, TOP, right - left, plot_h, 'band gap', 'url(#gap-hatch)')}</g>"
    )


def _axes(t0: datetime, t1: datetime, x: Callable[[datetime], float], peak: int, plot_w: int, base: int) -> str:
    lines = [
        f'<line x1="{LEFT}" y1="{base}" x2="{LEFT + plot_w}" y2="{base}" stroke="#5f6368"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#5f6368"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" font-size="11" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{base}" font-size="11" text-anchor="end">0</text>',
    ]
    ticks = 5
    step = (t1 - t0) / (ticks - 1)
    for i in range(ticks):
        moment = t0 + step * i
        anchor = "start" if i == 0 else "end" if i == ticks - 1 else "middle"
        lines.append(
            f'<text class="tick" x="{_number(x(moment))}" y="{base + 16}" font-size="11" '
            f'text-anchor="{anchor}">{moment:%m-%d %H:%M}</text>'
        )
    lines.append(
        f'<text x="{LEFT + plot_w}" y="{base + 32}" font-size="11" text-anchor="end">UTC, '
        f"{human_duration(t1 - t0)} shown</text>"
    )
    return '<g class="axes">' + "".join(lines) + "</g>"
