"""AporiaHook against stubbed HTTP: the connection, the wire bodies of DESIGN §3, and test_connection."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import responses

from aporia_provider.client import MODEL_VERSION_SCHEMA, AporiaClient, LogResult
from aporia_provider.compat import AirflowFailException
from aporia_provider.datasources import JDBCDataSource
from aporia_provider.exceptions import AporiaError, SchemaError
from aporia_provider.hooks.aporia import AporiaHook
from aporia_provider.schema import FieldSpec, VersionSchema
from tests.unit.conftest import BASE_URL, GRAPHQL_URL, TOKEN, ConnectionFactory, request_json

MODELS_URL = BASE_URL + "/v1beta/models"
VERSIONS_URL = MODELS_URL + "/fraud/versions"
JDBC_URL = "jdbc:redshift:iam://examplecluster.abc123.us-west-2.redshift.amazonaws.com:5439/dev"


@pytest.fixture
def hook(aporia_conn: dict[str, Any]) -> AporiaHook:
    """The hook on the default connection, with retries that do not sleep."""
    made = AporiaHook()
    made.__dict__["client"] = replace(made.client, backoff_seconds=0)
    return made


# ----------------------------------------------------------------------------------------------- connection


def test_client_is_built_from_the_connection(connection: ConnectionFactory) -> None:
    connection(
        "aporia_eu",
        conn_type="aporia",
        host="eu.aporia.test",
        port=8443,
        schema="https",
        password="eu-token-123",
        extra={"environment": "staging", "verify_ssl": "false", "timeout": "12.5"},
    )
    client = AporiaHook(aporia_conn_id="aporia_eu").client
    assert client == AporiaClient(
        base_url="https://eu.aporia.test:8443",
        token="eu-token-123",
        environment="staging",
        verify_ssl=False,
        timeout=12.5,
    )


def test_connection_defaults_are_aporia_cloud(connection: ConnectionFactory) -> None:
    connection("aporia_default", conn_type="aporia", password="cloud-token-1")
    client = AporiaHook(timeout=30).client
    assert (client.base_url, client.environment, client.verify_ssl, client.timeout, client.max_attempts) == (
        "https://app.aporia.com:443",
        "production",
        True,
        30.0,
        4,
    )


def test_plain_http_defaults_to_port_80(connection: ConnectionFactory) -> None:
    connection("aporia_default", conn_type="aporia", host="aporia.internal", schema="http", password="t0ken-abc")
    assert AporiaHook().client.base_url == "http://aporia.internal:80"


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), ("yes", True), ("0", False), ("On", True)]
)
def test_verify_ssl_extra(connection: ConnectionFactory, value: Any, expected: bool) -> None:
    connection("aporia_default", conn_type="aporia", password="t0ken-abc", extra={"verify_ssl": value})
    assert AporiaHook().client.verify_ssl is expected


def test_a_connection_without_token(connection: ConnectionFactory) -> None:
    connection("aporia_default", conn_type="aporia", host="aporia.test")
    with pytest.raises(AirflowFailException) as raised:
        AporiaHook().client  # noqa: B018
    assert str(raised.value) == (
        "Connection 'aporia_default' has no API token; store the Aporia token as its password."
    )


def test_a_connection_with_another_scheme(connection: ConnectionFactory) -> None:
    connection("aporia_default", conn_type="aporia", schema="ftp", password="t0ken-abc")
    with pytest.raises(AirflowFailException) as raised:
        AporiaHook().client  # noqa: B018
    assert str(raised.value) == "Connection 'aporia_default' has scheme 'ftp'; set its schema field to https or http."


def test_a_missing_connection() -> None:
    with pytest.raises(AirflowFailException) as raised:
        AporiaHook(aporia_conn_id="aporia_missing").client  # noqa: B018
    assert str(raised.value) == (
        "The Aporia connection 'aporia_missing' is not defined; create it in Airflow "
        "(UI, CLI or an AIRFLOW_CONN_APORIA_MISSING variable)."
    )


def test_hook_metadata() -> None:
    assert (AporiaHook.conn_type, AporiaHook.hook_name, AporiaHook.conn_name_attr, AporiaHook.default_conn_name) == (
        "aporia",
        "Aporia",
        "aporia_conn_id",
        "aporia_default",
    )


# ----------------------------------------------------------------------------------------------- test_connection


def test_test_connection_succeeds(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.get(BASE_URL + "/v1beta/capabilities/", json={"is_field_schema_supported": True})
    assert AporiaHook().test_connection() == (True, f"Connected to Aporia at {BASE_URL}.")
    [call] = http.calls
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_test_connection_with_a_wrong_token(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.get(BASE_URL + "/v1beta/capabilities/", json={"detail": "Invalid token"}, status=401)
    assert AporiaHook().test_connection() == (
        False,
        "Aporia test_connection failed: HTTP 401: Invalid token; "
        "check the API token stored as the password of the Aporia connection.",
    )


def test_test_connection_tries_once(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.get(BASE_URL + "/v1beta/capabilities/", json={"detail": "down"}, status=503)
    ok, message = AporiaHook().test_connection()
    assert not ok
    assert message == (
        f"Aporia test_connection failed after 1 attempt: HTTP 503: down; "
        f"check that Aporia is up and reachable at {BASE_URL}."
    )
    assert len(http.calls) == 1


def test_test_connection_without_a_connection(http: responses.RequestsMock) -> None:
    assert AporiaHook(aporia_conn_id="nowhere").test_connection() == (
        False,
        "The Aporia connection 'nowhere' is not defined; create it in Airflow "
        "(UI, CLI or an AIRFLOW_CONN_NOWHERE variable).",
    )
    assert len(http.calls) == 0


# ----------------------------------------------------------------------------------------------- models


def test_create_model_body(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(MODELS_URL, json={"id": "fraud"}, status=201)
    created = hook.create_model(
        "fraud", "Fraud", description="d", owner="ml@x", color="red", icon="fraud", tags={"team": "risk"}
    )
    assert created is True
    [call] = http.calls
    assert call.request.method == "POST" and call.request.url == MODELS_URL
    assert request_json(call) == {
        "id": "fraud",
        "name": "Fraud",
        "description": "d",
        "owner": "ml@x",
        "color": "red",
        "icon": "fraud",
        "tags": {"team": "risk"},
    }


def test_create_model_sends_every_sdk_key(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(MODELS_URL, json={"id": "fraud"}, status=201)
    hook.create_model("fraud", "Fraud")
    body = request_json(http.calls[0])
    assert set(body) == {"id", "name", "description", "owner", "color", "icon", "tags"}
    assert (body["id"], body["name"], body["description"], body["owner"], body["tags"]) == (
        "fraud",
        "Fraud",
        None,
        None,
        None,
    )
    # The SDK's defaults (aporia 2.19 sends these when the caller names none).
    assert (body["color"], body["icon"]) == ("blue", "general")


def test_create_model_treats_409_as_existing(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(MODELS_URL, json={"detail": "Model 'fraud' already exists."}, status=409)
    assert hook.create_model("fraud", "Fraud") is False
    assert len(http.calls) == 1


def test_delete_model_quotes_the_id(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.delete(MODELS_URL + "/a%2Fb%20c", status=204)
    hook.delete_model("a/b c")
    [call] = http.calls
    assert call.request.method == "DELETE" and call.request.url == MODELS_URL + "/a%2Fb%20c"


# ----------------------------------------------------------------------------------------------- versions

FEATURES = {"amount": "numeric", "emb": {"type": "tensor", "dimensions": [4]}}
PREDICTIONS = {"will_buy": "boolean", "proba": "numeric"}


def test_create_model_version_body(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(VERSIONS_URL, json={}, status=201)
    schema = hook.create_model_version(
        "fraud",
        "v1",
        "binary",
        features=FEATURES,
        predictions=PREDICTIONS,
        raw_inputs={"text": "text"},
        labels={"proba": "label"},
        feature_importance={"amount": 0.7},
        mapping={"actual_names": {"proba": "label"}},
        model_data_type="tabular",
    )
    assert schema == VersionSchema.parse(FEATURES, PREDICTIONS, {"text": "text"})
    [call] = http.calls
    assert call.request.url == VERSIONS_URL
    assert request_json(call) == {
        "name": "v1",
        "model_type": "binary",
        "version_schema": {
            "features": {"amount": "numeric", "emb": {"type": "tensor", "dimensions": [4]}},
            "predictions": {"will_buy": "boolean", "proba": "numeric"},
            "raw_inputs": {"text": "text"},
            "metrics": {},
            "feature_positions": {"amount": 0, "emb": 1},
        },
        "model_data_type": "tabular",
        "labels": {"proba": "label"},
        "feature_importance": {"amount": 0.7},
        "mapping": {"actual_names": {"proba": "label"}},
    }


def test_create_model_version_without_optionals_sends_nulls(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(MODELS_URL + "/a%2Fb/versions", json={}, status=201)
    hook.create_model_version("a/b", "v1", "regression", features={"x": "numeric"}, predictions={"y": "numeric"})
    body = request_json(http.calls[0])
    assert (body["labels"], body["feature_importance"], body["mapping"]) == (None, None, None)
    # As the SDK: model_data_type only when the caller gives one.
    assert set(body) == {"name", "model_type", "version_schema", "labels", "feature_importance", "mapping"}


def test_create_model_version_checks_the_schema_before_calling(hook: AporiaHook, http: responses.RequestsMock) -> None:
    with pytest.raises(SchemaError) as raised:
        hook.create_model_version("fraud", "v1", "binary", features={"amount": "float"}, predictions=PREDICTIONS)
    assert str(raised.value).startswith("The feature 'amount' has unknown type 'float';")
    with pytest.raises(SchemaError) as raised:
        hook.create_model_version("fraud", "v1", "logistic", features=FEATURES, predictions=PREDICTIONS)
    assert str(raised.value).startswith("model_type 'logistic' is not supported;")
    assert len(http.calls) == 0


def test_create_model_version_error(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(VERSIONS_URL, json={"detail": "version v1 exists"}, status=409)
    with pytest.raises(AporiaError) as raised:
        hook.create_model_version("fraud", "v1", "binary", features=FEATURES, predictions=PREDICTIONS)
    assert str(raised.value) == "Aporia create_model_version failed: HTTP 409: version v1 exists."


def test_get_model_version_schema(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(
        GRAPHQL_URL,
        json={
            "data": {
                "modelVersionSchema": {
                    "features": [
                        {"name": "amount", "type": "numeric", "dimensions": None},
                        {"name": "emb", "type": "tensor", "dimensions": [4]},
                    ],
                    "predictions": [{"name": "proba", "type": "numeric", "dimensions": None}],
                    "rawInputs": [],
                }
            }
        },
    )
    schema = hook.get_model_version_schema("fraud", "v1")
    assert schema == VersionSchema(
        (FieldSpec("amount", "numeric"), FieldSpec("emb", "tensor", (4,))), (FieldSpec("proba", "numeric"),)
    )
    assert request_json(http.calls[0]) == {
        "query": MODEL_VERSION_SCHEMA,
        "variables": {"modelId": "fraud", "modelVersion": "v1"},
    }


@pytest.mark.parametrize(
    "answer",
    [
        {"data": {"modelVersionSchema": None}},
        {"data": None, "errors": [{"message": "Model version v9 not found"}]},
        {"errors": [{"message": "Version 'v9' does not exist"}]},
        {"errors": [{"message": "Model 'fraud' has no version 'v9'"}]},
    ],
)
def test_a_missing_version_has_no_schema(hook: AporiaHook, http: responses.RequestsMock, answer: Any) -> None:
    http.post(GRAPHQL_URL, json=answer)
    assert hook.get_model_version_schema("fraud", "v9") is None


def test_other_schema_errors_are_raised(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json={"errors": [{"message": "Internal error"}]})
    with pytest.raises(AporiaError) as raised:
        hook.get_model_version_schema("fraud", "v1")
    assert str(raised.value) == "Aporia modelVersionSchema failed: Internal error"


# ----------------------------------------------------------------------------------------------- data sets


def test_connect_dataset_body(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(VERSIONS_URL + "/v1/datasets", json={}, status=201)
    source = JDBCDataSource(url=JDBC_URL, query="SELECT * FROM ml.predictions", select_expr=["*"])
    hook.connect_dataset(
        "fraud",
        "v1",
        "serving",
        source,
        "prediction_id",
        "predicted_at",
        features={"amount": "amount_usd"},
        predictions={"proba": "score"},
        labels={"proba": "label"},
        raw_inputs={"text": "raw_text"},
        schedule="0 * * * *",
    )
    assert request_json(http.calls[0]) == {
        "name": "serving",
        "data_source": {
            "type": "jdbc",
            "config": {
                "url": JDBC_URL,
                "query": "SELECT * FROM ml.predictions",
                "user": None,
                "password": None,
                "sample_size": 1,
                "select_expr": ["*"],
                "read_options": None,
            },
        },
        "sync": {"enabled": True, "environment": "staging", "schedule": "0 * * * *"},
        "id_column": "prediction_id",
        "timestamp_column": "predicted_at",
        "features": {"amount": "amount_usd"},
        "predictions": {"proba": "score"},
        "labels": {"proba": "label"},
        "raw_inputs": {"text": "raw_text"},
    }


def test_connect_dataset_leaves_out_empty_mappings(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(VERSIONS_URL + "/v%201/datasets", json={}, status=201)
    hook.connect_dataset(
        "fraud", "v 1", "actuals", JDBCDataSource(url=JDBC_URL, query="SELECT 1"), "id", "ts", features={}
    )
    body = request_json(http.calls[0])
    assert set(body) == {"name", "data_source", "sync", "id_column", "timestamp_column"}
    assert body["name"] == "actuals"
    assert body["sync"] == {"enabled": True, "environment": "staging"}


def test_connect_dataset_waits_as_long_as_the_sdk(
    hook: AporiaHook, http: responses.RequestsMock, connection: ConnectionFactory, aporia_conn: dict[str, Any]
) -> None:
    # Aporia checks the query against the database before answering: the SDK waits 600 s for that.
    http.post(VERSIONS_URL + "/v1/datasets", json={}, status=201)
    source = JDBCDataSource(url=JDBC_URL, query="SELECT 1")
    hook.connect_dataset("fraud", "v1", "serving", source, "id", "ts")
    assert http.calls[0].request.req_kwargs["timeout"] == 600
    # Other calls keep the connection's timeout.
    http.get(BASE_URL + "/v1beta/capabilities/", json={})
    hook.client.request("capabilities", "GET", "/v1beta/capabilities/")
    assert http.calls[1].request.req_kwargs["timeout"] == 60
    # A connection that allows longer keeps its own.
    connection("aporia_slow", **(aporia_conn | {"extra": {"timeout": 900}}))
    AporiaHook("aporia_slow").connect_dataset("fraud", "v1", "serving", source, "id", "ts")
    assert http.calls[2].request.req_kwargs["timeout"] == 900


def test_connect_dataset_refuses_an_unknown_data_set(hook: AporiaHook, http: responses.RequestsMock) -> None:
    with pytest.raises(AirflowFailException) as raised:
        hook.connect_dataset("fraud", "v1", "validation", JDBCDataSource(url=JDBC_URL, query="SELECT 1"), "id", "ts")
    assert str(raised.value) == (
        "dataset 'validation' is not one of serving, training, testing, actuals; pick one of those."
    )
    assert len(http.calls) == 0


@pytest.mark.parametrize(("enabled", "flag"), [(True, "true"), (False, "false")])
def test_set_sync_enabled(hook: AporiaHook, http: responses.RequestsMock, enabled: bool, flag: str) -> None:
    url = f"{VERSIONS_URL}/v1/datasets_sync?enabled={flag}"
    http.post(url, json={})
    hook.set_sync_enabled("fraud", "v1", enabled)
    [call] = http.calls
    assert call.request.url == url
    assert request_json(call) == {}


def test_get_sync_status(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.get(VERSIONS_URL + "/v1/sync_status/serving", json={"status": "synced", "rows": 10})
    assert hook.get_sync_status("fraud", "v1", "serving") == {"status": "synced", "rows": 10}
    assert http.calls[0].request.method == "GET"


def test_log_fragments_uses_the_connection_environment(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json={"data": {"logPredictions": {"warnings": []}}})
    result = hook.log_fragments("fraud", "v1", [{"id": "a", "actuals": {"proba": 1}}], is_sync=False)
    assert result == LogResult(1, 1, 0, [])
    variables = request_json(http.calls[0])["variables"]
    assert (variables["environment"], variables["isSync"]) == ("staging", False)


def test_hook_calls_are_retried(hook: AporiaHook, http: responses.RequestsMock) -> None:
    http.get(VERSIONS_URL + "/v1/sync_status/serving", status=502)
    http.get(VERSIONS_URL + "/v1/sync_status/serving", json={"status": "syncing"})
    assert hook.get_sync_status("fraud", "v1", "serving") == {"status": "syncing"}
    assert len(http.calls) == 2
