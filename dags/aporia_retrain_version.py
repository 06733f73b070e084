"""Retraining-triggered version creation.

`aporia_train_model` stands in for a training pipeline: when it finishes it emits the
`trained-insurance-model` Asset with the new version's name in the event's extra.
`aporia_retrain_version` runs on that Asset: it creates the version and connects its data sources.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import DAG, Asset, task
from insurance_model import ACTUALS, FEATURES, ID_COLUMN, MODEL_ID, PREDICTIONS, QUERY, RAW_INPUTS, TIMESTAMP_COLUMN

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
    params={"model_version": "v2"},
    tags=["aporia", "example"],
):

    @task(outlets=[TRAINED_MODEL])
    def train(**context: Any) -> str:
        # A real pipeline trains and uploads the model here, then names the version it produced.
        version: str = context["params"]["model_version"]
        context["outlet_events"][TRAINED_MODEL].extra = {"model_version": version}
        return version

    train()


with DAG(
    dag_id="aporia_retrain_version",
    schedule=[TRAINED_MODEL],
    start_date=START,
    catchup=False,
    tags=["aporia", "example"],
):

    @task(inlets=[TRAINED_MODEL])
    def new_version_name(**context: Any) -> str:
        # A run triggered by the Asset carries its event; a manual run takes the Asset's latest event.
        events = list(context["triggering_asset_events"].get(TRAINED_MODEL, [])) or list(
            context["inlet_events"][TRAINED_MODEL]
        )
        if not events:
            raise ValueError("No trained-insurance-model event yet; run aporia_train_model first.")
        name: str = events[-1].extra["model_version"]
        return name

    create_version = AporiaCreateModelVersionOperator(
        task_id="create_version",
        model_id=MODEL_ID,
        model_version=new_version_name(),
        model_type="binary",
        raw_inputs=RAW_INPUTS,
        features=FEATURES,
        predictions=PREDICTIONS,
        on_schema_change="new_version",
    )
    shared = {
        "model_id": MODEL_ID,
        # The version actually created (it differs from the event's name if that one was taken).
        "model_version": "{{ ti.xcom_pull(task_ids='create_version')['model_version'] }}",
        "query": QUERY,
        "id_column": ID_COLUMN,
        "timestamp_column": TIMESTAMP_COLUMN,
        "labels": ACTUALS,
    }
    create_version >> [
        AporiaConnectServingOperator(task_id="connect_serving", **shared),
        AporiaConnectTrainingOperator(task_id="connect_training", **shared),
    ]
