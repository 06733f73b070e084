"""Spark in the local stack: its Spark Connect server and the session's standalone cluster read the
Redshift stand-in over JDBC, with the temporary credentials an IAM user gets; SUPER arrives as JSON text.

The Spark clients run in processes of their own (tests/integration/spark_jobs.py), as a sync task does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

from aporia_local.aws import REGION
from aporia_local.seed import SeedPlan, embedding_value
from aporia_local.spark import POSTGRES_JDBC_JAR, StandaloneCluster
from aporia_local.stack import CLUSTER_ID, DATABASE, DB_USER, LocalStack
from tests.helpers import redshift_sql

ROOT = Path(__file__).resolve().parent.parent.parent
# What would choose the Python or the Spark of a job for it: the jobs must get them from their cluster.
SPARK_CLIENT_SETTINGS = (
    "PYSPARK_PYTHON",
    "PYSPARK_DRIVER_PYTHON",
    "SPARK_HOME",
    "SPARK_REMOTE",
    "SPARK_CONNECT_MODE_ENABLED",
)


def run_job(job: str, extra_env: dict[str, str] | None = None, **arguments: Any) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in SPARK_CLIENT_SETTINGS} | (extra_env or {})
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.spark_jobs", job, json.dumps(arguments)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{job} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def reader_jdbc(stack: LocalStack) -> dict[str, str]:
    """Spark JDBC options with the temporary credentials GetClusterCredentials gives the stack's IAM user."""
    s = stack.settings
    redshift = boto3.client(
        "redshift",
        endpoint_url=s.aws_url,
        region_name=REGION,
        aws_access_key_id=s.aws_access_key_id,
        aws_secret_access_key=s.aws_secret_access_key,
    )
    creds = redshift.get_cluster_credentials(  # type: ignore[attr-defined]
        DbUser=DB_USER, DbName=DATABASE, ClusterIdentifier=CLUSTER_ID, DurationSeconds=900, AutoCreate=False
    )
    return {
        "url": f"jdbc:postgresql://127.0.0.1:{s.redshift_port}/{DATABASE}?sslmode=disable",
        "user": creds["DbUser"],
        "password": creds["DbPassword"],
        "driver": "org.postgresql.Driver",
    }


def test_the_stack_writes_a_spark_connect_connection_for_its_server(
    stack: LocalStack, airflow_env: dict[str, str]
) -> None:
    from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

    assert stack.connections()["spark_connect_default"] == {
        "conn_type": "spark_connect",
        "host": "sc://127.0.0.1",
        "port": stack.settings.spark_connect_port,
    }
    # Read back as the Spark provider reads it, from the AIRFLOW_CONN_* variable.
    url = SparkConnectHook("spark_connect_default").get_connection_url()
    assert url == f"sc://127.0.0.1:{stack.settings.spark_connect_port}/"
    assert stack.processes["spark_connect"].poll() is None


def test_spark_connect_server_reads_the_redshift_stand_in_over_jdbc(stack: LocalStack, seeded: SeedPlan) -> None:
    ids = ["pred-0000000000", "pred-0000000007"]
    result = run_job(
        "connect_jdbc",
        url=stack.settings.spark_connect_url,
        jdbc=reader_jdbc(stack),
        table="model_predictions",
        id_column="prediction_id",
        ids=ids,
    )
    assert (result["session"], result["range_count"], result["count"]) == ("connect", 1, seeded.rows)
    assert result["types"] == {
        "prediction_id": "string",
        "prediction_timestamp": "timestamp",
        "raw_text": "string",
        "amount": "double",
        "owner": "string",
        "is_new": "boolean",
        "embeddings": "string",  # SUPER: JSON text
        "will_buy_insurance": "boolean",
        "proba": "double",
        "did_buy_insurance": "boolean",
        "actual_timestamp": "timestamp",
    }
    # The same JSON text as redshift_connector gets, holding the seeded values exactly.
    texts = dict(
        redshift_sql(
            stack, "SELECT prediction_id, embeddings FROM model_predictions WHERE prediction_id IN (%s, %s)", tuple(ids)
        )
    )
    assert set(result["rows"]) == set(ids)
    for prediction_id, row in result["rows"].items():
        n = int(prediction_id.removeprefix("pred-"))
        assert row["embeddings"] == texts[prediction_id]
        assert json.loads(row["embeddings"]) == [embedding_value(n, d) for d in range(1, seeded.embedding_dim + 1)]


