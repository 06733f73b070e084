"""Every hour, deliver the champion's and the challenger's predictions from one table, read once, to their versions.

A team running an A/B test keeps one predictions table with a version column. The demo's seeded table has none, so
the query derives one, sending the predictions with an even last digit to the champion, as a traffic split would.
Both versions share the example model's schema here; each version's own schema comes from Aporia.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable
from insurance_model import (
    ACTUALS,
    ACTUALS_TIMESTAMP_COLUMN,
    FEATURES,
    ID_COLUMN,
    MODEL_ID,
    MODEL_NAME,
    PREDICTIONS,
    RAW_INPUTS,
    TIMESTAMP_COLUMN,
)

from aporia_provider.operators.aporia import AporiaCreateModelOperator, AporiaCreateModelVersionOperator
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

VERSIONS = ["champion", "challenger"]
AB_QUERY = (
    "SELECT *, CASE WHEN RIGHT(prediction_id, 1) IN ('0', '2', '4', '6', '8') THEN 'champion' ELSE 'challenger' "
    "END AS model_version FROM model_predictions"
)

with DAG(
    dag_id="aporia_champion_challenger",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 20, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["aporia", "example"],
):
    # Creating a model or a version that exists with the same schema changes nothing.
    model = AporiaCreateModelOperator(task_id="create_model", model_id=MODEL_ID, model_name=MODEL_NAME)
    versions = [
        AporiaCreateModelVersionOperator(
            task_id=f"create_{version}",
            model_id=MODEL_ID,
            model_version=version,
            model_type="binary",
            raw_inputs=RAW_INPUTS,
            features=FEATURES,
            predictions=PREDICTIONS,
        )
        for version in VERSIONS
    ]
    sync = AporiaSyncOperator(
        task_id="sync_champion_and_challenger",
        model_id=MODEL_ID,
        model_version_column="model_version",
        model_versions=VERSIONS,
        query=AB_QUERY,
        id_column=ID_COLUMN,
        timestamp_column=TIMESTAMP_COLUMN,
        actuals=ACTUALS,
        actuals_timestamp_column=ACTUALS_TIMESTAMP_COLUMN,
        lookback=timedelta(minutes=15),
    )
    model >> versions >> sync
