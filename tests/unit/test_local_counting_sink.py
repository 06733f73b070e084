"""The local Aporia server's `--sink count` (benchmarks): logPredictions batches are counted by id, not stored."""

from __future__ import annotations

from pathlib import Path

import pytest

# The stand-ins are their own distribution (aporia-local/), which the built wheel's floor environment does not
# install.
pytest.importorskip("orjson")

from fastapi.testclient import TestClient

from aporia_local.aporia_server import create_app

TOKEN = "t"
# The official SDK's document (aporia 2.19, inference/api/log_inference.py), as the sync sends it too.
LOG_PREDICTIONS = """
mutation LogPredict($modelId: String!, $modelVersion: String!, $environment: String!, $predictions: [Prediction]!
    $isSync: Boolean!) {
    logPredictions(modelId: $modelId, modelVersion: $modelVersion, environment: $environment,
        predictions: $predictions isSync: $isSync) { warnings }
}
"""


def log(client: TestClient, environment: str, fragments: list[dict[str, object]]) -> dict[str, object]:
    variables = {"modelId": "m", "modelVersion": "v1", "environment": environment, "isSync": False}
    response = client.post(
        "/v1/controller/graphql", json={"query": LOG_PREDICTIONS, "variables": {**variables, "predictions": fragments}}
    )
    assert response.status_code == 200
    answer: dict[str, object] = response.json()
    return answer


def test_batches_are_counted_by_distinct_id_and_stream(tmp_path: Path) -> None:
    with TestClient(create_app(str(tmp_path / "a.sqlite"), TOKEN, sink="count")) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        prediction = {"features": {"x": [1.0, 2.0]}, "predictions": {"p": True}, "actuals": None}
        answer = log(client, "a", [{"id": "1", **prediction}, {"id": "2", **prediction}])
        assert answer == {"data": {"logPredictions": {"warnings": []}}}
        log(client, "a", [{"id": "1", **prediction}, {"id": "1", "actuals": {"p": False}}])
        log(client, "b", [{"id": "3", "actuals": {"p": True}}])

        def count(**selection: str) -> dict[str, int]:
            counted: dict[str, int] = client.get("/local/fragments/count", params=selection).json()
            return counted

        assert count(environment="a") == {"total": 2, "with_predictions": 2, "with_actuals": 1}
        assert count(model_id="m", model_version="v1") == {"total": 3, "with_predictions": 2, "with_actuals": 2}
        assert count(environment="c") == {"total": 0, "with_predictions": 0, "with_actuals": 0}
        assert client.post("/local/reset").status_code == 200
        assert count() == {"total": 0, "with_predictions": 0, "with_actuals": 0}


def test_the_token_still_guards_the_sink(tmp_path: Path) -> None:
    with TestClient(create_app(str(tmp_path / "a.sqlite"), TOKEN, sink="count")) as client:
        assert client.get("/local/fragments/count").status_code == 401
