"""The example DAGs under the real scheduler, executor, task runner and API server (`airflow standalone`).

aporia_setup runs from a manual trigger; aporia_redshift_sync, unpaused, catches up six hourly windows by
itself; a backfill re-runs two of them. Everything is read back as a person would: through Airflow's REST API
and the local Aporia server's read-only views.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from aporia_local.stack import LocalStack
from tests.helpers import seeded_rows
from tests.integration.standalone import (
    SETUP_DAG,
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
    tries = {window: s.sync_instance(window)["try_number"] for window in s.windows}
    assert tries == {window: 2 if window in s.backfilled else 1 for window in s.windows}
    assert {s.sync_instance(window)["state"] for window in s.windows} == {"success"}


def test_aporia_holds_each_seeded_prediction_and_arrived_actual_of_the_windows_once(
    scheduled_syncs: ScheduledSyncs, stack: LocalStack
) -> None:
    s = scheduled_syncs
    # Each run reads its window widened by the DAG's lookback.
    predictions, actuals = seeded_rows(stack, s.windows[0][0] - sync_lookback(), s.windows[-1][1])
    assert predictions and actuals, "the windows hold no seeded data: the test would prove nothing"

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


def test_a_successful_syncs_log_has_no_error_line(scheduled_syncs: ScheduledSyncs) -> None:
    """Every try of every sync here succeeded (the backfill's second tries too): none may log an ERROR."""
    s = scheduled_syncs
    sync_logs = {key: log_events(text) for key, text in s.logs.items() if key[0] == SYNC_DAG}
    assert len(sync_logs) == len(s.windows) + len(s.backfilled)
    for key, events in sync_logs.items():
        assert any("Sync summary" in str(e.get("event")) for e in events), f"{key}: not the log of a sync"
        errors = [e for e in events if str(e.get("level", "")).lower() in ("error", "critical")]
        errors += [e for e in events if re.search(r"\bERROR\b", str(e.get("event", "")))]
        assert errors == [], f"ERROR lines in the log of {key}"
