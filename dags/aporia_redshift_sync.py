"""Every hour, deliver that hour's predictions and the delayed actuals that arrived in it to Aporia."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param
from airflow.timetables.interval import CronDataIntervalTimetable
from insurance_model import ACTUALS, ACTUALS_TIMESTAMP_COLUMN, ID_COLUMN, MODEL_ID, QUERY, TIMESTAMP_COLUMN

from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

with DAG(
    dag_id="aporia_redshift_sync",
    # A data-interval timetable: each run covers [start, end) of one hour. The default cron timetable
    # gives zero-width intervals, which the sync refuses.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 20, tzinfo=timezone.utc),
    catchup=True,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["aporia", "example"],
    # Pressing Trigger syncs the last complete hour; or type the bounds of another window here.
    params={
        "window_start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Window start",
            description="Leave both empty to sync the last complete hour before the trigger.",
        ),
        "window_end": Param(None, type=["null", "string"], format="date-time", title="Window end"),
        # With a Spark connection, windows of 1,000,000 rows or more (spark_min_rows' default) go to its cluster or
        # Connect server; smaller ones, like the demo's hourly windows, are read by the task itself.
        "spark_conn_id": Param(
            "spark_connect_default",
            type=["null", "string"],
            title="Spark connection",
            description="Where windows of 1,000,000 rows or more run: a spark or spark_connect connection; empty: "
            "the task reads every window itself. Smaller windows are read by the task without Spark.",
        ),
    },
):
    AporiaSyncOperator(
        task_id="sync_predictions_and_actuals",
        model_id=MODEL_ID,
        model_version="v1",
        query=QUERY,
        id_column=ID_COLUMN,
        timestamp_column=TIMESTAMP_COLUMN,
        actuals=ACTUALS,
        actuals_timestamp_column=ACTUALS_TIMESTAMP_COLUMN,
        # Rows that land up to 15 minutes late are picked up by the next run; ids make it idempotent.
        lookback=timedelta(minutes=15),
        # Empty unless a person typed bounds into the trigger form: then the run's interval decides.
        window_start="{{ params.window_start or '' }}",
        window_end="{{ params.window_end or '' }}",
        spark_conn_id="{{ params.spark_conn_id or '' }}",
    )
