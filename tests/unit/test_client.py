"""AporiaClient against stubbed HTTP: wire bodies (DESIGN §3), retries, and one clear sentence per failure."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import responses

from aporia_provider.client import LOG_PREDICTIONS, MODEL_VERSION_SCHEMA, AporiaClient, LogResult, iter_version_schema
from aporia_provider.exceptions import AporiaError
from tests.unit.conftest import BASE_URL, GRAPHQL_URL, TOKEN, request_json

MODELS_URL = BASE_URL + "/v1beta/models"
UNREACHABLE = f"check that Aporia is up and reachable at {BASE_URL}."


@pytest.fixture
def client() -> AporiaClient:
    return AporiaClient(BASE_URL, TOKEN, environment="staging", backoff_seconds=0)


def graphql_ok(data: object) -> dict[str, object]:
    return {"data": data}


# ----------------------------------------------------------------------------------------------- REST


def test_request_sends_bearer_token_and_json_body(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(MODELS_URL, json={"id": "fraud"}, status=201)
    assert client.request("create_model", "POST", "/v1beta/models", json={"id": "fraud", "tags": None}) == {
        "id": "fraud"
    }
    [call] = http.calls
    assert call.request.url == MODELS_URL
    assert call.request.method == "POST"
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.request.headers["Content-Type"] == "application/json"
    assert request_json(call) == {"id": "fraud", "tags": None}


def test_request_passes_timeout_and_tls_verification(http: responses.RequestsMock) -> None:
    http.get(BASE_URL + "/v1beta/capabilities/", json={"is_field_schema_supported": True})
    client = AporiaClient(BASE_URL, TOKEN, verify_ssl=False, timeout=7.5)
    assert client.request("capabilities", "GET", "/v1beta/capabilities/") == {"is_field_schema_supported": True}
    [call] = http.calls
    assert call.request.req_kwargs["timeout"] == 7.5
    assert call.request.req_kwargs["verify"] is False


def test_base_url_trailing_slash_is_not_doubled(http: responses.RequestsMock) -> None:
    http.delete(MODELS_URL + "/fraud", status=204)
    assert AporiaClient(BASE_URL + "/", TOKEN).request("delete_model", "DELETE", "/v1beta/models/fraud") is None
    assert http.calls[0].request.url == MODELS_URL + "/fraud"


def test_an_empty_answer_is_none(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(MODELS_URL + "/m/versions/v1/datasets_sync?enabled=true", body="", status=200)
    assert (
        client.request("set_sync_enabled", "POST", "/v1beta/models/m/versions/v1/datasets_sync?enabled=true", {})
        is None
    )


def test_an_ok_status_is_an_answer_not_an_error(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(MODELS_URL, json={"detail": "Model 'fraud' already exists."}, status=409)
    answer = client.request("create_model", "POST", "/v1beta/models", json={}, ok=[409])
    assert answer == {"detail": "Model 'fraud' already exists."}
    assert len(http.calls) == 1


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "; check the API token stored as the password of the Aporia connection"),
        (403, "; check that the API token may access this model"),
        (404, "; check the model id, version and the Aporia host"),
        (405, "; check the Aporia host and port: they do not serve the Aporia API"),
        (400, ""),
        (409, ""),
        (422, ""),
    ],
)
def test_client_errors_are_not_retried_and_carry_a_hint(
    client: AporiaClient, http: responses.RequestsMock, status: int, hint: str
) -> None:
    http.get(MODELS_URL, json={"detail": "nope"}, status=status)
    with pytest.raises(AporiaError) as raised:
        client.request("list_models", "GET", "/v1beta/models")
    assert str(raised.value) == f"Aporia list_models failed: HTTP {status}: nope{hint}."
    assert len(http.calls) == 1


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"json": {"message": "bad field"}}, "bad field"),
        ({"json": {"detail": "", "message": "second"}}, "second"),
        ({"json": {"error": "x"}}, "{'error': 'x'}"),
        ({"json": ["a", "b"]}, "['a', 'b']"),
        ({"body": "  plain text\n"}, "plain text"),
        ({"body": ""}, "Bad Request"),
        ({"json": {"detail": "x" * 400}}, "x" * 300),
        ({"body": "y" * 400}, "y" * 300),
    ],
)
def test_the_reason_comes_from_the_body(
    client: AporiaClient, http: responses.RequestsMock, answer: dict[str, object], reason: str
) -> None:
    http.add(responses.GET, MODELS_URL, status=400, **answer)
    with pytest.raises(AporiaError) as raised:
        client.request("list_models", "GET", "/v1beta/models")
    assert str(raised.value) == f"Aporia list_models failed: HTTP 400: {reason}."


# ----------------------------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(client: AporiaClient, http: responses.RequestsMock, status: int) -> None:
    http.get(MODELS_URL, json={"detail": "busy"}, status=status)
    http.get(MODELS_URL, json={"detail": "busy"}, status=status)
    http.get(MODELS_URL, json=[{"id": "fraud"}])
    assert client.request("list_models", "GET", "/v1beta/models") == [{"id": "fraud"}]
    assert len(http.calls) == 3


def test_transient_statuses_exhaust_max_attempts(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.get(MODELS_URL, json={"detail": "maintenance"}, status=503)
    with pytest.raises(AporiaError) as raised:
        client.request("list_models", "GET", "/v1beta/models")
    assert str(raised.value) == f"Aporia list_models failed after 4 attempts: HTTP 503: maintenance; {UNREACHABLE}"
    assert len(http.calls) == 4


def test_max_attempts_is_honoured(http: responses.RequestsMock) -> None:
    http.get(MODELS_URL, body="upstream down", status=502)
    client = AporiaClient(BASE_URL, TOKEN, max_attempts=2, backoff_seconds=0)
    with pytest.raises(AporiaError) as raised:
        client.request("list_models", "GET", "/v1beta/models")
    assert str(raised.value) == f"Aporia list_models failed after 2 attempts: HTTP 502: upstream down; {UNREACHABLE}"
    assert len(http.calls) == 2


def test_connection_errors_are_retried_then_named(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.get(MODELS_URL, body=requests.ConnectionError("refused"))
    with pytest.raises(AporiaError) as raised:
        client.request("list_models", "GET", "/v1beta/models")
    assert str(raised.value) == f"Aporia list_models failed after 4 attempts: cannot reach {BASE_URL}; {UNREACHABLE}"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert len(http.calls) == 4


def test_a_connection_error_then_success(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.get(MODELS_URL, body=requests.ConnectionError("reset"))
    http.get(MODELS_URL, json=[])
    assert client.request("list_models", "GET", "/v1beta/models") == []
    assert len(http.calls) == 2


def test_timeouts_are_retried_then_named(http: responses.RequestsMock) -> None:
    http.get(MODELS_URL, body=requests.ReadTimeout("slow"))
    client = AporiaClient(BASE_URL, TOKEN, timeout=2.5, max_attempts=3, backoff_seconds=0)
    with pytest.raises(AporiaError) as raised:
        client.request("list_models", "GET", "/v1beta/models")
    assert str(raised.value) == f"Aporia list_models failed after 3 attempts: no answer within 2.5 s; {UNREACHABLE}"
    assert len(http.calls) == 3


def test_each_retry_is_logged(
    client: AporiaClient, http: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    http.get(MODELS_URL, json={"detail": "busy"}, status=429)
    http.get(MODELS_URL, json=[])
    with caplog.at_level(logging.WARNING, logger="aporia_provider.client"):
        client.request("list_models", "GET", "/v1beta/models")
    assert "Aporia list_models: attempt 1 failed (HTTP 429: busy); retrying." in caplog.messages


# ----------------------------------------------------------------------------------------------- GraphQL


def test_graphql_body_and_answer(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json=graphql_ok({"modelVersionSchema": None}))
    variables = {"modelId": "fraud", "modelVersion": "v1"}
    assert client.graphql("modelVersionSchema", MODEL_VERSION_SCHEMA, variables) == ({"modelVersionSchema": None}, 0)
    [call] = http.calls
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.request.headers["Content-Type"] == "application/json"
    assert request_json(call) == {"query": MODEL_VERSION_SCHEMA, "variables": variables}


def test_graphql_reports_its_retries(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, status=503)
    http.post(GRAPHQL_URL, body=requests.ConnectionError("reset"))
    http.post(GRAPHQL_URL, json=graphql_ok({"x": 1}))
    assert client.graphql("q", "query { x }", {}) == ({"x": 1}, 2)


def test_graphql_without_data_is_an_empty_dict(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json={"data": None})
    assert client.graphql("q", "query { x }", {}) == ({}, 0)


def test_graphql_errors_with_http_200_are_joined(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json={"data": None, "errors": [{"message": "first"}, {"message": "second"}, {"code": 7}]})
    with pytest.raises(AporiaError) as raised:
        client.graphql("modelVersionSchema", MODEL_VERSION_SCHEMA, {})
    assert str(raised.value) == "Aporia modelVersionSchema failed: first; second; {'code': 7}"
    assert len(http.calls) == 1


def test_graphql_http_errors_carry_the_hint(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json={"detail": "Invalid token"}, status=401)
    with pytest.raises(AporiaError) as raised:
        client.graphql("logPredictions", LOG_PREDICTIONS, {})
    assert str(raised.value) == (
        "Aporia logPredictions failed: HTTP 401: Invalid token; "
        "check the API token stored as the password of the Aporia connection."
    )
    assert len(http.calls) == 1


# ----------------------------------------------------------------------------------------------- logPredictions


def test_log_fragments_sends_the_design_mutation_in_batches(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json=graphql_ok({"logPredictions": {"warnings": []}}))
    fragments = [
        {"id": "a", "features": {"amount": 1.5}, "predictions": {"proba": 0.2}, "occurredAt": "2026-11-20T00:00:00Z"},
        {"id": "b", "actuals": {"proba": 1}},
        {"id": "c", "rawInputs": {"text": "x"}},
        {"id": "d", "predictions": {"proba": 0.9}},
        {"id": "e", "predictions": {"proba": 0.1}},
    ]
    result = client.log_fragments("fraud", "v1", iter(fragments), batch_size=2)
    assert result == LogResult(fragments=5, batches=3, retries=0, warnings=[])
    bodies = [request_json(call) for call in http.calls]
    assert [body["variables"]["predictions"] for body in bodies] == [fragments[0:2], fragments[2:4], fragments[4:]]
    for body in bodies:
        assert set(body) == {"query", "variables"}
        assert body["query"] == LOG_PREDICTIONS
        assert {k: v for k, v in body["variables"].items() if k != "predictions"} == {
            "modelId": "fraud",
            "modelVersion": "v1",
            "environment": "staging",
            "isSync": True,
        }


def test_the_mutation_declares_the_design_signature() -> None:
    text = " ".join(LOG_PREDICTIONS.split())
    assert "mutation LogPredictions($modelId: String!, $modelVersion: String!, $environment: String!," in text
    assert "$predictions: [Prediction]!, $isSync: Boolean!)" in text
    assert (
        "logPredictions(modelId: $modelId, modelVersion: $modelVersion, environment: $environment, "
        "predictions: $predictions, isSync: $isSync) { warnings }"
    ) in text


def test_log_fragments_escapes_ids_and_sends_is_sync(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json=graphql_ok({"logPredictions": {"warnings": None}}))
    result = client.log_fragments('we"ird\\model', "v1 ü", [{"id": 'x"1', "actuals": {"p": None}}], is_sync=False)
    assert result == LogResult(1, 1, 0, [])
    variables = request_json(http.calls[0])["variables"]
    assert variables == {
        "modelId": 'we"ird\\model',
        "modelVersion": "v1 ü",
        "environment": "staging",
        "isSync": False,
        "predictions": [{"id": 'x"1', "actuals": {"p": None}}],
    }


def test_log_fragment_json_splices_serialised_fragments(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json=graphql_ok({"logPredictions": {"warnings": ["w"]}}))
    result = client.log_fragment_json("fraud", "v1", ['{"id": "a", "actuals": {"proba": 1}}', '{"id":"b"}'])
    assert result == LogResult(2, 1, 0, ["w"])
    assert request_json(http.calls[0])["variables"]["predictions"] == [
        {"id": "a", "actuals": {"proba": 1}},
        {"id": "b"},
    ]


def test_log_fragments_adds_up_retries_and_warnings(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, status=429)
    http.post(GRAPHQL_URL, json=graphql_ok({"logPredictions": {"warnings": ["w1"]}}))
    http.post(GRAPHQL_URL, json=graphql_ok({"logPredictions": {"warnings": ["w2", "w3"]}}))
    result = client.log_fragments("fraud", "v1", [{"id": str(i)} for i in range(3)], batch_size=2)
    assert result == LogResult(fragments=3, batches=2, retries=1, warnings=["w1", "w2", "w3"])
    assert len(http.calls) == 3


def test_log_fragments_of_nothing_sends_nothing(client: AporiaClient, http: responses.RequestsMock) -> None:
    assert client.log_fragments("fraud", "v1", []) == LogResult()
    assert len(http.calls) == 0


def test_log_fragments_fails_on_graphql_errors(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json={"errors": [{"message": "Model 'fraud' has no version 'v9'"}]})
    with pytest.raises(AporiaError) as raised:
        client.log_fragments("fraud", "v9", [{"id": "a"}])
    assert str(raised.value) == "Aporia logPredictions failed: Model 'fraud' has no version 'v9'"


def test_log_result_add() -> None:
    total = LogResult(1, 1, 0, ["a"])
    total.add(LogResult(2, 3, 4, ["b"]))
    assert total == LogResult(3, 4, 4, ["a", "b"])


# ----------------------------------------------------------------------------------------------- misc


def test_iter_version_schema_maps_wire_groups_and_tensors() -> None:
    answer = {
        "features": [
            {"name": "amount", "type": "numeric", "dimensions": None},
            {"name": "emb", "type": "tensor", "dimensions": [4]},
        ],
        "predictions": [{"name": "proba", "type": "numeric"}],
        "rawInputs": [{"name": "text", "type": "text", "dimensions": []}],
    }
    assert list(iter_version_schema(answer)) == [
        ("features", "amount", "numeric"),
        ("features", "emb", {"type": "tensor", "dimensions": [4]}),
        ("predictions", "proba", "numeric"),
        ("raw_inputs", "text", "text"),
    ]
    assert list(iter_version_schema({"predictions": None})) == []


def test_repr_hides_the_token() -> None:
    text = repr(AporiaClient(BASE_URL, "super-secret-token"))
    assert "super-secret-token" not in text and BASE_URL in text


def test_sdk_retry_defaults() -> None:
    client = AporiaClient(BASE_URL, TOKEN)
    assert (client.environment, client.max_attempts, client.timeout, client.verify_ssl) == ("production", 4, 60.0, True)


def test_the_request_body_is_json_text(client: AporiaClient, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json=graphql_ok({"logPredictions": {"warnings": []}}))
    client.log_fragments("m", "v", [{"id": "a"}])
    body = http.calls[0].request.body
    assert isinstance(body, bytes)
    assert json.loads(body)["variables"]["predictions"] == [{"id": "a"}]


# ----------------------------------------------------------------------------------------- concurrent batches


class Ingest:
    """A stubbed logPredictions endpoint that answers from several threads at once and remembers what it took."""

    def __init__(self, failures: dict[str, list[int]] | None = None, hold: float = 0.05) -> None:
        self.failures = failures or {}  # first id of a batch -> statuses to answer before succeeding
        self.hold = hold
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.delivered: list[str] = []

    def __call__(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        ids = [fragment["id"] for fragment in json.loads(body)["variables"]["predictions"]]
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            statuses = self.failures.get(ids[0], [])
            status = statuses.pop(0) if statuses else 200
        time.sleep(self.hold)
        with self.lock:
            self.in_flight -= 1
            if status == 200:
                self.delivered += ids
        return status, {}, json.dumps(graphql_ok({"logPredictions": {"warnings": []}}))


def batches_of(count: int, size: int = 2) -> list[tuple[str, int]]:
    return [(",".join(json.dumps({"id": f"b{n}-{i}"}) for i in range(size)), size) for n in range(count)]


def test_batches_go_several_at_once_and_each_is_delivered_once(
    client: AporiaClient, http: responses.RequestsMock
) -> None:
    ingest = Ingest()
    http.add_callback(responses.POST, GRAPHQL_URL, callback=ingest)
    result = client.log_batches("fraud", "v1", iter(batches_of(9)), in_flight=3)
    assert result == LogResult(fragments=18, batches=9, retries=0, warnings=[])
    assert sorted(ingest.delivered) == sorted(
        json.loads(f"[{batch}]")[i]["id"] for batch, size in batches_of(9) for i in range(size)
    )
    assert ingest.most_in_flight == 3


def test_a_5xx_on_one_batch_in_flight_is_retried_and_the_rest_go_on(
    client: AporiaClient, http: responses.RequestsMock
) -> None:
    ingest = Ingest(failures={"b4-0": [503, 502]})
    http.add_callback(responses.POST, GRAPHQL_URL, callback=ingest)
    result = client.log_batches("fraud", "v1", iter(batches_of(8)), in_flight=4)
    assert (result.fragments, result.batches, result.retries) == (16, 8, 2)
    assert len(ingest.delivered) == len(set(ingest.delivered)) == 16


def test_a_batch_that_fails_for_good_fails_the_delivery_after_the_others_in_flight(
    client: AporiaClient, http: responses.RequestsMock
) -> None:
    ingest = Ingest(failures={"b1-0": [401]})
    http.add_callback(responses.POST, GRAPHQL_URL, callback=ingest)
    with pytest.raises(AporiaError) as raised:
        client.log_batches("fraud", "v1", iter(batches_of(20)), in_flight=3)
    assert str(raised.value).startswith("Aporia logPredictions failed: HTTP 401")
    assert ingest.in_flight == 0  # nothing was left posting behind the failure
    assert len(ingest.delivered) < 40  # batches after the failure were not taken


def test_when_taking_the_next_batch_raises_the_requests_under_way_finish_first(
    client: AporiaClient, http: responses.RequestsMock
) -> None:
    ingest = Ingest()
    http.add_callback(responses.POST, GRAPHQL_URL, callback=ingest)

    def stopped_after_five() -> Iterator[tuple[str, int]]:
        yield from batches_of(5)
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        client.log_batches("fraud", "v1", stopped_after_five(), in_flight=3)
    assert ingest.in_flight == 0
    assert len(ingest.delivered) == 10
