"""The example DAGs, end to end with the real `airflow dags test` against the local stack."""

from __future__ import annotations

from datetime import timedelta

import insurance_model as example
import pytest
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
