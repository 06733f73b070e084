"""Operators: arguments checked at construction, bad input as a non-retried failure, the deprecated import path."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import responses
from airflow.sdk import Asset, AssetAlias

import aporia_provider.operators.aporia as operators_module
from aporia_provider.compat import AirflowFailException
from aporia_provider.exceptions import SyncInputError
from aporia_provider.operators.aporia import (
    AporiaConnectActualsOperator,
    AporiaConnectDatasetOperator,
    AporiaConnectServingOperator,
    AporiaConnectTestingOperator,
    AporiaConnectTrainingOperator,
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
    model_version_asset,
)
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator
from tests.unit.conftest import BASE_URL, GRAPHQL_URL, request_json

FEATURES = {"amount": "numeric"}
PREDICTIONS = {"proba": "numeric"}
DEPRECATION = (
    "Import AporiaSyncOperator from aporia_provider.transfers.redshift_to_aporia; "
    "aporia_provider.operators.aporia stops providing it in 0.3.0."
)


def sync_operator(**changes: Any) -> AporiaSyncOperator:
    arguments: dict[str, Any] = {
        "task_id": "sync",
        "model_id": "fraud",
        "model_version": "v1",
        "id_column": "prediction_id",
        "timestamp_column": "predicted_at",
        "query": "SELECT * FROM ml.predictions",
    }
    return AporiaSyncOperator(**{k: v for k, v in (arguments | changes).items() if v is not None})


def version_operator(**changes: Any) -> AporiaCreateModelVersionOperator:
    arguments: dict[str, Any] = {
        "task_id": "version",
        "model_id": "fraud",
        "model_version": "v1",
        "model_type": "binary",
        "features": FEATURES,
        "predictions": PREDICTIONS,
    }
    return AporiaCreateModelVersionOperator(**(arguments | changes))


def schema_answer(features: dict[str, str]) -> dict[str, Any]:
    return {
        "data": {
            "modelVersionSchema": {
                "features": [{"name": n, "type": t, "dimensions": None} for n, t in features.items()],
                "predictions": [{"name": "proba", "type": "numeric", "dimensions": None}],
                "rawInputs": [],
            }
        }
    }


# ----------------------------------------------------------------------------------------------- deprecated path


def test_the_old_import_path_warns_and_gives_the_transfer() -> None:
    with pytest.warns(DeprecationWarning, match=re.escape(DEPRECATION)):
        from aporia_provider.operators.aporia import AporiaSyncOperator as Old
    assert Old is AporiaSyncOperator


def test_attribute_access_on_the_old_path_warns_too() -> None:
    with pytest.warns(DeprecationWarning, match=re.escape(DEPRECATION)):
        assert operators_module.AporiaSyncOperator is AporiaSyncOperator


def test_other_missing_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError) as raised:
        operators_module.AporiaSyncSensor  # noqa: B018
    assert str(raised.value) == "module 'aporia_provider.operators.aporia' has no attribute 'AporiaSyncSensor'"


def test_the_module_exports_what_it_defines() -> None:
    assert "AporiaSyncOperator" not in operators_module.__all__
    for name in operators_module.__all__:
        assert getattr(operators_module, name) is not None


# ----------------------------------------------------------------------------------------------- construction


def test_model_version_asset() -> None:
    assert model_version_asset("fraud", "v1") == Asset(name="aporia/fraud/v1", uri="aporia://models/fraud/versions/v1")


def test_sync_needs_exactly_one_of_query_and_table() -> None:
    for changes in ({"table": "ml.predictions"}, {"query": None}):
        with pytest.raises(ValueError) as raised:
            sync_operator(**changes)
        assert str(raised.value) == "Pass exactly one of query and table to AporiaSyncOperator."


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"batch_size": 0}, "batch_size 0 is not allowed; give a whole number of at least 1 (default 5,000)."),
        (
            {"num_partitions": 0},
            "num_partitions 0 is not allowed; give a whole number of at least 1 (or None to size them by the window).",
        ),
        (
            {"spark_min_rows": -1},
            "spark_min_rows -1 is not allowed; give a whole number of at least 0 (0 sends every window to Spark; "
            "None: the task reads them).",
        ),
        ({"jdbc_driver": "mysql"}, "jdbc_driver 'mysql' is not supported; use 'postgresql' or 'redshift'."),
        (
            {"lookback": timedelta(minutes=-5)},
            "lookback is negative (-300 seconds); give a timedelta of zero or more, e.g. timedelta(minutes=15).",
        ),
        ({"on_invalid_rows": "drop"}, "on_invalid_rows 'drop' is not supported; use 'fail' or 'skip'."),
        *(
            (
                {"max_invalid_rows": bad},
                f"max_invalid_rows {bad!r} is not allowed; give a count of rows (0 or more) or a fraction of the "
                "window's rows between 0 and 1, e.g. 100 or 0.01.",
            )
            for bad in (-1, 1.5, 0.0, True, "5")
        ),
        (
            {"min_rows": 0},
            "min_rows 0 is not allowed; give a whole number of at least 1 (the fewest predictions a window should "
            "deliver).",
        ),
        ({"on_low_volume": "ignore"}, "on_low_volume 'ignore' is not supported; use 'fail' or 'warn'."),
        (
            {"max_invalid_rows": 10, "on_invalid_rows": "skip"},
            "on_invalid_rows='skip' leaves out any number of invalid rows and max_invalid_rows sets a limit; pass "
            "one of them.",
        ),
    ],
)
def test_a_bad_sync_option_fails_the_dag_parse_in_one_sentence(option: dict[str, Any], message: str) -> None:
    # Nothing runs: the operator refuses the value when it is constructed, naming the argument and what it takes.
    with pytest.raises(SyncInputError) as raised:
        sync_operator(**option)
    assert str(raised.value) == message


def test_sync_with_a_table() -> None:
    operator = sync_operator(query=None, table="ml.predictions")
    assert (operator.query, operator.table) == (None, "ml.predictions")


def test_sync_defaults() -> None:
    operator = sync_operator()
    assert operator.outlets == [model_version_asset("fraud", "v1")]
    assert (operator.lookback, operator.on_invalid_rows, operator.validate_only) == (timedelta(0), "fail", False)
    assert (operator.batch_size, operator.num_partitions, operator.jdbc_driver) == (5000, None, "postgresql")
    assert (operator.aporia_conn_id, operator.redshift_conn_id, operator.aws_conn_id) == (
        "aporia_default",
        "redshift_default",
        "aws_default",
    )


def test_sync_with_a_templated_version_declares_an_alias_it_resolves_at_run_time() -> None:
    # A templated id used to mean no Asset at all; now the run names it through the alias.
    operator = sync_operator(model_version="{{ params.version }}")
    assert operator.outlets == [AssetAlias(name="aporia-sync/adhoc_airflow/sync")]
    assert operator.model_version_outlet == operator.outlets[0]


def test_sync_keeps_given_outlets_and_adds_its_own() -> None:
    mine = Asset(name="mine", uri="s3://bucket/mine")
    assert sync_operator(outlets=[mine]).outlets == [mine, model_version_asset("fraud", "v1")]


def test_a_validate_only_sync_declares_no_asset() -> None:
    operator = sync_operator(validate_only=True)
    assert operator.outlets == [] and operator.model_version_outlet is None


def test_sync_template_fields() -> None:
    assert {"model_id", "model_version", "query", "table", "window_start", "window_end"} <= set(
        AporiaSyncOperator.template_fields
    )


def test_create_version_refuses_an_unknown_schema_change_policy() -> None:
    with pytest.raises(ValueError) as raised:
        version_operator(on_schema_change="merge")
    assert str(raised.value) == "on_schema_change 'merge' is not supported; use 'fail' or 'new_version'."


@pytest.mark.parametrize(
    ("operator_class", "dataset"),
    [
        (AporiaConnectServingOperator, "serving"),
        (AporiaConnectTrainingOperator, "training"),
        (AporiaConnectTestingOperator, "testing"),
        (AporiaConnectActualsOperator, "actuals"),
    ],
)
def test_connect_operators_name_their_data_set(
    operator_class: type[AporiaConnectDatasetOperator], dataset: str
) -> None:
    operator = operator_class(
        task_id="connect", model_id="fraud", model_version="v1", query="SELECT 1", id_column="id", timestamp_column="ts"
    )
    assert operator.dataset == dataset


# ----------------------------------------------------------------------------------------------- execution


def test_a_bad_model_type_fails_without_retry_before_any_call(http: responses.RequestsMock) -> None:
    with pytest.raises(AirflowFailException) as raised:
        version_operator(model_type="logistic").execute({})
    assert str(raised.value) == (
        "model_type 'logistic' is not supported; use one of regression, binary, multiclass, multi-label, ranking."
    )
    assert len(http.calls) == 0


def test_a_bad_schema_fails_without_retry_before_any_call(http: responses.RequestsMock) -> None:
    with pytest.raises(AirflowFailException) as raised:
        version_operator(features={"amount": "float"}).execute({})
    assert str(raised.value).startswith("The feature 'amount' has unknown type 'float';")
    assert len(http.calls) == 0


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (
            "2026-11-20T00:00:00+00:00",
            "2026-11-20T00:00:00+00:00",
            "The sync window is empty (start == end == 2026-11-20T00:00:00+00:00)",
        ),
        (
            "2026-11-20T01:00:00+00:00",
            "2026-11-20T00:00:00+00:00",
            "window_end 2026-11-20T00:00:00+00:00 is before window_start 2026-11-20T01:00:00+00:00; swap them.",
        ),
    ],
)
def test_a_bad_window_fails_before_any_call(http: responses.RequestsMock, start: str, end: str, message: str) -> None:
    with pytest.raises(AirflowFailException) as raised:
        sync_operator(window_start=start, window_end=end).execute({})
    assert str(raised.value).startswith(message)
    assert len(http.calls) == 0


def test_the_window_defaults_to_the_data_interval(http: responses.RequestsMock) -> None:
    context = {"data_interval_start": "2026-11-20T00:00:00+00:00", "data_interval_end": "2026-11-20T00:00:00+00:00"}
    with pytest.raises(AirflowFailException, match=r"^The sync window is empty"):
        sync_operator().execute(context)


def test_a_bad_table_name_fails_after_the_schema_lookup(
    aporia_conn: dict[str, Any], http: responses.RequestsMock
) -> None:
    http.post(GRAPHQL_URL, json=schema_answer(FEATURES))
    operator = sync_operator(
        query=None,
        table="ml.predictions; drop",
        window_start="2026-11-20T00:00:00+00:00",
        window_end="2026-11-20T01:00:00+00:00",
    )
    with pytest.raises(AirflowFailException) as raised:
        operator.execute({})
    assert str(raised.value) == (
        "table 'ml.predictions; drop' is not a plain table name; use letters, digits and underscores, "
        "or pass a query instead."
    )


def test_sync_of_a_missing_version(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.post(GRAPHQL_URL, json={"data": {"modelVersionSchema": None}})
    operator = sync_operator(window_start="2026-11-20T00:00:00+00:00", window_end="2026-11-20T01:00:00+00:00")
    with pytest.raises(AirflowFailException) as raised:
        operator.execute({})
    assert str(raised.value) == (
        "Model 'fraud' has no version 'v1' in Aporia; create it first with AporiaCreateModelVersionOperator."
    )


def test_create_model_operator(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.post(BASE_URL + "/v1beta/models", json={"id": "fraud"}, status=201)
    operator = AporiaCreateModelOperator(task_id="model", model_id="fraud", model_owner="ml@x", tags={"team": "risk"})
    assert operator.execute({}) == {"model_id": "fraud", "created": True}
    body = request_json(http.calls[0])
    assert (body["id"], body["name"], body["owner"], body["tags"]) == ("fraud", "fraud", "ml@x", {"team": "risk"})


def test_create_version_that_exists_with_the_same_schema(
    aporia_conn: dict[str, Any], http: responses.RequestsMock
) -> None:
    http.post(GRAPHQL_URL, json=schema_answer(FEATURES))
    result = version_operator().execute({})
    assert result == {"model_id": "fraud", "model_version": "v1", "created": False}
    assert len(http.calls) == 1


def test_create_version_that_exists_with_another_schema(
    aporia_conn: dict[str, Any], http: responses.RequestsMock
) -> None:
    http.post(GRAPHQL_URL, json=schema_answer({"amount": "string"}))
    with pytest.raises(AirflowFailException) as raised:
        version_operator().execute({})
    assert str(raised.value) == (
        "Version 'v1' of 'fraud' already exists with another schema (features.amount changed from string to "
        "numeric); use a new version name or on_schema_change='new_version'."
    )


def test_create_version_on_schema_change_takes_the_next_free_name(
    aporia_conn: dict[str, Any], http: responses.RequestsMock
) -> None:
    http.post(GRAPHQL_URL, json=schema_answer({"amount": "string"}))
    http.post(GRAPHQL_URL, json=schema_answer({"other": "numeric"}))
    http.post(GRAPHQL_URL, json={"errors": [{"message": "Model version v1-3 not found"}]})
    http.post(BASE_URL + "/v1beta/models/fraud/versions", json={}, status=201)
    result = version_operator(on_schema_change="new_version").execute({})
    assert result == {"model_id": "fraud", "model_version": "v1-3", "created": True}
    asked = [request_json(call)["variables"]["modelVersion"] for call in http.calls[:3]]
    assert asked == ["v1", "v1-2", "v1-3"]
    assert request_json(http.calls[3])["name"] == "v1-3"
