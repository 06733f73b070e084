"""The sync view's pure parts: window rows from task instances, gaps, the SVG chart, the page; and its guard."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from importlib.metadata import entry_points
from typing import Any

import pytest

from aporia_provider.plugins.chart import sync_chart
from aporia_provider.plugins.timeline import build_views, find_gaps
from aporia_provider.plugins.windows import (
    UNKNOWN,
    EarlierTry,
    Gap,
    SyncRecord,
    VersionView,
    human_duration,
    model_version_of,
    window_label,
    window_of,
    window_row,
)

T0 = datetime(2026, 11, 21, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
SVG = "{http://www.w3.org/2000/svg}"


def summary(hour: int, **changes: Any) -> dict[str, Any]:
    """A sync summary as AporiaSyncOperator returns it, for the window starting `hour` hours after T0."""
    return {
        "model_id": "insurance-propensity",
        "model_version": "v1",
        "window_start": (T0 + hour * HOUR).isoformat(),
        "window_end": (T0 + (hour + 1) * HOUR).isoformat(),
        "read_start": (T0 + hour * HOUR).isoformat(),
        "rows_read": 8,
        "predictions_in_window": 8,
        "predictions_reread": 0,
        "fragments_sent": 8,
        "actuals_read": 2,
        "actuals_sent": 2,
        "actuals_in_window": 2,
        "actuals_reread": 0,
        "rows_rejected": 0,
        "rejected_examples": [],
        "batches": 1,
        "retries": 0,
        "warnings": 0,
        "seconds": 4.25,
        "dry_run": False,
    } | changes


def record(hour: int, state: str = "success", with_summary: bool = True, **changes: Any) -> SyncRecord:
    """The task instance of the hourly run for window `hour`, delivered 10 minutes after the window's end."""
    fields: dict[str, Any] = {
        "dag_id": "aporia_redshift_sync",
        "task_id": "sync",
        "run_id": f"scheduled__{(T0 + hour * HOUR).isoformat()}",
        "state": state,
        "try_number": 1,
        "start_date": T0 + (hour + 1) * HOUR,
        "end_date": T0 + (hour + 1) * HOUR + timedelta(minutes=10),
        "duration": 9.5,
        "interval_start": T0 + hour * HOUR,
        "interval_end": T0 + (hour + 1) * HOUR,
        "summary": summary(hour) if with_summary else None,
        "rendered": {"model_id": "insurance-propensity", "model_version": "v1"},
    }
    return SyncRecord(**(fields | changes))


def failed_tries(count: int) -> tuple[EarlierTry, ...]:
    """A task instance's tries before its latest, each failed (and retried)."""
    return tuple(
        EarlierTry(n, "failed", T0 + n * HOUR, T0 + n * HOUR + timedelta(minutes=1)) for n in range(1, count + 1)
    )


# --- window rows -------------------------------------------------------------------------------------------


def test_a_successful_sync_shows_its_summary_retries_and_lag() -> None:
    recorded = summary(3, retries=2, rows_rejected=1, rejected_examples=["x"])
    row = window_row(record(3, try_number=3, earlier_tries=failed_tries(2), summary=recorded))
    assert (row.start, row.end) == (T0 + 3 * HOUR, T0 + 4 * HOUR)
    assert (row.rows_read, row.fragments_sent, row.actuals_sent, row.rows_rejected) == (8, 8, 2, 1)
    assert row.rejected_examples == ("x",)
    assert (row.task_retries, row.retries) == (2, 2)
    assert row.seconds == 4.25  # the sync's own timing, not the task's
    assert row.delivered_at == T0 + 4 * HOUR + timedelta(minutes=10)
    assert row.lag == timedelta(minutes=10)
    assert row.succeeded and not row.failed


def test_a_failed_sync_without_summary_keeps_its_window_from_the_run() -> None:
    row = window_row(record(2, state="failed", with_summary=False, try_number=3, earlier_tries=failed_tries(2)))
    assert (row.start, row.end) == (T0 + 2 * HOUR, T0 + 3 * HOUR)
    assert row.failed and not row.succeeded
    assert (row.rows_read, row.fragments_sent, row.actuals_sent, row.rows_rejected) == (None, None, None, None)
    assert (row.task_retries, row.retries) == (2, None)
    assert row.seconds == 9.5  # the task's duration
    assert (row.delivered_at, row.lag) == (None, None)  # nothing was delivered


