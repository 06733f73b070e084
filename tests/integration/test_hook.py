"""AporiaHook and RedshiftIAMHook against the local stack: wire bodies, errors, retries, Redshift IAM, secrets."""

from __future__ import annotations

import json
import logging
from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aporia_local.stack import DATABASE, DB_USER, IAM_USER, READER_POLICY, LocalStack
from aporia_provider.compat import AirflowException
from aporia_provider.datasources import JDBCDataSource
from aporia_provider.exceptions import AporiaError, SchemaError
from aporia_provider.hooks.aporia import AporiaHook
from aporia_provider.hooks.redshift import RedshiftCredentials, RedshiftIAMHook
from tests.helpers import AporiaProbe

pytestmark = pytest.mark.usefixtures("airflow_env")
SCHEMA: dict[str, Any] = {
    "raw_inputs": {"raw_text": "text"},
    "features": {
        "amount": "numeric",
        "owner": "string",
        "is_new": "boolean",
        "embeddings": {"type": "tensor", "dimensions": [4]},
    },
    "predictions": {"will_buy_insurance": "boolean", "proba": "numeric"},
}


@pytest.fixture
def hook() -> AporiaHook:
    return AporiaHook()


@pytest.fixture
def redshift() -> RedshiftIAMHook:
    return RedshiftIAMHook()


def test_create_model_sends_the_sdk_body_and_treats_409_as_existing(hook: AporiaHook, aporia: AporiaProbe) -> None:
    assert hook.create_model("fraud", "Fraud", description="d", owner="ml@x", tags={"team": "risk"}) is True
    assert hook.create_model("fraud", "Fraud") is False
    [model] = aporia.get("/v1beta/models")
    assert {k: model[k] for k in ("id", "name", "description", "owner", "tags")} == {
        "id": "fraud",
        "name": "Fraud",
        "description": "d",
        "owner": "ml@x",
        "tags": {"team": "risk"},
    }


def test_create_model_version_body_matches_the_design(hook: AporiaHook, aporia: AporiaProbe) -> None:
    hook.create_model("fraud", "Fraud")
    hook.create_model_version("fraud", "v1", "binary", **SCHEMA)
    [version] = aporia.get("/v1beta/models/fraud/versions")
    assert version["name"] == "v1" and version["model_type"] == "binary"
    assert version["version_schema"] == {
        "features": {
            "amount": "numeric",
            "owner": "string",
            "is_new": "boolean",
            "embeddings": {"type": "tensor", "dimensions": [4]},
        },
        "predictions": {"will_buy_insurance": "boolean", "proba": "numeric"},
        "raw_inputs": {"raw_text": "text"},
        "metrics": {},
        "feature_positions": {"amount": 0, "owner": 1, "is_new": 2, "embeddings": 3},
    }
    schema = hook.get_model_version_schema("fraud", "v1")
    assert schema is not None and schema.to_wire() == version["version_schema"]
    assert hook.get_model_version_schema("fraud", "v9") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": {"amount": "money"}}, "The feature 'amount' has unknown type 'money'; use one of numeric,"),
        ({"features": {"e": {"type": "tensor"}}}, "The feature 'e' is a tensor without valid dimensions"),
        ({"features": {}, "predictions": {}}, "The schema is empty"),
        ({"model_type": "clustering"}, "model_type 'clustering' is not supported; use one of regression, binary"),
    ],
)
def test_schema_errors_name_the_field_and_send_nothing(
    hook: AporiaHook, aporia: AporiaProbe, kwargs: dict[str, Any], message: str
) -> None:
    hook.create_model("fraud", "Fraud")
    arguments: dict[str, Any] = {"model_type": "binary", "features": {"a": "numeric"}, "predictions": {"p": "numeric"}}
    with pytest.raises(SchemaError, match=message.replace("(", r"\(")):
        hook.create_model_version("fraud", "v1", **(arguments | kwargs))
    assert aporia.get("/v1beta/models/fraud/versions") == []


def test_connect_dataset_and_sync_controls(hook: AporiaHook, aporia: AporiaProbe) -> None:
    hook.create_model("fraud", "Fraud")
    hook.create_model_version("fraud", "v1", "binary", **SCHEMA)
    source = JDBCDataSource(url="jdbc:postgresql://db.example:5432/dev", query="SELECT * FROM t", select_expr=["*"])
    hook.connect_dataset(
        "fraud",
        "v1",
        "serving",
        source,
        "prediction_id",
        "prediction_timestamp",
        labels={"will_buy_insurance": "did_buy_insurance"},
        schedule="0 * * * *",
    )
    [dataset] = aporia.get("/v1beta/models/fraud/versions/v1/datasets")
    assert dataset["name"] == "serving"
    assert dataset["data_source"] == {
        "type": "jdbc",
        "config": {
            "url": "jdbc:postgresql://db.example:5432/dev",
            "query": "SELECT * FROM t",
            "user": None,
            "password": None,
            "sample_size": 1,
            "select_expr": ["*"],
            "read_options": None,
        },
    }
    assert dataset["sync"] == {"enabled": True, "environment": "production", "schedule": "0 * * * *"}
    assert (dataset["id_column"], dataset["timestamp_column"]) == ("prediction_id", "prediction_timestamp")
    assert dataset["labels"] == {"will_buy_insurance": "did_buy_insurance"}
    hook.set_sync_enabled("fraud", "v1", False)
    assert hook.get_sync_status("fraud", "v1", "serving")["enabled"] is False
    with pytest.raises(AirflowException, match="dataset 'scoring' is not one of serving, training, testing, actuals"):
        hook.connect_dataset("fraud", "v1", "scoring", source, "id", "ts")


