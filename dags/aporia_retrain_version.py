"""Retraining-triggered version creation.

`aporia_train_model` stands in for a training pipeline: when it finishes it emits the
`trained-insurance-model` Asset with the new version's name in the event's extra.
`aporia_retrain_version` runs on that Asset. Airflow gives one run every event queued since the previous
run, so trainings that finish close together arrive together: the run creates (or confirms) one version
per event, in event order (`trained_version_names` also picks up events Airflow left attached to no run),
and connects each version's data sources.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import DAG, Asset, Param, task
from insurance_model import ACTUALS, FEATURES, ID_COLUMN, MODEL_ID, PREDICTIONS, QUERY, RAW_INPUTS, TIMESTAMP_COLUMN

from aporia_provider.assets.retraining import new_version_name, trained_version_names
from aporia_provider.operators.aporia import (
    AporiaConnectServingOperator,
    AporiaConnectTrainingOperator,
    AporiaCreateModelVersionOperator,
)

TRAINED_MODEL = Asset(name="trained-insurance-model", uri="s3://models/insurance-propensity/latest")
START = datetime(2026, 11, 1, tzinfo=timezone.utc)

with DAG(
    dag_id="aporia_train_model",
    schedule=None,
    start_date=START,
    catchup=False,
    params={
        "model_version": Param(
            "", type="string", description="The new version's name; empty: retrain-<this run's time>."
        )
    },
    tags=["aporia", "example"],
):

    @task(outlets=[TRAINED_MODEL])
    def train(**context: Any) -> str:
        # A real pipeline trains and uploads the model here, then names the version it produced (its model
        # registry id, say). Without a name, each training still gets a version of its own.
        version: str = context["params"]["model_version"] or new_version_name(context["dag_run"].run_after)
        context["outlet_events"][TRAINED_MODEL].extra = {"model_version": version}
        return version

    train()


def version_used(created: dict[str, Any]) -> str:
    """The version create_version settled on: the event's name, or the next free one if that was taken."""
    name: str = created["model_version"]
    return name


with DAG(
    dag_id="aporia_retrain_version",
    schedule=[TRAINED_MODEL],
    start_date=START,
    catchup=False,
    tags=["aporia", "example"],
):

    @task(inlets=[TRAINED_MODEL])
    def trained_versions(**context: Any) -> list[str]:
        return trained_version_names(context, TRAINED_MODEL)

    create_version = AporiaCreateModelVersionOperator.partial(
        task_id="create_version",
        model_id=MODEL_ID,
        model_type="binary",
        raw_inputs=RAW_INPUTS,
        features=FEATURES,
        predictions=PREDICTIONS,
        on_schema_change="new_version",
        # One at a time, in event order: a later event naming the same version then finds it and confirms it.
        max_active_tis_per_dagrun=1,
        map_index_template="{{ task.model_version }}",
    ).expand(model_version=trained_versions())

    versions = create_version.output.map(version_used)
    shared = {
        "model_id": MODEL_ID,
        "query": QUERY,
        "id_column": ID_COLUMN,
        "timestamp_column": TIMESTAMP_COLUMN,
        "labels": ACTUALS,
        "map_index_template": "{{ task.model_version }}",
    }
    AporiaConnectServingOperator.partial(task_id="connect_serving", **shared).expand(model_version=versions)
    AporiaConnectTrainingOperator.partial(task_id="connect_training", **shared).expand(model_version=versions)
