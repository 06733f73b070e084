"""One engine, three Spark deployments: local[*], a standalone cluster, and the stack's Spark Connect server.

Each sync runs in its own process, as an Airflow task does (a process holds one kind of Spark session), and
each must leave the window's predictions and arrived actuals in Aporia exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aporia_local.spark import StandaloneCluster
from aporia_local.stack import LocalStack
from tests.helpers import LOUD, AporiaProbe, assert_delivered_exactly

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded", "version")
ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 11, 21, 3, tzinfo=timezone.utc)
WINDOW = (START, START + timedelta(hours=3))
# Runs one sync with the operator arguments given as JSON; prints its summary as the last line.
_SYNC = (
    "import json, sys; from tests.helpers import sync; from datetime import datetime; "
    "arguments = json.loads(sys.argv[1]); "
    "window = tuple(datetime.fromisoformat(t) for t in arguments.pop('window')); "
    "print(json.dumps(sync(window, **arguments)))"
)


def sync_in_own_process(airflow_env: dict[str, str], **arguments: Any) -> dict[str, Any]:
    arguments["window"] = [moment.isoformat() for moment in WINDOW]
    done = subprocess.run(
        [sys.executable, "-c", _SYNC, json.dumps(arguments)],
        cwd=ROOT,
        env={**os.environ, **airflow_env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Neither Spark nor its JVM writes a warning or an error on a successful sync, wherever Spark runs.
    # (Airflow warns that execute() runs outside its task runner: that is this test calling it directly.)
    output = (done.stdout + done.stderr).splitlines()
    loud = [line for line in output if LOUD.search(line) and "outside of the Task Runner" not in line]
    assert loud == []
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.parametrize("spark", ["local", "standalone", "connect"])
def test_each_spark_deployment_delivers_the_window_exactly_once(
    spark: str,
    request: pytest.FixtureRequest,
    stack: LocalStack,
    aporia: AporiaProbe,
    airflow_env: dict[str, str],
) -> None:
    # spark_min_rows=0: this small window goes to Spark, as large ones do; its read partitions follow the cores
    # the executors offer (no num_partitions), asked the same way on every deployment.
    arguments: dict[str, Any] = {"spark_min_rows": 0}
    env = dict(airflow_env)
    if spark == "standalone":
        conn_id = request.getfixturevalue("spark_standalone_conn")
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"]
        arguments["spark_conn_id"] = conn_id
    elif spark == "connect":
        arguments["spark_conn_id"] = "spark_connect_default"
    first = sync_in_own_process(env, **arguments)
    again = sync_in_own_process(env, **arguments)  # a re-run, as a retry or backfill would do
    assert first["rows_read"] == again["rows_read"] == first["fragments_sent"] == 18
    assert first["rows_rejected"] == 0
    assert_delivered_exactly(stack, aporia, *WINDOW)


def test_a_spark_connections_short_settings_reach_spark_without_a_warning(
    spark_cluster: StandaloneCluster, aporia: AporiaProbe, stack: LocalStack, airflow_env: dict[str, str]
) -> None:
    """A `spark` connection's extras are Spark settings, not secrets: a one-core cap ("1", as a shared cluster's
    connection has) used to reach Airflow's secret masker, which warned that it was too short to mask."""
    conn_id = "spark_one_core"
    connection = spark_cluster.connection()
    connection["extra"] = {**connection["extra"], "spark.cores.max": "1", "spark.executor.cores": "1"}
    env = {**airflow_env, f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}
    summary = sync_in_own_process(env, spark_min_rows=0, spark_conn_id=conn_id)  # asserts no WARNING line
    assert (summary["rows_read"], summary["fragments_sent"], summary["rows_rejected"]) == (18, 18, 0)
    assert_delivered_exactly(stack, aporia, *WINDOW)