def _prediction(n: int) -> dict[str, Any]:
    return {
        "id": f"p{n}",
        "features": {"amount": float(n), "owner": "o", "is_new": True, "embeddings": [0.1, 0.2, 0.3, 0.4]},
        "predictions": {"will_buy_insurance": True, "proba": 0.5},
        "rawInputs": {"raw_text": "t"},
        "occurredAt": "2026-11-20T00:00:00+00:00",
    }


def test_log_fragments_batches_merges_and_surfaces_warnings(
    hook: AporiaHook, aporia: AporiaProbe, caplog: pytest.LogCaptureFixture
) -> None:
    hook.create_model("fraud", "Fraud")
    hook.create_model_version("fraud", "v1", "binary", **SCHEMA)
    result = hook.log_fragments("fraud", "v1", (_prediction(n) for n in range(25)), batch_size=10)
    assert (result.fragments, result.batches, result.retries, result.warnings) == (25, 3, 0, [])
    bad = _prediction(99) | {"features": {"amount": "lots"}}
    with caplog.at_level(logging.WARNING):
        late = hook.log_fragments("fraud", "v1", [{"id": "p3", "actuals": {"will_buy_insurance": False}}, bad])
    assert any("amount" in w for w in late.warnings)
    assert any("amount" in r.getMessage() for r in caplog.records)
    stored = {f["id"]: f for f in aporia.fragments("fraud", "v1")}
    assert len(stored) == 26
    assert stored["p3"]["actuals"] == {"will_buy_insurance": False}
    assert stored["p3"]["predictions"] == {"will_buy_insurance": True, "proba": 0.5}


def test_transient_failures_are_retried_and_counted(hook: AporiaHook, aporia: AporiaProbe) -> None:
    hook.create_model("fraud", "Fraud")
    hook.create_model_version("fraud", "v1", "binary", **SCHEMA)
    aporia.fail_next(2, status=503)
    result = hook.log_fragments("fraud", "v1", [_prediction(1)])
    assert result.retries == 2
    assert aporia.count("fraud", "v1")["total"] == 1
    aporia.fail_next(5, status=500)
    with pytest.raises(AporiaError, match="Aporia logPredictions failed after 4 attempts: HTTP 500"):
        hook.log_fragments("fraud", "v1", [_prediction(2)])


def test_client_errors_are_not_retried_and_read_clearly(stack: LocalStack, aporia: AporiaProbe) -> None:
    hook = AporiaHook()
    aporia.fail_next(1, status=404, path="/v1beta/models")
    with pytest.raises(AporiaError, match=r"Aporia create_model failed: HTTP 404: .*check the model id"):
        hook.create_model("fraud", "Fraud")
    assert aporia.get("/v1beta/models") == []  # one attempt only: the fault was used up, nothing created


def test_wrong_token_reads_as_one_sentence_without_the_token(
    stack: LocalStack, aporia: AporiaProbe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_APORIA_WRONG",
        f'{{"conn_type": "aporia", "host": "127.0.0.1", "port": {stack.settings.aporia_port}, "schema": "http", '
        '"password": "wrong-token-4f9a"}',
    )
    hook = AporiaHook(aporia_conn_id="aporia_wrong")
    with pytest.raises(AporiaError) as error:
        hook.create_model("fraud", "Fraud")
    assert str(error.value) == (
        "Aporia create_model failed: HTTP 401: Invalid or missing API token; "
        "check the API token stored as the password of the Aporia connection."
    )
    assert "wrong-token-4f9a" not in str(error.value)
    assert hook.test_connection() == (False, str(error.value).replace("create_model", "test_connection"))
    assert AporiaHook().test_connection() == (True, f"Connected to Aporia at {stack.settings.aporia_url}.")


def test_unreachable_host_and_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_APORIA_DOWN",
        '{"conn_type": "aporia", "host": "127.0.0.1", "port": 9, "schema": "http", "password": "t"}',
    )
    ok, message = AporiaHook(aporia_conn_id="aporia_down").test_connection()
    assert not ok
    assert message == (
        "Aporia test_connection failed after 1 attempt: cannot reach http://127.0.0.1:9; "
        "check that Aporia is up and reachable at http://127.0.0.1:9."
    )
    with pytest.raises(AirflowException, match="The Aporia connection 'nope' is not defined; create it in Airflow"):
        AporiaHook(aporia_conn_id="nope").create_model("m", "m")


