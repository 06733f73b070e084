"""What both test tiers share: the Aporia probe, the Airflow CLI, the example model, sync shorthands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from aporia_local.cli import DEMO_START
from aporia_local.seed import SeedPlan

if TYPE_CHECKING:
    from aporia_local.stack import LocalStack
    from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

DAGS_FOLDER = Path(__file__).parent.parent / "dags"
# A line a task log shows as a warning or an error: structlog's level tag, or a bare level word as the JVM and
# log4j print it.
LOUD = re.compile(r"\[(warning|error|critical)\s*\]|\b(WARN|WARNING|ERROR|SEVERE|Exception)\b")
# Tests share the example DAGs' model definition, imported as Airflow imports it.
sys.path.insert(0, str(DAGS_FOLDER))


# Lines printed at the end of the test run (timings, where screenshots are), whatever pytest captured.
SESSION_NOTES: list[str] = []


def session_note(line: str) -> None:
    SESSION_NOTES.append(line)


class AporiaProbe:
    """Reads the local Aporia server's state, as a person would through its read-only endpoints."""

    def __init__(self, stack: LocalStack) -> None:
        self.base_url = stack.settings.aporia_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {stack.settings.aporia_token}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(self.base_url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = self.session.post(self.base_url + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def fragments(self, model_id: str, version: str, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while page := self.get(
            "/local/fragments",
            model_id=model_id,
            model_version=version,
            environment="production",
            limit=100_000,
            offset=len(found),
            **params,
        ):
            found.extend(page)
        return found

    def count(self, model_id: str, version: str, **params: Any) -> dict[str, int]:
        counts: dict[str, int] = self.get(
            "/local/fragments/count", model_id=model_id, model_version=version, environment="production", **params
        )
        return counts

    def fail_next(
        self,
        count: int,
        status: int = 503,
        path: str = "/v1/controller/graphql",
        delay: float = 0,
        operation: str | None = None,
    ) -> None:
        """The next `count` matching requests fail with `status` (or answer after `delay` seconds)."""
        body = {"path": path, "status": status, "count": count, "delay_seconds": delay, "operation": operation}
        self.post("/local/faults", body)

    def clear_faults(self) -> None:
        self.session.delete(self.base_url + "/local/faults", timeout=30).raise_for_status()

    def reset(self) -> None:
        self.post("/local/reset", {})


# Two days of hourly demo rows with the example DAGs' 768-wide embeddings.
SEED_PLAN = SeedPlan(DEMO_START, hours=48, rows_per_hour=6)


def redshift_sql(stack: LocalStack, sql: str, params: tuple[Any, ...] = ()) -> list[list[Any]]:
    """Run SQL as the master user; returns the rows of a SELECT (or [] for other statements)."""
    with stack.master_connection() as connection:
        cursor = connection.cursor()
        cursor.execute(sql, params or None)
        rows = [list(row) for row in cursor.fetchall()] if cursor.description else []
        connection.commit()
    return rows


def seeded_rows(stack: LocalStack, start: datetime, end: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seeded predictions whose timestamp, and the actuals whose arrival, fall in [start, end).

    Both map a prediction id to its actual value (did_buy_insurance); actuals that are null are never sent.
    """
    select = "SELECT prediction_id, did_buy_insurance FROM model_predictions WHERE "
    predictions = redshift_sql(stack, select + "prediction_timestamp >= %s AND prediction_timestamp < %s", (start, end))
    actuals = redshift_sql(
        stack,
        select + "actual_timestamp >= %s AND actual_timestamp < %s AND did_buy_insurance IS NOT NULL",
        (start, end),
    )
    return {row[0]: row[1] for row in predictions}, {row[0]: row[1] for row in actuals}


class AirflowCli:
    """The real `airflow` CLI against a private SQLite metadata database and the repo's dags/."""

    def __init__(self, airflow_env: dict[str, str]) -> None:
        self.env = {**os.environ, **airflow_env, "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER)}
        self.binary = str(Path(sys.executable).parent / "airflow")

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def dags_test(self, dag_id: str, logical_date: datetime) -> str:
        """`airflow dags test` of one run; its stdout and stderr as one stream, in order, as the task runner captures
        them (a failed run fails the test)."""
        done = subprocess.run(
            [self.binary, "dags", "test", dag_id, logical_date.isoformat()],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
            check=True,
        )
        return done.stdout

    def start(self, *args: str, output: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a command in its own process group, so a test can kill it with everything it spawned.

        Its output goes to `output` when given (to read when something goes wrong), else nowhere.
        """
        with open(output or os.devnull, "wb") as sink:
            return subprocess.Popen(
                [self.binary, *args],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


MODEL = "insurance-propensity"


def version_args(**changes: Any) -> dict[str, Any]:
    """AporiaCreateModelVersionOperator arguments for the example model's v1."""
    import insurance_model as example

    return {
        "model_version": "v1",
        "model_type": "binary",
        "raw_inputs": example.RAW_INPUTS,
        "features": example.FEATURES,
        "predictions": example.PREDICTIONS,
    } | changes


def sync_operator(window: tuple[datetime, datetime] | None, **kwargs: Any) -> AporiaSyncOperator:
    """AporiaSyncOperator for the example model (predictions and actuals) over `window`; kwargs override."""
    import insurance_model as example

    from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

    arguments: dict[str, Any] = {
        "task_id": "sync",
        "model_id": MODEL,
        "model_version": "v1",
        "query": example.QUERY,
        "id_column": example.ID_COLUMN,
        "timestamp_column": example.TIMESTAMP_COLUMN,
        "actuals": example.ACTUALS,
        "actuals_timestamp_column": example.ACTUALS_TIMESTAMP_COLUMN,
        "num_partitions": 2,
    }
    if window:
        arguments |= {"window_start": window[0].isoformat(), "window_end": window[1].isoformat()}
    return AporiaSyncOperator(**(arguments | kwargs))


def sync(window: tuple[datetime, datetime], **kwargs: Any) -> dict[str, Any]:
    """Run one sync of `window` in this process; returns its summary."""
    summary: dict[str, Any] = sync_operator(window, **kwargs).execute({})
    return summary


def assert_delivered_exactly(stack: LocalStack, aporia: AporiaProbe, start: datetime, end: datetime) -> None:
    """Aporia holds each prediction of [start, end) once, with its values, and each actual that arrived
    in [start, end) on its own prediction; nothing else."""
    seeded = redshift_sql(
        stack,
        "SELECT prediction_id, prediction_timestamp, amount, proba, did_buy_insurance, actual_timestamp "
        "FROM model_predictions WHERE (prediction_timestamp >= %s AND prediction_timestamp < %s) "
        "OR (actual_timestamp >= %s AND actual_timestamp < %s)",
        (start, end, start, end),
    )
    stored = aporia.fragments(MODEL, "v1")
    ids = [f["id"] for f in stored]
    assert len(ids) == len(set(ids)), "a prediction id is stored twice"
    by_id = {f["id"]: f for f in stored}
    predicted = {row[0]: row for row in seeded if start <= row[1] < end}
    arrived = {row[0]: row for row in seeded if row[5] is not None and start <= row[5] < end}
    assert {i for i, f in by_id.items() if f["predictions"]} == set(predicted), "predictions lost or extra"
    assert {i for i, f in by_id.items() if f["actuals"]} == set(arrived), "actuals lost or extra"
    for prediction_id, row in predicted.items():
        fragment = by_id[prediction_id]
        assert fragment["features"]["amount"] == pytest.approx(row[2])
        assert fragment["predictions"]["proba"] == pytest.approx(row[3])
    for prediction_id, row in arrived.items():
        assert by_id[prediction_id]["actuals"] == {"will_buy_insurance": row[4]}


# The seed's first hour (six rows an hour, row n at SEED_START + n * 10 minutes) and seeded prediction ids.
SEED_START = datetime(2026, 11, 20, tzinfo=timezone.utc)
NOTHING_SENT = "; nothing was sent: fix the rows or the mapping, or pass on_invalid_rows='skip'."


def invalid_rows(count: int) -> str:
    """How a rejection opens: "1 invalid row", "5 invalid rows"."""
    return "1 invalid row" if count == 1 else f"{count:,} invalid rows"


PREDICTIONS_ONLY: dict[str, Any] = {"actuals": None, "actuals_timestamp_column": None, "num_partitions": 1}


def row_id(n: int) -> str:
    return f"pred-{n:010d}"


def sync_predictions(window: tuple[datetime, datetime], **kwargs: Any) -> dict[str, Any]:
    """One sync of the window; predictions only unless the case passes actuals."""
    return sync(window, **(PREDICTIONS_ONLY | kwargs))
