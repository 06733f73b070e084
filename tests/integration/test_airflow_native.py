"""What Airflow keeps of a sync run by the real Airflow against the local stack: the extra link, the Asset event
with its extra, OpenLineage events (through the OpenLineage provider's file transport), and manual triggers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import insurance_model as example
import pytest

from aporia_local.seed import SeedPlan
from aporia_local.stack import LocalStack
from tests.helpers import DAGS_FOLDER, AirflowCli, AporiaProbe, redshift_sql

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")
SYNC_DAG, SYNC_TASK = "aporia_redshift_sync", "sync_predictions_and_actuals"
ASSET_URI = f"aporia://models/{example.MODEL_ID}/versions/v1"
LOOKBACK = timedelta(minutes=15)  # the example DAG's


def metadata(cli: AirflowCli, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of Airflow's metadata database (SQLite, in the session's AIRFLOW_HOME)."""
    with sqlite3.connect(Path(cli.env["AIRFLOW_HOME"]) / "airflow.db") as db:
        return db.execute(sql, params).fetchall()


def asset_events(cli: AirflowCli, run_id_like: str = "%") -> list[dict[str, Any]]:
    rows = metadata(
        cli,
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.uri = ? AND e.source_dag_id = ? AND e.source_run_id LIKE ? ORDER BY e.id",
        (ASSET_URI, SYNC_DAG, run_id_like),
    )
    return [json.loads(extra) for (extra,) in rows]


def predictions(stack: LocalStack, start: datetime, end: datetime) -> set[str]:
    rows = redshift_sql(
        stack,
        "SELECT prediction_id FROM model_predictions WHERE prediction_timestamp >= %s AND prediction_timestamp < %s",
        (start, end),
    )
    return {row[0] for row in rows}


def test_a_sync_run_leaves_links_an_asset_event_and_lineage(
    airflow_cli: AirflowCli,
    airflow_env: dict[str, str],
    aporia: AporiaProbe,
    stack: LocalStack,
    seeded: SeedPlan,
    tmp_path: Path,
) -> None:
    lineage_file = tmp_path / "openlineage.json"
    transport = {"type": "file", "log_file_path": str(lineage_file), "append": True}
    cli = AirflowCli(airflow_env | {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport)})
    cli("dags", "test", "aporia_setup")
    start = seeded.start + timedelta(hours=30)
    end = start + timedelta(hours=1)
    cli("dags", "test", SYNC_DAG, end.isoformat())
    sent = predictions(stack, start - LOOKBACK, end)
    assert {f["id"] for f in aporia.fragments(example.MODEL_ID, "v1") if f["predictions"]} == sent

    # The extra link, as Airflow 3 stores it for the UI when each task ends.
    page = f"{stack.settings.aporia_url}/models/{example.MODEL_ID}/versions/v1"
    links = metadata(cli, "SELECT dag_id, task_id, value FROM xcom WHERE key = '_link_AporiaModelVersionLink'")
    assert sorted((dag, task, json.loads(value)) for dag, task, value in links) == [
        (SYNC_DAG, SYNC_TASK, page),
        ("aporia_setup", "connect_serving", page),
        ("aporia_setup", "connect_training", page),
        ("aporia_setup", "create_version", page),
    ]

    # The Asset event, with what the run delivered.
    [event] = asset_events(cli)
    actuals = aporia.count(example.MODEL_ID, "v1")["with_actuals"]
    assert event == {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "rows": len(sent),
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
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == len(sent)
    connect_run = completed["aporia_setup.connect_serving"]
    assert [(d["namespace"], d["name"]) for d in connect_run["inputs"]] == [redshift]
    assert [(d["namespace"], d["name"]) for d in connect_run["outputs"]] == [aporia_version]


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
    airflow_cli: AirflowCli, aporia: AporiaProbe, stack: LocalStack, seeded: SeedPlan
) -> None:
    airflow_cli("dags", "test", "aporia_setup")
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
    windows = [(e["window_start"], e["window_end"]) for e in asset_events(airflow_cli, "manual__%")]
    assert windows[-2:] == [
        (last_hour[0].isoformat(), last_hour[1].isoformat()),
        (typed[0].isoformat(), typed[1].isoformat()),
    ]