def test_super_reads_as_json_text_in_spark_and_in_redshift_connector(stack: LocalStack) -> None:
    redshift_sql(stack, "DROP TABLE IF EXISTS super_values")
    redshift_sql(stack, "CREATE TABLE super_values (id VARCHAR(8), doc SUPER)")
    redshift_sql(
        stack,
        "INSERT INTO super_values VALUES ('array', JSON_PARSE(%s)), ('object', JSON_PARSE(%s)), "
        "('string', JSON_PARSE('\"a\"')), ('null', NULL)",
        ("[0.031, 1e-3, -2]", '{"k": [1, 2.5]}'),
    )
    expected = {"array": "[0.031, 0.001, -2]", "object": '{"k": [1, 2.5]}', "string": '"a"', "null": None}

    with stack.master_connection() as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT id, doc FROM super_values")
        in_python = {row[0]: row[1] for row in cursor.fetchall()}
        doc_type = cursor.description[1][1]
    assert in_python == expected
    assert all(isinstance(text, str) for text in in_python.values() if text is not None)
    assert doc_type == 3802  # jsonb's type oid: PostgreSQL describes a domain column by its base type

    result = run_job(
        "connect_jdbc",
        url=stack.settings.spark_connect_url,
        jdbc=reader_jdbc(stack),
        table="super_values",
        id_column="id",
        ids=list(expected),
    )
    assert result["types"] == {"id": "string", "doc": "string"}
    assert {key: row["doc"] for key, row in result["rows"].items()} == expected
    redshift_sql(stack, "DROP TABLE super_values")


def test_standalone_cluster_runs_a_jdbc_read_with_a_python_udf_on_its_worker(
    spark_cluster: StandaloneCluster,
    spark_standalone: str,
    spark_standalone_conn: str,
    stack: LocalStack,
    seeded: SeedPlan,
) -> None:
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    # The Spark provider reads the `spark` connection as this master.
    assert SparkSubmitHook(conn_id=spark_standalone_conn)._connection["master"] == spark_standalone
    result = run_job(
        "standalone_jdbc_udf",
        master=spark_standalone,
        jar=str(POSTGRES_JDBC_JAR),
        jdbc=reader_jdbc(stack),
        table="model_predictions",
        rows=seeded.rows,
    )
    parts = result["parts"]
    assert result["partitions"] == len(parts) == 2
    assert sum(part["rows"] for part in parts) == seeded.rows
    assert all(part["lengths"] == [seeded.embedding_dim] and part["rows"] > 0 for part in parts)
    # The UDF ran on the worker's executor, with the Python the worker is configured with (this
    # virtualenv's python3 on its PATH), not one the driver named.
    venv_python3 = str(Path(sys.executable).parent / "python3")
    assert {part["python"] for part in parts} == {venv_python3}
    # spark.jars shipped the JDBC driver to the executor that read the rows.
    shipped = list((spark_cluster.work_dir / result["application_id"]).glob("*/postgresql.jar"))
    assert shipped, f"no postgresql.jar in {spark_cluster.work_dir / result['application_id']}"


def test_a_local_session_starts_from_the_class_data_archive_the_session_before_it_dumped(tmp_path: Path) -> None:
    """The first session's JVM dumps the classes it loaded as it exits; the next session's JVM starts from the
    archive, once a JVM has started from it (tempfile's directory, where the archives live, moved by TMPDIR)."""
    env = {"TMPDIR": str(tmp_path)}
    first = run_job("local_session_start", env)
    archives = tmp_path / "aporia-spark-class-data"
    dumping = [option for option in first["java_options"] if option.startswith("-XX:ArchiveClassesAtExit=")]
    assert first["count"] == 10 and dumping and "-Xlog:cds*=off" in first["java_options"]
    (note,) = archives.glob("*.json")
    writer = json.loads(note.read_text())["pid"]
    deadline = time.monotonic() + 120
    while Path(f"/proc/{writer}").exists():  # the JVM writes the dump after its task has ended
        assert time.monotonic() < deadline, "the first session's JVM did not end"
        time.sleep(0.5)
    second = run_job("local_session_start", env)
    (archive,) = archives.glob("*.jsa")
    assert f"-XX:SharedArchiveFile={archive}" in second["java_options"] and second["count"] == 10
    assert [path.name for path in archives.iterdir()] == [archive.name]  # the dump adopted, its note gone