def test_the_window_comes_from_the_summary_then_explicit_bounds_then_the_run() -> None:
    explicit = {"window_start": "2026-11-01T00:00:00+00:00", "window_end": "2026-11-02T00:00:00Z"}
    assert window_of(record(1)) == (T0 + HOUR, T0 + 2 * HOUR)
    assert window_of(record(1, with_summary=False, rendered=explicit)) == (
        datetime(2026, 11, 1, tzinfo=timezone.utc),
        datetime(2026, 11, 2, tzinfo=timezone.utc),
    )
    assert window_of(record(1, with_summary=False, rendered={})) == (T0 + HOUR, T0 + 2 * HOUR)
    # A manual run without a data interval (or a zero-width one) has no window to place.
    assert window_of(record(1, with_summary=False, rendered={}, interval_start=None, interval_end=None)) == (None, None)
    assert window_of(record(1, with_summary=False, rendered={}, interval_end=T0 + HOUR)) == (None, None)


def test_naive_times_from_the_database_are_utc() -> None:
    naive = record(0, with_summary=False, interval_start=datetime(2026, 11, 21), interval_end=datetime(2026, 11, 21, 1))
    assert window_of(naive) == (T0, T0 + HOUR)


def test_the_model_version_comes_from_the_summary_then_rendered_fields_then_the_dag() -> None:
    declared = {"model_id": "from-dag", "model_version": "v9"}
    assert model_version_of(record(0, declared=declared)) == ("insurance-propensity", "v1")
    assert model_version_of(
        record(0, with_summary=False, rendered={"model_id": "rendered", "model_version": "v2"}, declared=declared)
    ) == ("rendered", "v2")
    assert model_version_of(record(0, with_summary=False, rendered=None, declared=declared)) == ("from-dag", "v9")
    assert model_version_of(record(0, with_summary=False, rendered=None)) == (UNKNOWN, UNKNOWN)


# --- gaps --------------------------------------------------------------------------------------------------


def rows(*hours: int, state: str = "success") -> list[Any]:
    return [window_row(record(h, state=state)) for h in hours]


def test_consecutive_windows_have_no_gap() -> None:
    assert find_gaps(rows(0, 1, 2, 3)) == []


def test_a_stretch_no_window_covers_is_a_gap_whatever_the_order() -> None:
    assert find_gaps(rows(5, 0, 1, 4)) == [Gap(T0 + 2 * HOUR, T0 + 4 * HOUR)]
    assert find_gaps(rows(0, 2, 4)) == [Gap(T0 + HOUR, T0 + 2 * HOUR), Gap(T0 + 3 * HOUR, T0 + 4 * HOUR)]


def test_a_failed_window_is_not_a_gap() -> None:
    assert find_gaps(rows(0) + rows(1, state="failed") + rows(2)) == []


def test_repeated_and_overlapping_windows_are_not_gaps() -> None:
    day = window_row(record(0, summary=summary(0, window_end=(T0 + 24 * HOUR).isoformat())))
    assert find_gaps([*rows(0, 0, 1), day, *rows(3, 24)]) == []
    assert find_gaps([*rows(0, 0, 1), day, *rows(25)]) == [Gap(T0 + 24 * HOUR, T0 + 25 * HOUR)]


def test_windows_without_bounds_are_left_out_of_gap_finding() -> None:
    unplaced = window_row(record(9, with_summary=False, interval_start=None, interval_end=None))
    assert find_gaps([*rows(0), unplaced, *rows(1)]) == []


# --- views -------------------------------------------------------------------------------------------------


