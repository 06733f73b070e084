"""The local Aporia server, endpoint by endpoint, over real HTTP against a server subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from aporia_local.aporia_server import main

TOKEN = "local-test-token"
GRAPHQL = "/v1/controller/graphql"
# The query text the Aporia SDK sends, so the test pins wire compatibility.
LOG_PREDICTIONS = """
    mutation LogPredict(
        $modelId: String!,
        $modelVersion: String!,
        $environment: String!,
        $predictions: [Prediction]!
        $isSync: Boolean!
    ) {
        logPredictions(
            modelId: $modelId,
            modelVersion: $modelVersion,
            environment: $environment,
            predictions: $predictions
            isSync: $isSync
        ) {
            warnings
        }
    }
"""
SCHEMA_QUERY = """
    query Schema($modelId: String!, $modelVersion: String!) {
        modelVersionSchema(modelId: $modelId, modelVersion: $modelVersion) {
            features { name type dimensions }
            predictions { name type dimensions }
            rawInputs { name type dimensions }
        }
    }
"""
VERSION_SCHEMA = {
    "features": {"amount": "numeric", "segment": "categorical", "embedding": {"type": "tensor", "dimensions": [3]}},
    "predictions": {"proba": "numeric", "label": "boolean"},
    "raw_inputs": {"note": "text"},
    "metrics": {},
    "feature_positions": {"amount": 0, "segment": 1, "embedding": 2},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    db = tmp_path_factory.mktemp("aporia") / "aporia.sqlite3"
    command = [sys.executable, "-m", "aporia_local.aporia_server"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--db", str(db), "--token", TOKEN]
    proc = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"the server exited with code {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not open its port within 20 s"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def api(base_url: str) -> Iterator[Api]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        client = Api(base_url, session)
        client.post("/local/reset").raise_for_status()
        yield client


class Api:
    def __init__(self, base_url: str, session: requests.Session) -> None:
        self.base_url = base_url
        self.session = session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base_url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base_url + path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.delete(self.base_url + path, **kwargs)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.post(GRAPHQL, json={"query": query, "variables": variables or {}})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def log(self, fragments: list[Any], model_id: str = "m1", version: str = "v1", env: str = "prod") -> Any:
        variables = {
            "modelId": model_id,
            "modelVersion": version,
            "environment": env,
            "predictions": fragments,
            "isSync": True,
        }
        return self.graphql(LOG_PREDICTIONS, variables)

    def warnings(self, fragments: list[Any]) -> list[str]:
        result = self.log(fragments)
        assert "errors" not in result, result
        warnings: list[str] = result["data"]["logPredictions"]["warnings"]
        return warnings

    def fragments(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("/local/fragments", params=params)
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()
        return records

    def count(self, **params: Any) -> dict[str, int]:
        response = self.get("/local/fragments/count", params=params)
        assert response.status_code == 200, response.text
        counts: dict[str, int] = response.json()
        return counts

    def create_model_and_version(self, model_id: str = "m1", version: str = "v1") -> None:
        self.post("/v1beta/models", json={"id": model_id, "name": model_id.upper()}).raise_for_status()
        body = {"name": version, "model_type": "binary", "version_schema": VERSION_SCHEMA}
        self.post(f"/v1beta/models/{model_id}/versions", json=body).raise_for_status()


def _dataset(name: str = "serving", query: str = "SELECT * FROM scores", enabled: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "data_source": {"type": "jdbc", "config": {"url": "jdbc:redshift:iam://host:5439/dev", "query": query}},
        "sync": {"enabled": enabled, "environment": "production", "schedule": "@hourly"},
        "id_column": "prediction_id",
        "timestamp_column": "scored_at",
        "features": {"amount": "txn_amount"},
    }


def _prediction(fragment_id: str, occurred_at: str = "2024-03-01T10:00:00+00:00", **extra: Any) -> dict[str, Any]:
    return {
        "id": fragment_id,
        "features": {"amount": 12.5, "segment": 3, "embedding": [0.1, 0.2, 0.3]},
        "predictions": {"proba": 0.8, "label": True},
        "occurredAt": occurred_at,
        **extra,
    }


# Auth


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_rest_and_graphql_refuse_a_missing_or_wrong_token(base_url: str, headers: dict[str, str]) -> None:
    for response in (
        requests.get(f"{base_url}/v1beta/capabilities/", headers=headers),
        requests.post(f"{base_url}/v1beta/models", json={"id": "x", "name": "x"}, headers=headers),
        requests.post(f"{base_url}{GRAPHQL}", json={"query": "{ __typename }"}, headers=headers),
        requests.get(f"{base_url}/local/fragments/count", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid or missing API token"}


def test_capabilities(api: Api) -> None:
    response = api.get("/v1beta/capabilities/")
    assert response.status_code == 200
    assert response.json() == {"is_field_schema_supported": True}


# Models and versions


def test_create_list_and_delete_model(api: Api) -> None:
    body = {"id": "m1", "name": "Fraud", "description": "d", "owner": "ml", "color": "red", "icon": "i", "tags": {}}
    created = api.post("/v1beta/models", json=body)
    assert (created.status_code, created.json()) == (201, {"id": "m1"})

    again = api.post("/v1beta/models", json=body)
    assert again.status_code == 409
    assert again.json() == {"detail": "Model 'm1' already exists."}

    models = api.get("/v1beta/models").json()
    assert [{k: m[k] for k in body} for m in models] == [body]
    assert models[0]["created_at"]

    api.post(
        "/v1beta/models/m1/versions", json={"name": "v1", "model_type": "binary", "version_schema": VERSION_SCHEMA}
    )
    assert api.warnings([_prediction("p1")]) == []
    deleted = api.delete("/v1beta/models/m1")
    assert (deleted.status_code, deleted.json()) == (200, {"id": "m1"})
    assert api.get("/v1beta/models").json() == []
    assert api.count()["total"] == 0, "deleting a model deletes its fragments"
    assert api.get("/v1beta/models/m1/versions").status_code == 404

    missing = api.delete("/v1beta/models/m1")
    assert missing.status_code == 404
    assert "'m1' does not exist" in missing.json()["detail"]


def test_model_body_errors_are_one_sentence(api: Api) -> None:
    response = api.post("/v1beta/models", json={"name": "no id"})
    assert response.status_code == 422
    assert response.json() == {"detail": "Invalid request body: field 'id': Field required."}

    not_json = api.post("/v1beta/models", data="{", headers={"Content-Type": "application/json"})
    assert (not_json.status_code, not_json.json()) == (422, {"detail": "The request body is not valid JSON."})


def test_create_and_list_versions(api: Api) -> None:
    api.post("/v1beta/models", json={"id": "m1", "name": "M"}).raise_for_status()
    body = {
        "name": "v1",
        "model_type": "binary",
        "version_schema": VERSION_SCHEMA,
        "model_data_type": "tabular",
        "labels": {},
        "feature_importance": {"amount": 0.7},
        "mapping": {},
    }
    created = api.post("/v1beta/models/m1/versions", json=body)
    assert (created.status_code, created.json()) == (201, {"id": "m1", "version": "v1"})

    duplicate = api.post("/v1beta/models/m1/versions", json=body)
    assert duplicate.status_code == 409
    assert duplicate.json() == {"detail": "Model 'm1' already has a version 'v1'."}

    unknown_model = api.post("/v1beta/models/nope/versions", json={**body, "model_type": "linear"})
    assert unknown_model.status_code == 404
    assert unknown_model.json()["detail"].startswith("Model 'nope' does not exist")

    versions = api.get("/v1beta/models/m1/versions").json()
    assert len(versions) == 1
    assert {k: versions[0][k] for k in ("name", "model_type", "version_schema")} == {
        "name": "v1",
        "model_type": "binary",
        "version_schema": VERSION_SCHEMA,
    }
    assert versions[0]["created_at"]


@pytest.mark.parametrize(
    ("model_type", "version_schema", "detail"),
    [
        (
            "binary",
            {"features": {"amount": "money"}, "predictions": {"p": "numeric"}},
            "The feature 'amount' has unknown type 'money'; use one of numeric, categorical, string, boolean, "
            "datetime, vector, text, dict, tensor.",
        ),
        (
            "binary",
            {"features": {"e": {"type": "tensor"}}, "predictions": {"p": "numeric"}},
            "The feature 'e' is a tensor without valid dimensions; "
            'declare it as {"type": "tensor", "dimensions": [768]} with positive integer sizes.',
        ),
        (
            "linear",
            VERSION_SCHEMA,
            "model_type 'linear' is not supported; use one of regression, binary, multiclass, multi-label, ranking.",
        ),
    ],
)
def test_invalid_version_is_422_with_the_schema_message(
    api: Api, model_type: str, version_schema: dict[str, Any], detail: str
) -> None:
    api.post("/v1beta/models", json={"id": "m1", "name": "M"}).raise_for_status()
    body = {"name": "v1", "model_type": model_type, "version_schema": version_schema}
    response = api.post("/v1beta/models/m1/versions", json=body)
    assert (response.status_code, response.json()) == (422, {"detail": detail})
    assert api.get("/v1beta/models/m1/versions").json() == []


# Datasets


def test_dataset_upsert_sync_flag_and_status(api: Api) -> None:
    api.create_model_and_version()
    base = "/v1beta/models/m1/versions/v1"

    assert api.post(f"{base}/datasets", json=_dataset()).status_code == 201
    assert api.post(f"{base}/datasets", json=_dataset("training")).status_code == 201
    replaced = api.post(f"{base}/datasets", json=_dataset(query="SELECT * FROM scores_v2"))
    assert replaced.status_code == 201

    datasets = api.get(f"{base}/datasets").json()
    assert [d["name"] for d in datasets] == ["serving", "training"]
    assert datasets[0] == _dataset(query="SELECT * FROM scores_v2"), "re-posting replaces the dataset"

    status = api.get(f"{base}/sync_status/serving").json()
    assert {k: status[k] for k in ("dataset", "enabled", "status")} == {
        "dataset": "serving",
        "enabled": True,
        "status": "synced",
    }
    assert status["connected_at"].endswith("+00:00")

    toggled = api.post(f"{base}/datasets_sync", params={"enabled": "false"}, json={})
    assert toggled.status_code == 200
    assert toggled.json()["datasets"] == ["serving", "training"]
    assert api.get(f"{base}/sync_status/training").json()["status"] == "disabled"
    assert [d["sync"]["enabled"] for d in api.get(f"{base}/datasets").json()] == [False, False]

    api.post(f"{base}/datasets_sync", params={"enabled": "true"}, json={}).raise_for_status()
    assert api.get(f"{base}/sync_status/serving").json()["enabled"] is True

    not_connected = api.get(f"{base}/sync_status/actuals")
    assert not_connected.status_code == 404
    assert not_connected.json()["detail"].startswith("Dataset 'actuals' is not connected")


def test_dataset_errors(api: Api) -> None:
    api.create_model_and_version()
    base = "/v1beta/models/m1/versions/v1"

    bad_name = api.post(f"{base}/datasets", json=_dataset("scoring"))
    assert bad_name.status_code == 422
    assert bad_name.json() == {
        "detail": "Dataset name 'scoring' is not supported; use one of serving, training, testing, actuals."
    }

    body = _dataset()
    body["data_source"]["type"] = "redshift"
    bad_type = api.post(f"{base}/datasets", json=body)
    assert bad_type.status_code == 422
    assert bad_type.json()["detail"].startswith("data_source.type 'redshift' is not supported")

    assert api.post("/v1beta/models/m1/versions/v9/datasets", json=_dataset()).status_code == 404
    assert api.post("/v1beta/models/m9/versions/v1/datasets", json=_dataset()).status_code == 404
    assert api.post("/v1beta/models/m1/versions/v9/datasets_sync?enabled=true", json={}).status_code == 404
    assert api.get(f"{base}/datasets").json() == []


# GraphQL: logPredictions


def test_prediction_and_later_actuals_merge_into_one_record(api: Api) -> None:
    api.create_model_and_version()
    assert api.warnings([_prediction("p1", confidence=0.9, rawInputs={"note": "hi"})]) == []
    assert api.warnings([{"id": "p1", "actuals": {"label": False}}]) == []
    assert api.warnings([{"id": "p1", "features": {"segment": 4}, "metrics": {"latency_ms": 3}}]) == []

    assert api.fragments() == [
        {
            "id": "p1",
            "features": {"amount": 12.5, "segment": 4, "embedding": [0.1, 0.2, 0.3]},
            "predictions": {"proba": 0.8, "label": True},
            "raw_inputs": {"note": "hi"},
            "actuals": {"label": False},
            "metrics": {"latency_ms": 3},
            "occurred_at": "2024-03-01T10:00:00.000000+00:00",
            "confidence": 0.9,
        }
    ]
    assert api.count() == {"total": 1, "with_predictions": 1, "with_actuals": 1}


def test_resending_is_idempotent_and_same_id_fragments_in_a_batch_merge(api: Api) -> None:
    api.create_model_and_version()
    batch = [_prediction("p1"), _prediction("p2"), {"id": "p1", "actuals": {"proba": 1.0}}]
    api.warnings(batch)
    first = api.fragments()
    api.warnings(batch)
    api.warnings(batch)

    assert api.fragments() == first
    assert [r["id"] for r in first] == ["p1", "p2"]
    assert first[0]["actuals"] == {"proba": 1.0}
    assert api.count() == {"total": 2, "with_predictions": 2, "with_actuals": 1}


def test_fragments_are_kept_apart_by_environment_and_version(api: Api) -> None:
    api.create_model_and_version()
    api.post(
        "/v1beta/models/m1/versions", json={"name": "v2", "model_type": "binary", "version_schema": VERSION_SCHEMA}
    ).raise_for_status()
    api.warnings([_prediction("p1")])
    api.log([_prediction("p1")], env="staging")
    api.log([_prediction("p1")], version="v2")

    assert api.count()["total"] == 3
    assert api.count(environment="staging")["total"] == 1
    assert api.count(model_id="m1", model_version="v2", environment="prod")["total"] == 1


def test_schema_warnings_and_the_fragment_is_still_stored(api: Api) -> None:
    api.create_model_and_version()
    warnings = api.warnings(
        [
            {
                "id": "bad",
                "features": {"amount": "12", "embedding": [0.1, 0.2], "colour": "red"},
                "predictions": {"proba": 0.4, "label": "yes"},
                "occurredAt": "2024-03-01T10:00:00Z",
            },
            {"id": "no-time", "predictions": {"proba": 0.5}},
            {"id": "bad-time", "predictions": {"proba": 0.5}, "occurredAt": "yesterday"},
            {"id": "bad-actual", "actuals": {"proba": "high", "churned": 1}},
            {"id": "extra", "prediction": {"proba": 0.1}},
        ]
    )
    assert warnings == [
        "Fragment 'bad': feature amount: expected a number, got str.",
        "Fragment 'bad': feature embedding: expected a tensor of shape [3], got [2].",
        "Fragment 'bad': unknown feature 'colour', not in the schema of version 'v1'.",
        "Fragment 'bad': prediction label: expected a boolean, got str.",
        "Fragment 'no-time': a prediction fragment without occurredAt.",
        "Fragment 'bad-time': occurredAt 'yesterday' is not an ISO-8601 datetime; "
        "the fragment was stored without a timestamp.",
        "Fragment 'bad-actual': actual proba: expected a number, got str.",
        "Fragment 'bad-actual': unknown actual 'churned', not in the schema of version 'v1'.",
        "Fragment 'extra': unknown key 'prediction' was ignored; fragments have "
        "id, features, predictions, rawInputs, actuals, metrics, occurredAt, confidence.",
    ]
    records = {r["id"]: r for r in api.fragments()}
    assert sorted(records) == ["bad", "bad-actual", "bad-time", "extra", "no-time"]
    assert records["bad"]["features"] == {"amount": "12", "embedding": [0.1, 0.2], "colour": "red"}
    assert records["bad-time"]["occurred_at"] is None


def test_warnings_are_capped_at_100_plus_a_summary_line(api: Api) -> None:
    api.create_model_and_version()
    fragments = [_prediction(f"p{i:03d}", features={"amount": "x"}) for i in range(130)]
    warnings = api.warnings(fragments)
    assert len(warnings) == 101
    assert warnings[0] == "Fragment 'p000': feature amount: expected a number, got str."
    assert warnings[-1] == "... and 30 more warnings"
    assert api.count()["total"] == 130


def test_graphql_errors_for_unknown_model_version_and_bad_input(api: Api) -> None:
    api.create_model_and_version()

    unknown_model = api.log([_prediction("p1")], model_id="nope")
    assert unknown_model["data"] is None
    assert unknown_model["errors"][0]["message"].startswith("Model 'nope' does not exist")

    unknown_version = api.log([_prediction("p1")], version="v9")
    assert unknown_version["errors"][0]["message"].startswith("Model 'm1' has no version 'v9'")

    missing_id = api.log([_prediction("p1"), {"actuals": {"proba": 1.0}}])
    assert missing_id["errors"][0]["message"].startswith("predictions[1] has no id;")
    assert api.count()["total"] == 0, "a batch with an id-less fragment stores nothing"

    numeric_id = api.log([{**_prediction("p1"), "id": 17}])
    assert numeric_id["errors"][0]["message"] == "predictions[0] has id 17; ids must be non-empty strings."

    not_an_object = api.log([_prediction("p1"), 7])
    assert not_an_object["errors"][0]["message"].startswith("predictions[1] is int;")

    missing_argument = api.graphql(
        'mutation { logPredictions(modelId: "m1", modelVersion: "v1", environment: "p", isSync: true) { warnings } }'
    )
    assert missing_argument["errors"][0]["message"] == (
        "Argument 'Mutation.logPredictions(predictions:)' of type '[Prediction]!' is required, but it was not provided."
    )

    unknown_field = api.graphql('{ modelVersionSchema(modelId: "m1", modelVersion: "v1") { labels { name } } }')
    assert "Cannot query field 'labels'" in unknown_field["errors"][0]["message"]
    assert api.count()["total"] == 0


def test_malformed_graphql_query(api: Api) -> None:
    response = api.post(GRAPHQL, json={"query": "{ modelVersionSchema(modelId: "})
    assert response.status_code == 200
    assert response.json()["data"] is None
    assert response.json()["errors"][0]["message"].startswith("Syntax Error")


def test_inline_literal_predictions_are_accepted(api: Api) -> None:
    api.create_model_and_version()
    result = api.graphql(
        'mutation { logPredictions(modelId: "m1", modelVersion: "v1", environment: "prod", isSync: false, '
        'predictions: [{id: "lit", features: {amount: 2.5}, predictions: {proba: 0.1}, '
        'occurredAt: "2024-03-01T12:00:00+02:00"}]) { warnings } }'
    )
    assert result == {"data": {"logPredictions": {"warnings": []}}}
    [record] = api.fragments()
    assert (record["id"], record["features"], record["occurred_at"]) == (
        "lit",
        {"amount": 2.5},
        "2024-03-01T10:00:00.000000+00:00",
    )


# GraphQL: modelVersionSchema


def test_model_version_schema(api: Api) -> None:
    api.create_model_and_version()
    result = api.graphql(SCHEMA_QUERY, {"modelId": "m1", "modelVersion": "v1"})
    assert result == {
        "data": {
            "modelVersionSchema": {
                "features": [
                    {"name": "amount", "type": "numeric", "dimensions": None},
                    {"name": "segment", "type": "categorical", "dimensions": None},
                    {"name": "embedding", "type": "tensor", "dimensions": [3]},
                ],
                "predictions": [
                    {"name": "proba", "type": "numeric", "dimensions": None},
                    {"name": "label", "type": "boolean", "dimensions": None},
                ],
                "rawInputs": [{"name": "note", "type": "text", "dimensions": None}],
            }
        }
    }
    missing = api.graphql(SCHEMA_QUERY, {"modelId": "m1", "modelVersion": "v2"})
    assert missing["errors"][0]["message"].startswith("Model 'm1' has no version 'v2'")


# /local views


def test_count_and_list_with_a_utc_time_window(api: Api) -> None:
    api.create_model_and_version()
    api.warnings(
        [
            _prediction("a", "2024-03-01T09:59:59.999999+00:00"),
            _prediction("b", "2024-03-01T10:00:00+00:00"),  # at `from`: inside
            _prediction("c", "2024-03-01T12:30:00+02:00"),  # 10:30 UTC: inside
            _prediction("d", "2024-03-01T11:00:00"),  # naive means UTC; at `to`: outside
            {"id": "e", "actuals": {"proba": 1.0}},  # no timestamp: outside any window
        ]
    )
    window = {"occurred_from": "2024-03-01T10:00:00Z", "occurred_to": "2024-03-01T11:00:00+00:00"}
    assert api.count(**window) == {"total": 2, "with_predictions": 2, "with_actuals": 0}
    assert api.count() == {"total": 5, "with_predictions": 4, "with_actuals": 1}
    assert [r["id"] for r in api.fragments(**window)] == ["b", "c"]
    assert api.fragments(**window)[1]["occurred_at"] == "2024-03-01T10:30:00.000000+00:00"
    assert [r["id"] for r in api.fragments(limit=2, offset=1)] == ["b", "c"]

    bad = api.get("/local/fragments/count", params={"occurred_from": "last week"})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("occurred_from 'last week' is not an ISO-8601 datetime")


def test_reset_wipes_everything(api: Api) -> None:
    api.create_model_and_version()
    api.warnings([_prediction("p1")])
    assert api.post("/local/reset").json() == {"reset": True}
    assert api.get("/v1beta/models").json() == []
    assert api.count()["total"] == 0


# Faults


def test_faults_fail_the_next_requests_then_clear(api: Api) -> None:
    api.create_model_and_version()
    fault = {"path": GRAPHQL, "status": 503, "count": 2}
    assert api.post("/local/faults", json=fault).status_code == 201

    failed = [api.post(GRAPHQL, json={"query": "{ __typename }"}) for _ in range(2)]
    assert [r.status_code for r in failed] == [503, 503]
    assert failed[0].json()["detail"] == f"Injected fault: HTTP 503 for {GRAPHQL} (POST /local/faults)."
    assert api.warnings([_prediction("p1")]) == [], "the third request is served"
    assert api.get("/v1beta/capabilities/").status_code == 200, "other paths are not affected"

    api.post("/local/faults", json={"path": "/v1beta/", "status": 500, "count": 5}).raise_for_status()
    assert api.get("/v1beta/models").status_code == 500
    assert api.delete("/local/faults").json() == {"cleared": 1}
    assert api.get("/v1beta/models").status_code == 200


def test_delay_fault_simulates_a_timeout(api: Api) -> None:
    api.post("/local/faults", json={"path": "/v1beta/capabilities", "count": 1, "delay_seconds": 0.6})
    with pytest.raises(requests.Timeout):
        api.get("/v1beta/capabilities/", timeout=0.2)
    started = time.monotonic()
    response = api.get("/v1beta/capabilities/", timeout=5)
    assert response.status_code == 200
    assert time.monotonic() - started < 0.5, "the delay applied to one request only"


def test_fault_body_is_validated(api: Api) -> None:
    response = api.post("/local/faults", json={"path": "v1", "status": 503})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid request body: field 'path'")


def test_main_requires_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "1"])
    assert exit_info.value.code == 2
    assert "--db" in capsys.readouterr().err
