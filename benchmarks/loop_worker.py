"""The hand-written loop users write instead of the provider, in its own process like the sync:
`python -m benchmarks.loop_worker '<json>' [--gated]`.

What issue 10 measured as the alternative: a redshift_connector session (IAM credentials from Airflow's
Redshift connection; RedshiftIAMHook here, as the stand-in has no TLS and redshift_connector's own IAM path
insists on it), the very window queries the sync pushes down (workload.Table.loop_arguments),
`fetchmany(10000)`, each batch turned into Aporia fragments in Python (SUPER vectors parsed with `json`,
timestamps with `isoformat()`) and POSTed as one `logPredictions` request with the body the official SDK's
`log_batch_prediction` + `flush` send; then the delayed actuals the same way, by their own timestamp, nulls
left out. The JSON argument is `Table.loop_arguments()` plus `aporia_conn_id`.

The result (benchmarks.worker) is timed from asking for credentials to the last answer (Airflow and the hooks
are imported before, as the sync worker imports the operator's module before it times execute()), plus where
the time went: the query (execute), fetching, building fragments and JSON, and waiting for Aporia.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests
from airflow.sdk import BaseHook

from aporia_provider.client import LOG_PREDICTIONS
from aporia_provider.hooks.redshift import RedshiftIAMHook
from benchmarks.worker import FETCH_SIZE, Clock, Sampler, measured, serve


@dataclass
class Loop:
    arguments: dict[str, Any]
    clock: Clock = field(default_factory=Clock)
    batches: int = 0

    def run(self) -> dict[str, Any]:
        a = self.arguments
        aporia = BaseHook.get_connection(a["aporia_conn_id"])
        url = f"{aporia.schema or 'https'}://{aporia.host}:{aporia.port}/v1/controller/graphql"
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {aporia.password}", "Content-Type": "application/json"})
        self.url = url
        self.query = LOG_PREDICTIONS
        self.variables = {
            "modelId": a["model_id"],
            "modelVersion": a["model_version"],
            "environment": aporia.extra_dejson.get("environment", "production"),
            "isSync": True,
        }
        connection = self.clock.timed("connect (credentials, session)", RedshiftIAMHook("redshift_default").get_conn)
        try:
            cursor = connection.cursor()
            rows = self.send(cursor, a["predictions_sql"], self.prediction)
            actuals = self.send(cursor, a["actuals_sql"], self.actual)
        finally:
            connection.close()
        return {"rows_read": rows, "fragments_sent": rows, "actuals_sent": actuals, "batches": self.batches}

    def send(self, cursor: Any, sql: str, fragment: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
        """Run the query, fetch its rows 10,000 at a time, and POST each batch's fragments; count them."""
        self.clock.timed("query (execute)", lambda: cursor.execute(sql))
        columns = [d[0] for d in cursor.description]
        sent = 0
        for batch in self.fetched(cursor):
            body, count = self.clock.timed("build fragments + JSON body", partial(self.body, batch, columns, fragment))
            if count:
                self.clock.timed("POST logPredictions (wait for Aporia)", partial(self.post, body))
                sent += count
        return sent

    def fetched(self, cursor: Any) -> Iterator[list[Any]]:
        while rows := self.clock.timed(f"fetchmany({FETCH_SIZE})", lambda: cursor.fetchmany(FETCH_SIZE)):
            yield rows

    def prediction(self, row: dict[str, Any]) -> dict[str, Any]:
        a = self.arguments
        fields = a["fields"]
        fragment: dict[str, Any] = {
            "id": str(row[a["id_column"]]),
            "occurredAt": row[a["timestamp_column"]].isoformat(),
        }
        for group, names in fields.items():
            if names:
                fragment[group] = {name: row[name] for name in names}
        # SUPER reaches clients as JSON text.
        vector = fragment["features"][a["vector_field"]]
        if isinstance(vector, str):
            fragment["features"][a["vector_field"]] = json.loads(vector)
        return fragment

    def actual(self, row: dict[str, Any]) -> dict[str, Any] | None:
        a = self.arguments
        values = {name: row[column] for name, column in a["actuals"].items() if row[column] is not None}
        return {"id": str(row[a["id_column"]]), "actuals": values} if values else None

    def body(
        self, rows: list[Any], columns: list[str], fragment: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> tuple[bytes, int]:
        """The logPredictions body of a batch of rows, and how many fragments it holds."""
        fragments = (fragment(dict(zip(columns, row, strict=True))) for row in rows)
        kept = [f for f in fragments if f is not None]
        variables = {**self.variables, "predictions": kept}
        return json.dumps({"query": self.query, "variables": variables}).encode(), len(kept)

    def post(self, body: bytes) -> None:
        response = self.session.post(self.url, data=body, timeout=300)
        response.raise_for_status()
        answer = response.json()
        problems = answer.get("errors") or answer["data"]["logPredictions"]["warnings"]
        if problems:
            raise RuntimeError(f"Aporia refused or warned about a batch: {problems[:3]}")
        self.batches += 1


def main(arguments: dict[str, Any]) -> dict[str, Any]:
    loop = Loop(arguments)
    result = measured(loop.run, Sampler())
    result["steps"] = {step: round(seconds, 3) for step, seconds in loop.clock.seconds.items()}
    return result


if __name__ == "__main__":
    serve(main)