def test_views_group_by_model_version_sort_windows_and_find_gaps() -> None:
    other = summary(0, model_version="v2")
    views = build_views(
        [
            record(3),
            record(0),
            record(1, state="failed", with_summary=False),
            record(0, summary=other, run_id="v2-run"),
            record(7, with_summary=False, state="failed", interval_start=None, interval_end=None),
        ]
    )
    assert [(v.model_id, v.model_version) for v in views] == [
        ("insurance-propensity", "v1"),
        ("insurance-propensity", "v2"),
    ]
    v1, v2 = views
    assert [w.start for w in v1.windows] == [T0, T0 + HOUR, T0 + 3 * HOUR]
    assert v1.gaps == [Gap(T0 + 2 * HOUR, T0 + 3 * HOUR)]
    assert len(v1.unplaced) == 1 and len(v1.failed) == 2
    assert (v1.total("fragments_sent"), v1.total("actuals_sent")) == (16, 4)  # failed windows count nothing
    assert v1.max_lag == timedelta(minutes=10)
    assert [type(item).__name__ for item in v1.timeline()] == ["WindowRow", "WindowRow", "Gap", "WindowRow"]
    assert [w.run_id for w in v2.windows] == ["v2-run"]


def with_lookback(hour: int, in_window: int, reread: int, actuals: int = 0, actuals_reread: int = 0) -> dict[str, Any]:
    """The summary of a sync whose lookback re-read `reread` predictions (and `actuals_reread` actuals)."""
    return summary(
        hour,
        read_start=(T0 + hour * HOUR - timedelta(minutes=15)).isoformat(),
        rows_read=in_window + reread,
        fragments_sent=in_window + reread,
        predictions_in_window=in_window,
        predictions_reread=reread,
        actuals_read=actuals + actuals_reread,
        actuals_sent=actuals + actuals_reread,
        actuals_in_window=actuals,
        actuals_reread=actuals_reread,
    )


def test_a_lookbacks_rereads_are_shown_apart_and_totals_count_each_row_once() -> None:
    # Six hourly windows of 100 predictions and about 23 actuals, each re-reading the 15 minutes before it.
    first = record(0, summary=with_lookback(0, 100, 0, actuals=23))
    later = [record(h, summary=with_lookback(h, 100 + h, 25, actuals=22, actuals_reread=5)) for h in range(1, 6)]
    [view] = build_views([first, *later])
    row = view.windows[1]
    assert (row.rows_read, row.predictions_in_window, row.predictions_reread) == (126, 101, 25)
    assert (row.actuals_in_window, row.actuals_reread, row.reread) == (22, 5, 30)
    assert (view.total("predictions_in_window"), view.total("actuals_in_window")) == (615, 133)  # what Aporia holds
    assert view.total("reread") == 150
    html = page(first, *later)
    assert '<td class="num" data-col="predictions_in_window">101</td>' in html
    assert '<td class="num" data-col="reread">25 / 5</td>' in html
    assert '<b data-fact="predictions_in_window">615</b> predictions sent' in html
    assert '<b data-fact="reread">150</b> re-read' in html


def test_a_summary_from_before_in_window_counts_shows_what_it_sent() -> None:
    recorded = summary(0, fragments_sent=12, actuals_sent=3).items()
    old = {k: v for k, v in recorded if k != "read_start" and not k.endswith(("_in_window", "_reread"))}
    row = window_row(record(0, summary=old))
    assert (row.predictions_in_window, row.actuals_in_window, row.reread) == (12, 3, None)


def test_a_window_synced_again_is_one_row_of_its_latest_successful_sync() -> None:
    """Three runs of one 2,000-row window (a backfill and a manual re-run) hold 2,000 predictions in Aporia."""
    runs = [
        record(0, run_id=f"run-{n}", end_date=T0 + HOUR + n * HOUR, summary=summary(0, predictions_in_window=2000))
        for n in range(3)
    ]
    later_failure = record(0, run_id="run-3", state="failed", with_summary=False, end_date=T0 + 9 * HOUR)
    validate_only = record(0, run_id="run-4", end_date=T0 + 10 * HOUR, summary=summary(0, dry_run=True))
    running = record(0, run_id="run-5", state="running", with_summary=False, end_date=None)
    [view] = build_views([*runs, later_failure, validate_only, running, record(1)])
    assert [w.start for w in view.windows] == [T0, T0 + HOUR]
    shown = view.windows[0]
    assert (shown.run_id, shown.state, shown.predictions_in_window) == ("run-2", "success", 2000)
    assert [w.run_id for w in shown.other_syncs] == ["run-5", "run-4", "run-3", "run-1", "run-0"]  # newest first
    assert view.total("predictions_in_window") == 2000 + 8
    assert view.failed == [] and view.gaps == []
    html = page(*runs, later_failure, validate_only, running, record(1))
    assert html.count('<tr class="window') == 2
    assert "5 other syncs of this window" in html


