"""The example DAGs, end to end with the real `airflow dags test` against the local stack."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import insurance_model as example
import pytest
import requests
from airflow.dag_processing.dagbag import DagBag

from aporia_local.seed import SeedPlan
from aporia_local.stack import LocalStack
from tests.helpers import DAGS_FOLDER, AirflowCli, AporiaProbe, redshift_sql

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")


def test_the_dags_import_cleanly_with_interval_schedules() -> None:
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"aporia_setup", "aporia_redshift_sync", "aporia_train_model", "aporia_retrain_version"}
    sync = bag.dags["aporia_redshift_sync"]
    assert sync.catchup is True
    assert type(sync.timetable).__name__ == "CronDataIntervalTimetable"


def test_setup_then_hourly_sync(
    airflow_cli: AirflowCli, aporia: AporiaProbe, stack: LocalStack, seeded: SeedPlan
) -> None:
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
