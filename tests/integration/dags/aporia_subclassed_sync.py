"""A sync whose task is a team's own subclass of AporiaSyncOperator: the sync view must show its windows too.

Put beside the example DAGs for the real-scheduler tier (tests/integration/standalone.py); triggered with the
bounds of one window.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Param
from insurance_model import ACTUALS, ACTUALS_TIMESTAMP_COLUMN, ID_COLUMN, MODEL_ID, QUERY, TIMESTAMP_COLUMN

from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator


class TeamSync(AporiaSyncOperator):
    """The provider's sync under the team's own name, as teams wrap operators."""


with DAG(
    dag_id="aporia_subclassed_sync",
    schedule=None,
    start_date=datetime(2026, 11, 20, tzinfo=timezone.utc),
    params={
        "window_start": Param(None, type=["null", "string"], format="date-time"),
        "window_end": Param(None, type=["null", "string"], format="date-time"),
    },
):
    TeamSync(
        task_id="team_sync",
        model_id=MODEL_ID,
        model_version="v1",
        query=QUERY,
        id_column=ID_COLUMN,
        timestamp_column=TIMESTAMP_COLUMN,
        actuals=ACTUALS,
        actuals_timestamp_column=ACTUALS_TIMESTAMP_COLUMN,
        window_start="{{ params.window_start or '' }}",
        window_end="{{ params.window_end or '' }}",
    )