def test_a_retried_window_shows_its_successful_try() -> None:
    """Airflow keeps one task instance per run: its latest try's state and summary."""
    retried = record(0, try_number=2, earlier_tries=failed_tries(1), summary=summary(0, predictions_in_window=100))
    [view] = build_views([retried])
    [row] = view.windows
    assert (row.state, row.task_retries, row.predictions_in_window, row.failure) == ("success", 1, 100, None)
    assert [(other.try_number, other.state) for other in row.other_syncs] == [(1, "failed")]


def test_a_backfill_over_a_synced_window_lists_the_sync_it_replaced_and_is_no_retry() -> None:
    """A backfill (or a clear) runs the task instance again: its earlier, successful try is another sync of the
    window, not a failed try."""
    replaced = EarlierTry(1, "success", T0 + HOUR, T0 + HOUR + timedelta(minutes=10))
    backfilled = record(0, try_number=2, earlier_tries=(replaced,), end_date=T0 + 5 * HOUR)
    [view] = build_views([backfilled])
    [row] = view.windows
    assert (row.try_number, row.task_retries, row.predictions_in_window) == (2, 0, 8)
    [other] = row.other_syncs
    assert (other.run_id, other.try_number, other.state, other.ended_at) == (
        row.run_id,
        1,
        "success",
        replaced.end_date,
    )
    assert other.predictions_in_window is None  # its summary went with its XComs
    assert view.total("predictions_in_window") == 8
    html = page(backfilled)
    assert '<td class="num" data-col="retries">0 / 0</td>' in html
    assert '<li data-try="1">' in html and "try 1 success</li>" in html


def test_a_failed_window_shows_why_and_what_it_rejected() -> None:
    sentence = "1 invalid row of 125 (pred-0000005807 amount: not a finite number); nothing was sent."
    failure = summary(
        1,
        error=sentence,
        rows_read=125,
        fragments_sent=0,
        actuals_sent=0,
        rows_rejected=1,
        rejected_examples=["predictions pred-0000005807: amount: not a finite number"],
    )
    failed = record(1, state="failed", with_summary=False, failure=failure, rendered=None)
    [view] = build_views([record(0), failed])
    row = view.windows[1]
    assert (row.start, row.failed, row.failure, row.rows_rejected) == (T0 + HOUR, True, sentence, 1)
    assert (row.rows_read, row.predictions_in_window, row.actuals_in_window, row.reread) == (125, 0, 0, None)
    assert view.failed == [row]
    assert (view.total("rows_rejected"), view.total("predictions_in_window")) == (1, 8)  # none of it reached Aporia
    assert (view.model_id, view.model_version) == ("insurance-propensity", "v1")  # named by the failure
    html = page(record(0), failed)
    assert f'<div class="reason" data-col="reason">{sentence}</div>' in html
    assert '<b data-fact="rows_rejected">1</b> rows rejected' in html
    assert "predictions pred-0000005807: amount: not a finite number" in html
    [band] = groups(chart_of(record(0), failed), "state-failed")
    assert band.findtext(SVG + "title") == f"[2026-11-21 01:00, 02:00): failed: {sentence}"


def test_a_successful_retry_does_not_show_the_failure_of_its_earlier_try() -> None:
    row = window_row(record(0, try_number=2, failure=summary(0, error="Aporia unreachable")))
    assert row.failure is None and row.succeeded


def test_durations_and_window_labels_read_naturally() -> None:
    assert [human_duration(v) for v in (None, 4.25, 65, 3 * 3600 + 5 * 60, timedelta(days=2, hours=3))] == [
        "—",
        "4.2 s",
        "1 min 05 s",
        "3 h 05 min",
        "2 d 3 h",
    ]
    assert window_label(T0, T0 + HOUR) == "[2026-11-21 00:00, 01:00)"
    assert window_label(T0 + 23 * HOUR, T0 + 24 * HOUR) == "[2026-11-21 23:00, 00:00)"
    assert window_label(T0, T0 + 48 * HOUR) == "[2026-11-21 00:00, 2026-11-23 00:00)"
    assert window_label(None, None) == "no window"


