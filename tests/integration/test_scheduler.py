"""The example DAGs under the real scheduler, executor, task runner and API server (`airflow standalone`).

aporia_setup runs from a manual trigger; aporia_redshift_sync, unpaused, catches up six hourly windows by
itself (Aporia failing a try of one, which Airflow retries); a backfill re-runs two of them; a manual run covers
the second half of one window and the first of the next; a manual run of the next window fails on a NaN; a DAG
whose task subclasses AporiaSyncOperator syncs the window after it. Everything is read back as a person would:
through Airflow's REST API, the sync view's JSON API, the StatsD metrics Airflow sent, and the local Aporia
server's read-only views.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from aporia_local.stack import LocalStack
from tests.helpers import MODEL, seeded_rows
from tests.integration.standalone import (
    SETUP_DAG,
    SUBCLASS_DAG,
    SUBCLASS_TASK,
    SYNC_DAG,
    ScheduledSyncs,
    parse_time,
    sync_lookback,
)

# sync_lookback() reads the example DAG, in the private Airflow home of the tier.
pytestmark = pytest.mark.usefixtures("airflow_env")
# The shape of a temporary Redshift password the local AWS stand-in issues: "<expiry>.<signature>".
TEMPORARY_PASSWORD = re.compile(r"\b\d{10}\.[0-9a-f]{40}\b")


def test_every_run_of_setup_catch_up_and_backfill_succeeded(scheduled_syncs: ScheduledSyncs) -> None:
    s = scheduled_syncs
    assert s.setup_run["state"] == "success"
    setup_tasks = s.task_instances[(SETUP_DAG, s.setup_run["dag_run_id"])]
    assert {(t["task_id"], t["state"]) for t in setup_tasks} == {
        ("create_model", "success"),
        ("create_version", "success"),
        ("connect_serving", "success"),
        ("connect_training", "success"),
    }

    # The scheduler caught up exactly the bounded windows, one run each, and all of them succeeded.
    intervals = [(parse_time(r["data_interval_start"]), parse_time(r["data_interval_end"])) for r in s.sync_runs]
    assert intervals == s.windows
    assert all(r["dag_run_id"].startswith("scheduled__") for r in s.sync_runs)
    assert {r["state"] for r in s.sync_runs} == {"success"}

    # The backfill took over the two windows' runs (now of type backfill), re-ran their task and completed.
    assert s.backfill["completed_at"]
    assert [r["run_type"] for r in s.sync_runs] == [
        "backfill" if window in s.backfilled else "scheduled" for window in s.windows
    ]
    # Aporia's faults failed a try of at least one window, and Airflow retried it by itself.
    assert s.retried, "no sync try failed on Aporia's faults: the retry is not exercised"
    tries = {window: s.sync_instance(window)["try_number"] for window in s.windows}
    assert all(tries[window] >= 1 + (window in s.backfilled) for window in s.windows)
    assert {s.sync_instance(window)["state"] for window in s.windows} == {"success"}

    # The window with a NaN failed at once: bad input is not retried.
    assert s.failed_run["state"] == "failed"
    [failed] = s.task_instances[(SYNC_DAG, s.failed_run["dag_run_id"])]
    assert (failed["state"], failed["try_number"]) == ("failed", 1)
    # The overlapping manual run and the subclass's run delivered.
    assert (s.overlapping_run["state"], s.subclass_run["state"]) == ("success", "success")
    [subclassed] = s.task_instances[(SUBCLASS_DAG, s.subclass_run["dag_run_id"])]
    assert (subclassed["operator"], subclassed["state"]) == ("TeamSync", "success")


def test_aporia_holds_each_seeded_prediction_and_arrived_actual_of_the_windows_once(
    scheduled_syncs: ScheduledSyncs, stack: LocalStack
) -> None:
    s = scheduled_syncs
    # Each run reads its window widened by the DAG's lookback; the subclass's has none.
    predictions, actuals = seeded_rows(stack, s.windows[0][0] - sync_lookback(), s.windows[-1][1])
    assert predictions and actuals, "the windows hold no seeded data: the test would prove nothing"
    subclass_predictions, subclass_actuals = seeded_rows(stack, *s.subclass_window)
    assert subclass_predictions, "the subclass's window holds no seeded data"
    predictions, actuals = predictions | subclass_predictions, actuals | subclass_actuals

    delivered = [f["id"] for f in s.fragments if f["predictions"]]
    assert len(delivered) == len(set(delivered))
    assert set(delivered) == set(predictions)
    with_actuals = {f["id"]: f["actuals"] for f in s.fragments if f["actuals"]}
    assert with_actuals == {pid: {"will_buy_insurance": value} for pid, value in actuals.items()}
    # Nothing else: no fragment outside those rows.
    assert {f["id"] for f in s.fragments} == set(predictions) | set(actuals)


@pytest.mark.parametrize("dag_id", [SETUP_DAG, SYNC_DAG])
def test_no_task_log_holds_a_secret(scheduled_syncs: ScheduledSyncs, stack: LocalStack, dag_id: str) -> None:
    logs = {key: text for key, text in scheduled_syncs.logs.items() if key[0] == dag_id}
    assert logs and all(text.strip() for text in logs.values()), "no task log was fetched"
    settings = stack.settings
    secrets = {
        "Aporia token": settings.aporia_token,
        "AWS secret key": settings.aws_secret_access_key,
        "Redshift master password": settings.master_password,
        "the stack's signing key": settings.signing_key,
    }
    leaks = [
        f"{name} in the log of {key}"
        for key, text in logs.items()
        for name, secret in secrets.items()
        if secret in text
    ]
    leaks += [
        f"a temporary Redshift password in the log of {key}"
        for key, text in logs.items()
        if TEMPORARY_PASSWORD.search(text)
    ]
    assert leaks == []


def log_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sync_tries(s: ScheduledSyncs) -> tuple[dict[Any, list[dict[str, Any]]], dict[Any, list[dict[str, Any]]]]:
    """The logs of the sync tries that succeeded (they log their summary) and of those that failed."""
    tries = {key: log_events(text) for key, text in s.logs.items() if key[0] in (SYNC_DAG, SUBCLASS_DAG)}
    succeeded = {k: e for k, e in tries.items() if any("Sync summary" in str(x.get("event")) for x in e)}
    return succeeded, {k: e for k, e in tries.items() if k not in succeeded}


def error_lines(events: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("event")) for e in events if str(e.get("level", "")).lower() in ("error", "critical")]


def test_a_successful_syncs_log_has_no_error_line(scheduled_syncs: ScheduledSyncs) -> None:
    """Every successful try of every sync here (the backfill's second tries, the manual and the subclass's run too)
    may not log an ERROR."""
    s = scheduled_syncs
    sync_logs, _ = sync_tries(s)
    assert len(sync_logs) == len(s.windows) + len(s.backfilled) + 2
    for key, events in sync_logs.items():
        errors = [e for e in events if str(e.get("level", "")).lower() in ("error", "critical")]
        errors += [e for e in events if re.search(r"\bERROR\b", str(e.get("event", "")))]
        assert errors == [], f"ERROR lines in the log of {key}"


def test_a_failed_try_says_why_first_and_whether_airflow_retries(scheduled_syncs: ScheduledSyncs) -> None:
    s = scheduled_syncs
    _, failed_tries = sync_tries(s)
    retried_runs = {s.sync_instance(window)["dag_run_id"] for window in s.retried}
    assert {run_id for _, run_id, _, _ in failed_tries} == retried_runs | {s.failed_run["dag_run_id"]}
    for (_, run_id, _, attempt), events in failed_tries.items():
        first = error_lines(events)[0]  # ours, before Airflow's own report of the exception
        if run_id == s.failed_run["dag_run_id"]:
            assert "pred-not-a-number" in first and "not a finite number" in first
            assert "retry" not in first  # bad input: Airflow does not retry it
        else:
            assert "Aporia" in first
            assert f"Airflow will retry the task (try {attempt} of up to 3); if it keeps failing, check" in first


def test_the_sync_views_counts_and_totals_are_what_aporia_holds(
    scheduled_syncs: ScheduledSyncs, stack: LocalStack
) -> None:
    s, lookback = scheduled_syncs, sync_lookback()
    [version] = [v for v in s.view if (v["model_id"], v["model_version"]) == (MODEL, "v1")]
    rows = {parse_time(w["window_start"]): w for w in version["windows"]}
    # Each window once on the timeline, the subclass's too; no gap, and the overlapping run apart.
    assert sorted(rows) == [start for start, _ in s.windows] + [s.failed_window[0], s.subclass_window[0]]
    assert version["gaps"] == [] and version["unplaced"] == []

    succeeded, failed_logs = sync_tries(s)
    held = [f for f in s.fragments if f["predictions"]]
    for start, end in s.windows:
        row = rows[start]
        predictions, actuals = seeded_rows(stack, start, end)
        reread_predictions, reread_actuals = seeded_rows(stack, start - lookback, start)
        in_aporia = [f for f in held if start <= parse_time(f["occurred_at"]) < end]
        assert row["state"] == "success" and row["failure"] is None
        assert row["predictions_in_window"] == len(in_aporia) == len(predictions), start
        assert row["actuals_in_window"] == len(actuals), start
        assert (row["predictions_reread"], row["actuals_reread"]) == (len(reread_predictions), len(reread_actuals))
        # Retries count the failed tries only; every earlier try, failed or replaced by the backfill, is listed.
        ti = s.sync_instance((start, end))
        # Its earlier tries, by their logs: True for one that delivered (the backfill re-ran it), False for a failure.
        earlier = {
            key[3]: key in succeeded
            for key in [*succeeded, *failed_logs]
            if key[1] == ti["dag_run_id"] and key[3] < ti["try_number"]
        }
        assert row["task_retries"] == sum(not ok for ok in earlier.values()), start
        others = [(o["try_number"], o["state"]) for o in row["other_syncs"] if o["run_id"] == ti["dag_run_id"]]
        assert others == [(n, "success" if earlier[n] else "failed") for n in sorted(earlier, reverse=True)], start
        assert (start, end) not in s.backfilled or ("success" in {state for _, state in others}), start

    # The manual run over [03:30, 04:30) is marked, and counted by the two windows it overlaps.
    [overlapping] = version["overlapping"]
    assert (parse_time(overlapping["window_start"]), parse_time(overlapping["window_end"])) == s.overlapping_window
    assert (overlapping["run_id"], overlapping["state"]) == (s.overlapping_run["dag_run_id"], "success")
    assert [(parse_time(o["start"]), parse_time(o["end"])) for o in overlapping["overlaps"]] == s.windows[3:5]

    # The subclass's window: found though its operator is not AporiaSyncOperator, with what Aporia holds of it.
    subclassed = rows[s.subclass_window[0]]
    assert (subclassed["dag_id"], subclassed["task_id"], subclassed["state"]) == (
        SUBCLASS_DAG,
        SUBCLASS_TASK,
        "success",
    )
    predictions, actuals = seeded_rows(stack, *s.subclass_window)
    in_aporia = [f for f in held if s.subclass_window[0] <= parse_time(f["occurred_at"]) < s.subclass_window[1]]
    assert subclassed["predictions_in_window"] == len(in_aporia) == len(predictions) > 0
    assert subclassed["actuals_in_window"] == len(actuals)

    # The totals count each row once, whatever the retries, the backfill and the overlapping run: what Aporia holds
    # for the span (the failed window delivered nothing).
    first, last = s.windows[0][0], s.subclass_window[1]
    delivered = [row for row in rows.values() if row["state"] == "success"]
    total = sum(row["predictions_in_window"] for row in delivered)
    assert total == len([f for f in held if first <= parse_time(f["occurred_at"]) < last])
    arrived = len(seeded_rows(stack, first, s.windows[-1][1])[1]) + len(seeded_rows(stack, *s.subclass_window)[1])
    assert sum(row["actuals_in_window"] for row in delivered) == arrived

    failed = rows[s.failed_window[0]]
    assert failed["state"] == "failed" and failed["rows_rejected"] == 1
    assert "not a finite number" in failed["failure"]
    assert failed["rejected_examples"] == ["predictions pred-not-a-number: amount: not a finite number"]


def test_the_syncs_report_their_figures_to_statsd(scheduled_syncs: ScheduledSyncs) -> None:
    """From the real runs, through Airflow's Stats to the session's StatsD listener."""
    s = scheduled_syncs
    succeeded, failed = sync_tries(s)

    def values(name: str, kind: str) -> list[float]:
        found = []
        for line in s.metrics:
            metric, _, rest = line.partition(":")
            if metric == f"airflow.aporia.sync.{name}" and rest.split("|")[1] == kind:
                found.append(float(rest.split("|")[0]))
        return found

    named = f"{MODEL}.v1"
    tries = len(succeeded) + len(failed)
    assert len(values(f"{named}.duration", "ms")) == len(values("duration", "ms")) == tries
    lags = values(f"{named}.lag_seconds", "g")
    assert len(lags) == len(succeeded) and all(lag > 0 for lag in lags)
    assert sum(values(f"{named}.failed", "c")) == len(failed)
    assert sum(values(f"{named}.rows_rejected", "c")) == 1  # the NaN
    # Every successful try delivered its whole read: the metric adds up the summaries' fragments_sent.
    sent = sum(int(summary_of(events)["fragments_sent"]) for events in succeeded.values())
    assert sum(values(f"{named}.fragments_sent", "c")) == sum(values("fragments_sent", "c")) == sent > 0
    assert sum(values(f"{named}.rows_read", "c")) >= sent
    assert sum(values(f"{named}.actuals_sent", "c")) > 0


def summary_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary a successful sync logged."""
    import ast

    [line] = [str(e["event"]) for e in events if "Sync summary" in str(e.get("event"))]
    summary: dict[str, Any] = ast.literal_eval(line.split(": ", 1)[1])
    return summary