def test_cluster_credentials_come_from_aws_and_open_redshift(redshift: RedshiftIAMHook) -> None:
    creds = redshift.get_credentials()
    assert creds.user == f"IAM:{DB_USER}"
    assert creds.expires_at is not None
    assert timedelta(minutes=14) < creds.expires_at - datetime.now(timezone.utc) <= timedelta(minutes=15)
    assert redshift.get_credentials() is creds  # cached within the hook
    with redshift.get_conn() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT current_database()")
        assert cursor.fetchone() == [DATABASE]


def test_credentials_are_renewed_shortly_before_expiry(redshift: RedshiftIAMHook) -> None:
    first = redshift.get_credentials()
    redshift._credentials = RedshiftCredentials(
        **{**first.__dict__, "expires_at": datetime.now(timezone.utc) + timedelta(seconds=60)}
    )
    renewed = redshift.get_credentials()
    assert renewed is not first and renewed.expires_at is not None and first.expires_at is not None
    assert renewed.expires_at - datetime.now(timezone.utc) > timedelta(minutes=14)


def test_a_statement_past_the_timeout_is_cancelled_by_redshift_as_a_passing_failure(redshift: RedshiftIAMHook) -> None:
    warehouse = redshift.warehouse(statement_timeout=timedelta(milliseconds=300))
    assert warehouse.jdbc_options()["queryTimeout"] == "1"
    with closing(warehouse.connect()) as connection:
        cursor = connection.cursor()
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "300ms"
        with pytest.raises(Exception) as error:
            cursor.execute("SELECT pg_sleep(5)")
    assert error.value.args[0]["C"] == "57014"  # query_canceled
    assert warehouse.driver_failure(error.value) == (False, "canceling statement due to statement timeout")


def test_serverless_credentials(stack: LocalStack) -> None:
    hook = RedshiftIAMHook(redshift_conn_id="redshift_serverless")
    assert hook.get_credentials().user == f"IAM:{IAM_USER}"
    with hook.get_conn() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == [1]


def test_issued_iam_user_is_not_fed_back_as_db_user(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    connection = stack.connections()["redshift_default"] | {"login": f"IAM:{DB_USER}"}
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_IAM_LOGIN", json.dumps(connection))
    hook = RedshiftIAMHook(redshift_conn_id="redshift_iam_login")
    assert hook.db_user == DB_USER
    assert hook.get_credentials().user == f"IAM:{DB_USER}"


def test_jdbc_url_for_aporia_and_spark_options(redshift: RedshiftIAMHook, stack: LocalStack) -> None:
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    s = stack.settings
    url = redshift.iam_jdbc_url()
    assert url == (
        f"jdbc:redshift:iam://127.0.0.1:{s.redshift_port}/{DATABASE}?AccessKeyID={s.aws_access_key_id}"
        f"&SecretAccessKey={s.aws_secret_access_key.replace('/', '%2F').replace('+', '%2B')}"
        f"&DbUser={DB_USER}&ssl=true&tcpKeepAlive=true"
    )
    assert s.aws_secret_access_key not in str(redact(url))
    options = redshift.spark_jdbc_options()
    assert options["url"] == f"jdbc:postgresql://127.0.0.1:{s.redshift_port}/{DATABASE}?sslmode=disable"
    assert options["user"] == f"IAM:{DB_USER}" and options["driver"] == "org.postgresql.Driver"


def test_iam_policy_is_the_seed_policy_for_the_connection(redshift: RedshiftIAMHook) -> None:
    # The stack's connections unload large windows: the policy reads and deletes the files too.
    statements = READER_POLICY["Statement"]
    assert redshift.iam_policy() == {"Version": "2012-10-17", "Statement": [statements[0], *statements[2:4]]}
    serverless = RedshiftIAMHook(redshift_conn_id="redshift_serverless").iam_policy()
    assert serverless == {"Version": "2012-10-17", "Statement": statements[1:4]}


def test_secrets_reach_no_log_record_and_no_exception(
    stack: LocalStack, aporia: AporiaProbe, caplog: pytest.LogCaptureFixture
) -> None:
    hook, redshift = AporiaHook(), RedshiftIAMHook()
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        hook.create_model("fraud", "Fraud")
        redshift.iam_jdbc_url()
        redshift.get_credentials()
        aporia.fail_next(4)
        with pytest.raises(AporiaError) as error:
            hook.log_fragments("fraud", "v1", [_prediction(1)])
        texts.append(str(error.value))
        texts.append(repr(hook.client))
        texts.append(repr(redshift.get_credentials()))
    texts.extend(record.getMessage() for record in caplog.records)
    secrets = [
        stack.settings.aporia_token,
        stack.settings.aws_secret_access_key,
        redshift.get_credentials().password,
    ]
    leaks = [(secret, text) for secret in secrets for text in texts if secret in text]
    assert leaks == []