# --- chart -------------------------------------------------------------------------------------------------


def chart_of(*records: SyncRecord) -> ET.Element:
    [view] = build_views(records)
    return ET.fromstring(sync_chart(view))  # well-formed XML, or this raises


def groups(svg: ET.Element, css: str) -> list[ET.Element]:
    return [g for g in svg.iter(SVG + "g") if css in (g.get("class") or "").split()]


def test_the_chart_draws_each_window_and_marks_failed_and_missing_ones() -> None:
    svg = chart_of(record(0), record(1, state="failed", with_summary=False), record(2), record(5))
    assert svg.tag == SVG + "svg" and svg.get("role") == "img"
    assert len(groups(svg, "window")) == 4
    assert len(groups(svg, "state-success")) == 3
    [failed] = groups(svg, "state-failed")
    assert [r.get("class") for r in failed.iter(SVG + "rect")] == ["band failed"]
    [gap] = groups(svg, "gap")
    assert gap.findtext(SVG + "title") == "missing: no sync ran for [2026-11-21 03:00, 05:00) (2 h 00 min)"
    [ok] = [g for g in groups(svg, "state-success") if g.get("data-start") == T0.isoformat()]
    assert [r.get("class") for r in ok.iter(SVG + "rect")] == ["bar predictions", "bar actuals"]
    assert ok.findtext(SVG + "title") == (
        "[2026-11-21 00:00, 01:00): predictions sent 8, actuals sent 2, rows rejected 0, lag 10 min 00 s"
    )


def test_bar_heights_follow_the_counts_and_rejected_rows_stack_on_predictions() -> None:
    halved = summary(1, fragments_sent=4, predictions_in_window=4, rows_rejected=4, actuals_sent=0, actuals_in_window=0)
    svg = chart_of(record(0), record(1, summary=halved))
    first, second = groups(svg, "window")
    heights = {
        (g.get("data-start"), r.get("class")): float(r.get("height") or 0)
        for g in (first, second)
        for r in g.iter(SVG + "rect")
    }
    full = heights[(T0.isoformat(), "bar predictions")]
    assert full > 0
    assert heights[((T0 + HOUR).isoformat(), "bar predictions")] == pytest.approx(full / 2)
    assert heights[((T0 + HOUR).isoformat(), "bar rejected")] == pytest.approx(full / 2)
    assert heights[((T0 + HOUR).isoformat(), "bar actuals")] == 0
    assert heights[(T0.isoformat(), "bar actuals")] == pytest.approx(full / 4)


def test_the_chart_escapes_what_users_named() -> None:
    hostile = summary(0, model_id='<script>alert("x")</script>', model_version="v&1")
    markup = sync_chart(build_views([record(0, summary=hostile)])[0])
    assert "<script>" not in markup
    assert ET.fromstring(markup).get("aria-label") == '<script>alert("x")</script> v&1: windows synced'


def test_an_empty_view_says_so() -> None:
    svg = ET.fromstring(sync_chart(VersionView("m", "v1")))
    assert "No windows synced yet." in "".join(svg.itertext())


# --- page, plugin, guard -----------------------------------------------------------------------------------


def page(*records: SyncRecord) -> str:
    from aporia_provider.plugins.sync_view import render_page

    return render_page(
        build_views(records),
        airflow_base="/airflow",
        static_base="/airflow/aporia-sync/static",
        now=T0 + 30 * HOUR,
        shown_limit=2000,
        records=len(records),
    )


