"""Register the model and version v1 in Aporia and connect its serving and training data in Redshift."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG
from insurance_model import (
    ACTUALS,
    FEATURES,
    ID_COLUMN,
    MODEL_ID,
    MODEL_NAME,
    PREDICTIONS,
    QUERY,
    RAW_INPUTS,
    TIMESTAMP_COLUMN,
)

from aporia_provider.operators.aporia import (
    AporiaConnectServingOperator,
    AporiaConnectTrainingOperator,
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
)

with DAG(
    dag_id="aporia_setup",
    schedule=None,
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["aporia", "example"],
):
    create_model = AporiaCreateModelOperator(task_id="create_model", model_id=MODEL_ID, model_name=MODEL_NAME)
    create_version = AporiaCreateModelVersionOperator(
        task_id="create_version",
        model_id=MODEL_ID,
        model_version="v1",
        model_type="binary",
        raw_inputs=RAW_INPUTS,
        features=FEATURES,
        predictions=PREDICTIONS,
    )
    shared = {
        "model_id": MODEL_ID,
        "model_version": "v1",
        "query": QUERY,
        "id_column": ID_COLUMN,
        "timestamp_column": TIMESTAMP_COLUMN,
        "labels": ACTUALS,
    }
    connect_serving = AporiaConnectServingOperator(task_id="connect_serving", **shared)
    connect_training = AporiaConnectTrainingOperator(task_id="connect_training", **shared)

    create_model >> create_version >> [connect_serving, connect_training]
