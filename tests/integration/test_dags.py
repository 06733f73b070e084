"""The example DAGs, end to end with the real Airflow against the local stack: what they deliver to Aporia, and what
Airflow keeps of the runs (extra links, Asset events, OpenLineage events), manual triggers included."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import insurance_model as example
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from aporia_local.seed import SeedPlan
from aporia_local.stack import LocalStack
from tests.helpers import DAGS_FOLDER, LOUD, AirflowCli, AporiaProbe, redshift_sql

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")
SYNC_DAG, SYNC_TASK = "aporia_redshift_sync", "sync_predictions_and_actuals"
ASSET_URI = f"aporia://models/{example.MODEL_ID}/versions/v1"
LOOKBACK = timedelta(minutes=15)  # the example DAG's


def test_the_dags_import_cleanly_with_interval_schedules() -> None:
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "aporia_setup",
        "aporia_redshift_sync",
        "aporia_champion_challenger",
        "aporia_train_model",
        "aporia_retrain_version",
    }
    sync = bag.dags["aporia_redshift_sync"]
    assert sync.catchup is True
    assert type(sync.timetable).__name__ == "CronDataIntervalTimetable"


def test_setup_then_hourly_sync(
    airflow_cli: AirflowCli,
    airflow_env: dict[str, str],
    aporia: AporiaProbe,
    stack: LocalStack,
    seeded: SeedPlan,
    tmp_path: Path,
) -> None:
    # The OpenLineage provider writes its events to a file, read below.
    lineage_file = tmp_path / "openlineage.json"
    transport = {"type": "file", "log_file_path": str(lineage_file), "append": True}
    airflow_cli = AirflowCli(airflow_env | {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport)})
    since = high_water(airflow_cli)
    airflow_cli("dags", "test", "aporia_setup")
    assert [m["id"] for m in aporia.get("/v1beta/models")] == [example.MODEL_ID]
    datasets = aporia.get(f"/v1beta/models/{example.MODEL_ID}/versions/v1/datasets")
    assert sorted(d["name"] for d in datasets) == ["serving", "training"]

    # An interval timetable's run for [start, end) is the one that runs after `end`.
    start = seeded.start + timedelta(hours=30)
    end = start + timedelta(hours=1)
    airflow_cli("dags", "test", "aporia_redshift_sync", end.isoformat())
    lookback_start = start - timedelta(minutes=15)
    expected = redshift_sql(
        stack,
        "SELECT prediction_id FROM model_predictions WHERE prediction_timestamp >= %s AND prediction_timestamp < %s",
        (lookback_start, end),
    )
    stored = aporia.fragments(example.MODEL_ID, "v1")
    assert {f["id"] for f in stored if f["predictions"]} == {row[0] for row in expected}

    # The extra link, as Airflow 3 stores it for the UI when each task ends.
    page = f"{stack.settings.aporia_url}/models/{example.MODEL_ID}/versions/v1"
    links = metadata(
        airflow_cli,
        "SELECT x.dag_id, x.task_id, x.value FROM xcom x JOIN dag_run r ON r.dag_id = x.dag_id AND r.run_id = x.run_id "
        "WHERE x.key = '_link_AporiaModelVersionLink' AND r.id > ?",
        (since[0],),
    )
    assert sorted((dag, task, json.loads(value)) for dag, task, value in links) == [
        (SYNC_DAG, SYNC_TASK, page),
        ("aporia_setup", "connect_serving", page),
        ("aporia_setup", "connect_training", page),
        ("aporia_setup", "create_version", page),
    ]

    # The Asset event, with what the run delivered.
    [event] = asset_events(airflow_cli, since)
    actuals = aporia.count(example.MODEL_ID, "v1")["with_actuals"]
    assert event == {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "rows": len(expected),
        "actuals": actuals,
    }

    # OpenLineage: Redshift in (the Amazon provider's namespace for the IAM cluster), Aporia out.
    completed = {
        e["job"]["name"]: e
        for e in map(json.loads, lineage_file.read_text().splitlines())
        if e.get("eventType") == "COMPLETE"
    }
    redshift = (f"redshift://aporia-demo.us-east-1:{stack.settings.redshift_port}", "dev.public.model_predictions")
    aporia_version = (f"aporia://127.0.0.1:{stack.settings.aporia_port}", f"{example.MODEL_ID}/v1")
    sync_run = completed[f"{SYNC_DAG}.{SYNC_TASK}"]
    assert [(d["namespace"], d["name"]) for d in sync_run["inputs"]] == [redshift]
    [output] = sync_run["outputs"]
    assert (output["namespace"], output["name"]) == aporia_version
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == len(expected)
    connect_run = completed["aporia_setup.connect_serving"]
    assert [(d["namespace"], d["name"]) for d in connect_run["inputs"]] == [redshift]
    assert [(d["namespace"], d["name"]) for d in connect_run["outputs"]] == [aporia_version]


def test_retraining_creates_v2_from_an_asset_event(airflow_cli: AirflowCli, aporia: AporiaProbe) -> None:
    airflow_cli("dags", "test", "aporia_setup")
    airflow_cli("dags", "test", "aporia_train_model", "-c", '{"model_version": "v2"}')
    airflow_cli("dags", "test", "aporia_retrain_version")
    versions = [v["name"] for v in aporia.get(f"/v1beta/models/{example.MODEL_ID}/versions")]
    assert versions == ["v1", "v2"]
    datasets = aporia.get(f"/v1beta/models/{example.MODEL_ID}/versions/v2/datasets")
    assert sorted(d["name"] for d in datasets) == ["serving", "training"]


def test_training_events_that_arrive_together_each_get_their_version(
    airflow_env: dict[str, str], version: str, aporia: AporiaProbe, tmp_path: Path
) -> None:
    """Two trainings finish before the real scheduler looks: the retrain run makes a version for each, in order.

    Airflow 3.3 attaches only the first event to the run and leaves the second waiting for a later event
    (apache/airflow#54659); the run handles it too. The second training names no version, so it gets a new one
    from its own time rather than an existing name.
    """
    api_port = _free_port()
    cli = AirflowCli(
        airflow_env
        | {
            # A home of its own: the scheduler must see only this test's events and runs.
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
            # Unit-test mode would unpause every DAG (the hourly sync would start its catch-up) and make the
            # scheduler spin without sleeping.
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # The scheduler signs the tasks' tokens and the API server checks them: one secret for both.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
        }
    )
    cli("db", "migrate")
    cli("dags", "reserialize")
    cli("dags", "unpause", "aporia_retrain_version")
    api = f"http://127.0.0.1:{api_port}/api/v2"
    with _daemon(cli, tmp_path, "api-server", "--host", "127.0.0.1", "--port", str(api_port)):
        # The trainings run inside `dags test`, which needs no API server, while the API server starts.
        cli("dags", "test", "aporia_train_model", "-c", '{"model_version": "v3"}')
        cli("dags", "test", "aporia_train_model")
        # Tasks report to the API server, so it must answer before the scheduler hands any out.
        _wait_until_answering(f"{api}/monitor/health", tmp_path)
        with _daemon(cli, tmp_path, "scheduler"):
            runs = _wait_for_finished_runs(api, "aporia_retrain_version", tmp_path)
        events = requests.get(
            f"{api}/assets/events", params={"source_dag_id": "aporia_train_model", "order_by": "timestamp"}, timeout=30
        ).json()["asset_events"]
    assert [(run["state"], run["run_type"]) for run in runs] == [("success", "asset_triggered")]
    named = [event["extra"]["model_version"] for event in events]
    assert len(named) == 2 and named[0] == "v3"
    assert re.fullmatch(r"retrain-\d{8}-\d{6}\.\d{3}", named[1])

    versions = [v["name"] for v in aporia.get(f"/v1beta/models/{example.MODEL_ID}/versions")]
    assert versions == [version, *named]
    for name in named:
        datasets = aporia.get(f"/v1beta/models/{example.MODEL_ID}/versions/{name}/datasets")
        assert sorted(d["name"] for d in datasets) == ["serving", "training"]
    log = next((tmp_path / "airflow-home" / "logs").glob("**/task_id=trained_versions/**/*.log")).read_text()
    for number, name in enumerate(named, 1):
        assert f"Training event {number} of 2, from aporia_train_model run " in log
        assert f": version {name}" in log


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def _daemon(cli: AirflowCli, directory: Path, *args: str) -> Iterator[None]:
    """An Airflow component running for the length of the block; its output in <directory>/<component>.out."""
    process = cli.start(*args, output=directory / f"{args[0]}.out")
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until_answering(url: str, directory: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=10).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout:g} s\n{_outputs(directory)}")


def _wait_for_finished_runs(api: str, dag_id: str, directory: Path, timeout: float = 420) -> list[dict[str, Any]]:
    """The DAG's runs once at least one exists and none is still queued or running."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = requests.get(f"{api}/dags/{dag_id}/dagRuns", timeout=30).json()["dag_runs"]
        if runs and all(run["state"] in ("success", "failed") for run in runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"{dag_id} runs did not finish within {timeout:g} s: {runs}\n{_outputs(directory)}")


def _outputs(directory: Path) -> str:
    """The end of each daemon's output, for a failure message."""
    return "\n".join(f"{path.name}:\n{path.read_text()[-3000:]}" for path in sorted(directory.glob("*.out")))


def metadata(cli: AirflowCli, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of Airflow's metadata database (SQLite, in the session's AIRFLOW_HOME)."""
    with sqlite3.connect(Path(cli.env["AIRFLOW_HOME"]) / "airflow.db") as db:
        return db.execute(sql, params).fetchall()


def high_water(cli: AirflowCli) -> tuple[int, int]:
    """The last DAG run and Asset event so far: the session shares one metadata database between tests."""
    [(runs, events)] = metadata(
        cli, "SELECT (SELECT COALESCE(MAX(id), 0) FROM dag_run), (SELECT COALESCE(MAX(id), 0) FROM asset_event)"
    )
    return runs, events


def asset_events(
    cli: AirflowCli, since: tuple[int, int], uri: str = ASSET_URI, dag_id: str = SYNC_DAG
) -> list[dict[str, Any]]:
    rows = metadata(
        cli,
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.uri = ? AND e.source_dag_id = ? AND e.id > ? ORDER BY e.id",
        (uri, dag_id, since[1]),
    )
    return [json.loads(extra) for (extra,) in rows]


def test_champion_and_challenger_from_one_table(
    airflow_cli: AirflowCli, aporia: AporiaProbe, stack: LocalStack, seeded: SeedPlan
) -> None:
    """The example DAG of two versions: each version's rows exactly once, none crossing over, an Asset event each,
    and a task log without a WARNING."""
    since = high_water(airflow_cli)
    start = seeded.start + timedelta(hours=10)
    end = start + timedelta(hours=1)
    output = airflow_cli.dags_test("aporia_champion_challenger", end)
    task = "sync_champion_and_challenger"
    log = output[output.index(f"starting task_id={task}") : output.index(f"end task task_id={task}")]
    assert [line for line in log.splitlines() if LOUD.search(line) and "starlette.testclient" not in line] == []
    assert "one read for the 2 versions" in log
    read = predictions(stack, start - LOOKBACK, end)
    even = {i for i in read if i[-1] in "02468"}
    for version, expected in (("champion", even), ("challenger", read - even)):
        stored = [f["id"] for f in aporia.fragments(example.MODEL_ID, version) if f["predictions"]]
        assert sorted(stored) == sorted(expected), version
        uri = f"aporia://models/{example.MODEL_ID}/versions/{version}"
        [event] = asset_events(airflow_cli, since, uri, "aporia_champion_challenger")
        assert (event["window_start"], event["rows"]) == (start.isoformat(), len(expected))


def predictions(stack: LocalStack, start: datetime, end: datetime) -> set[str]:
    rows = redshift_sql(
        stack,
        "SELECT prediction_id FROM model_predictions WHERE prediction_timestamp >= %s AND prediction_timestamp < %s",
        (start, end),
    )
    return {row[0] for row in rows}


MANUAL_RUNS = """
import sys
from datetime import datetime
from airflow.dag_processing.dagbag import DagBag

sys.path.insert(0, sys.argv[1])  # the DAGs import their shared model from beside them
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag("aporia_redshift_sync")
# As the UI's Trigger button in Airflow 3: no logical date, hence no data interval.
dag.test(logical_date=None, run_after=datetime.fromisoformat(sys.argv[2]))
# The same with bounds typed into the trigger form.
dag.test(logical_date=None, run_after=datetime.fromisoformat(sys.argv[3]), run_conf=dict(
    window_start=sys.argv[4], window_end=sys.argv[5]))
"""


def test_a_manual_trigger_syncs_the_last_complete_hour_or_the_typed_window(
    airflow_cli: AirflowCli, aporia: AporiaProbe, stack: LocalStack, seeded: SeedPlan, version: str
) -> None:
    since = high_water(airflow_cli)
    hour_end = seeded.start + timedelta(hours=20)
    triggered = hour_end + timedelta(minutes=25)
    typed = (seeded.start + timedelta(hours=40), seeded.start + timedelta(hours=42))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            MANUAL_RUNS,
            str(DAGS_FOLDER),
            triggered.isoformat(),
            (triggered + timedelta(minutes=1)).isoformat(),
            typed[0].isoformat(),
            typed[1].isoformat(),
        ],
        env=airflow_cli.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    last_hour = (hour_end - timedelta(hours=1), hour_end)
    expected = predictions(stack, last_hour[0] - LOOKBACK, last_hour[1]) | predictions(
        stack, typed[0] - LOOKBACK, typed[1]
    )
    assert {f["id"] for f in aporia.fragments(example.MODEL_ID, "v1") if f["predictions"]} == expected
    windows = [(e["window_start"], e["window_end"]) for e in asset_events(airflow_cli, since)]
    assert windows == [
        (last_hour[0].isoformat(), last_hour[1].isoformat()),
        (typed[0].isoformat(), typed[1].isoformat()),
    ]