def test_the_page_lists_windows_newest_first_with_gaps_and_failures_standing_out() -> None:
    html = page(
        record(0),
        record(1, state="failed", with_summary=False, try_number=2, earlier_tries=failed_tries(1)),
        record(3, summary=summary(3, rows_rejected=1, rejected_examples=["pred-7: amount <b>NaN</b>"])),
    )
    rows = re.findall(r'<tr class="([^"]+)" data-window-start="([^"]+)"', html)
    assert rows == [
        ("window state-success", (T0 + 3 * HOUR).isoformat()),
        ("gap", (T0 + 2 * HOUR).isoformat()),
        ("window state-failed failed", (T0 + HOUR).isoformat()),
        ("window state-success", T0.isoformat()),
    ]
    assert "missing: no sync ran for these 1 h 00 min" in html
    assert '<b data-fact="failed">1</b> failed' in html and '<b data-fact="missing">1</b> missing' in html
    assert '<td class="num" data-col="predictions_in_window">8</td>' in html
    assert '<td class="num" data-col="retries">1 / —</td>' in html  # the failed try was retried once
    assert "pred-7: amount &lt;b&gt;NaN&lt;/b&gt;" in html  # rejected examples are escaped
    assert (
        'href="/airflow/dags/aporia_redshift_sync/runs/scheduled__2026-11-21T00%3A00%3A00%2B00%3A00/tasks/sync"' in html
    )
    assert 'href="/airflow/aporia-sync/static/sync_view.css"' in html
    assert "<svg" in html and "&lt;svg" not in html


def test_an_empty_page_explains_where_windows_come_from() -> None:
    assert "No sync task has run yet" in page()


def test_the_plugin_is_registered_through_the_airflow_plugins_entry_point() -> None:
    from airflow.plugins_manager import AirflowPlugin

    from aporia_provider.plugins.sync_view import URL_PREFIX, AporiaSyncViewPlugin

    [entry] = [e for e in entry_points(group="airflow.plugins") if e.name == "aporia_sync_view"]
    assert entry.load() is AporiaSyncViewPlugin
    assert issubclass(AporiaSyncViewPlugin, AirflowPlugin)
    AporiaSyncViewPlugin.validate()  # what Airflow checks when it loads a plugin (it has a name)
    [app] = AporiaSyncViewPlugin.fastapi_apps
    assert app["url_prefix"] == URL_PREFIX == "/aporia-sync"
    [view] = AporiaSyncViewPlugin.external_views
    assert (view["href"], view["category"], view["url_route"]) == ("aporia-sync/", "browse", "aporia-sync")


@pytest.mark.parametrize("path", ["/", "/api/windows", "/static/sync_view.css"])
def test_anonymous_requests_get_401(path: str) -> None:
    from fastapi.testclient import TestClient

    from aporia_provider.plugins.sync_view import app

    response = TestClient(app).get(path)
    assert (response.status_code, response.json()) == (401, {"detail": "Not authenticated"})


def test_a_window_below_its_volume_expectation_says_so() -> None:
    html = page(record(0, summary=summary(0, min_rows=20, low_volume=True)), record(1, summary=summary(1, min_rows=5)))
    assert html.count('data-col="low_volume"') == 1
    assert '<div class="reason" data-col="low_volume">below min_rows 20</div>' in html


# --- one timeline, whatever the bounds ----------------------------------------------------------------------


def manual(start: datetime, end: datetime, in_window: int, actuals: int, **changes: Any) -> SyncRecord:
    """A manual run given explicit bounds (its run has no data interval), ended at T0 + 20 h."""
    bounds = {"window_start": start.isoformat(), "window_end": end.isoformat(), "read_start": start.isoformat()}
    counts = {"predictions_in_window": in_window, "fragments_sent": in_window, "actuals_in_window": actuals}
    fields: dict[str, Any] = {
        "run_id": "manual__2026-11-21T20:00:00+00:00",
        "interval_start": None,
        "interval_end": None,
        "end_date": T0 + 20 * HOUR,
        "summary": summary(0) | bounds | counts,
    }
    return record(0, **(fields | changes))


