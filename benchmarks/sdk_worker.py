"""The loop users write with the official Aporia SDK, in its own venv (benchmarks/sdk_venv.sh: aporia==2.19.0,
pandas<2, redshift_connector): `.venv-sdk/bin/python -m benchmarks.sdk_worker '<json>' [--gated]`.

As a user writes it in an Airflow task (an ExternalPythonOperator, say, since the SDK's pins clash with Airflow
3): temporary Redshift credentials from boto3's GetClusterCredentials, a `redshift_connector` session, the very
window query the sync pushes down (built by the parent: this venv has no provider), `fetchmany(10000)`, each
batch turned into dicts (SUPER vectors parsed with `json`) and handed to `Model.log_batch_prediction`; then the
delayed actuals by their own timestamp to `log_batch_actuals`, nulls left out; `flush()` after each. The SDK
queues fragments and posts them 4,000 a request from its own thread; it swallows failed requests (it logs
them), so the parent checks what the local Aporia holds. The JSON argument is the parent's `sdk_arguments`.

Imports (the SDK's pandas, numpy, aiohttp; boto3) come before the clock starts, as the sync's and the
hand-written loop's do; `aporia.init` and `Model(...)` are timed. The result is one JSON object on the original
stdout, shaped like loop_worker's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import aporia
import boto3
import redshift_connector

from benchmarks.worker import FETCH_SIZE, Clock, Sampler, measured, serve


def connect(redshift: dict[str, Any], aws: dict[str, Any]) -> Any:
    client = boto3.client(
        "redshift",
        region_name=aws["region"],
        endpoint_url=aws["endpoint_url"],
        aws_access_key_id=aws["access_key_id"],
        aws_secret_access_key=aws["secret_access_key"],
    )
    credentials = client.get_cluster_credentials(
        DbUser=redshift["db_user"], DbName=redshift["database"], ClusterIdentifier=redshift["cluster_identifier"]
    )
    return redshift_connector.connect(
        host=redshift["host"],
        port=redshift["port"],
        database=redshift["database"],
        user=credentials["DbUser"],
        password=credentials["DbPassword"],
        ssl=False,
    )


def batches(cursor: Any, clock: Clock, sql: str) -> Iterator[list[dict[str, Any]]]:
    clock.timed("query (execute)", lambda: cursor.execute(sql))
    columns = [d[0] for d in cursor.description]
    while rows := clock.timed(f"fetchmany({FETCH_SIZE})", lambda: cursor.fetchmany(FETCH_SIZE)):
        yield [dict(zip(columns, row, strict=True)) for row in rows]


def _kept(fragment: Callable[[dict[str, Any]], dict[str, Any] | None], rows: list[dict[str, Any]]) -> list[Any]:
    return [f for f in map(fragment, rows) if f is not None]


def run(a: dict[str, Any], clock: Clock) -> dict[str, Any]:
    service = a["aporia"]
    clock.timed(
        "aporia.init + Model",
        lambda: aporia.init(
            token=service["token"],
            host=service["host"],
            port=service["port"],
            environment=service["environment"],
            verify_ssl=False,
            throw_errors=True,
        ),
    )
    model = aporia.Model(a["model_id"], a["model_version"])
    fields = a["fields"]

    def prediction(row: dict[str, Any]) -> dict[str, Any]:
        features = {name: row[name] for name in fields["features"]}
        # SUPER reaches clients as JSON text.
        features[a["vector_field"]] = json.loads(features[a["vector_field"]])
        return {
            "id": str(row[a["id_column"]]),
            "features": features,
            "predictions": {name: row[name] for name in fields["predictions"]},
            "raw_inputs": {name: row[name] for name in fields["rawInputs"]} or None,
            "occurred_at": row[a["timestamp_column"]],
        }

    def actual(row: dict[str, Any]) -> dict[str, Any] | None:
        values = {name: row[column] for name, column in a["actuals"].items() if row[column] is not None}
        return {"id": str(row[a["id_column"]]), "actuals": values} if values else None

    def send(sql: str, fragment: Callable[[dict[str, Any]], dict[str, Any] | None], log: Callable[..., Any]) -> int:
        sent = 0
        for rows in batches(cursor, clock, sql):
            kept = clock.timed("build dicts", partial(_kept, fragment, rows))
            clock.timed("log_batch_* (queue)", partial(log, kept))
            sent += len(kept)
        clock.timed("flush (wait for Aporia)", model.flush)
        return sent

    connection = clock.timed("connect (credentials, session)", lambda: connect(a["redshift"], a["aws"]))
    try:
        cursor = connection.cursor()
        rows = send(a["predictions_sql"], prediction, model.log_batch_prediction)
        actuals = send(a["actuals_sql"], actual, model.log_batch_actuals)
    finally:
        connection.close()
    return {"rows_read": rows, "fragments_sent": rows, "actuals_sent": actuals, "batches": None}


def main(arguments: dict[str, Any]) -> dict[str, Any]:
    clock = Clock()
    result = measured(lambda: run(arguments, clock), Sampler())
    result["steps"] = {step: round(seconds, 3) for step, seconds in clock.seconds.items()}
    return result


if __name__ == "__main__":
    serve(main)