def test_an_overlapping_manual_run_is_marked_and_not_counted_again() -> None:
    """Six hourly windows of 12 predictions and 1-2 actuals, and a manual run over [03:30, 04:30): the header is
    what Aporia holds for the six hours, 72 predictions, as the issue's on-call engineer found it should be."""
    hourly = [record(h, summary=summary(h, predictions_in_window=12, actuals_in_window=1 + h % 2)) for h in range(6)]
    overlapping = manual(T0 + 3.5 * HOUR, T0 + 4.5 * HOUR, 12, 1)
    [view] = build_views([*hourly, overlapping])
    assert [w.start for w in view.windows] == [T0 + h * HOUR for h in range(6)]
    [marked] = view.overlapping
    assert (marked.start, marked.end, marked.run_id) == (T0 + 3.5 * HOUR, T0 + 4.5 * HOUR, overlapping.run_id)
    assert marked.overlaps == ((T0 + 3 * HOUR, T0 + 4 * HOUR), (T0 + 4 * HOUR, T0 + 5 * HOUR))
    assert (view.total("predictions_in_window"), view.total("actuals_in_window")) == (72, 9)
    assert view.gaps == []
    html = page(*hourly, overlapping)
    assert '<b data-fact="predictions_in_window">72</b> predictions sent' in html
    assert '<b data-fact="overlapping">1</b> overlapping' in html
    rows = re.findall(r'<tr class="([^"]+)" data-window-start="([^"]+)"', html)
    assert rows[1:4] == [
        ("window state-success", (T0 + 4 * HOUR).isoformat()),
        ("window state-success overlapping", (T0 + 3.5 * HOUR).isoformat()),
        ("window state-success", (T0 + 3 * HOUR).isoformat()),
    ]
    assert (
        '<div class="reason" data-col="overlaps">overlaps [2026-11-21 03:00, 04:00), [2026-11-21 04:00, 05:00): '
        "counted there, not in the totals</div>"
    ) in html
    [outline] = groups(chart_of(*hourly, overlapping), "overlapping")
    assert outline.findtext(SVG + "title", "").endswith(
        "overlaps [2026-11-21 03:00, 04:00), [2026-11-21 04:00, 05:00): counted there"
    )


def test_a_manual_run_of_an_existing_windows_bounds_folds_into_it() -> None:
    hourly = [record(h) for h in range(3)]
    same = manual(T0 + HOUR, T0 + 2 * HOUR, 8, 2)
    [view] = build_views([*hourly, same])
    assert view.overlapping == [] and len(view.windows) == 3
    assert view.windows[1].run_id == same.run_id  # the latest delivery of the window
    assert [o.run_id for o in view.windows[1].other_syncs] == [hourly[1].run_id]
    assert view.total("predictions_in_window") == 24


def test_windows_given_to_the_task_alone_make_the_timeline_by_their_start() -> None:
    """Without runs' own intervals (every window given explicitly), the earliest of two overlapping ones counts."""
    first = manual(T0, T0 + 2 * HOUR, 20, 0, run_id="manual-1")
    second = manual(T0 + HOUR, T0 + 3 * HOUR, 30, 0, run_id="manual-2")
    third = manual(T0 + 3 * HOUR, T0 + 4 * HOUR, 5, 0, run_id="manual-3")
    [view] = build_views([second, third, first])
    assert [w.run_id for w in view.windows] == ["manual-1", "manual-3"]
    assert [w.run_id for w in view.overlapping] == ["manual-2"]
    assert view.total("predictions_in_window") == 25


def test_warnings_the_sync_logged_and_its_expectation_reach_the_page_and_the_api() -> None:
    from aporia_provider.plugins.sync_view import view_json

    line = "2 invalid rows of 200 (e.g. …); left out, within max_invalid_rows=0.02 (4)."
    warned = record(0, summary=summary(0, warnings=1, logged_warnings=[line], min_rows=10, low_volume=True))
    [view] = build_views([warned, record(1)])
    assert (view.windows[0].warnings_shown, view.total("warnings_shown")) == (2, 2)
    html = page(warned, record(1))
    assert '<b data-fact="warnings">2</b> warnings' in html
    assert f'<details><summary>2</summary>\n      <ul class="examples"><li>{line}</li></ul>' in html
    [shown, _] = view_json(view)["windows"]
    assert (shown["warnings"], shown["logged_warnings"]) == (1, [line])
    assert (shown["min_rows"], shown["low_volume"], shown["predictions_in_window"]) == (10, True, 8)
    assert shown["overlaps"] == [] and view_json(view)["overlapping"] == []
