"""The sync plan: checked when it is made, before Spark starts; its column names when the sync derives its layout."""

from __future__ import annotations

from typing import Any

import pytest

from aporia_provider.exceptions import InvalidRowsError, SyncInputError
from aporia_provider.extraction.layout import layout_of, mapped_fields
from aporia_provider.extraction.options import SyncOptions
from aporia_provider.extraction.plan import SyncPlan
from aporia_provider.redshift import identifier
from aporia_provider.schema import VersionSchema

SCHEMA = VersionSchema.parse(
    {"amount": "numeric", "owner": "string"},
    {"will_buy": "boolean", "proba": "numeric"},
    {"raw_text": "text"},
)
PLAIN = (
    "is not a plain column name; use letters, digits and underscores "
    "(rename the column in the query with AS if needed)."
)


def plan(**changes: Any) -> SyncPlan:
    arguments: dict[str, Any] = {
        "model_id": "fraud",
        "model_version": "v1",
        "schema": SCHEMA,
        "query": "SELECT * FROM ml.predictions",
        "id_column": "prediction_id",
        "timestamp_column": "predicted_at",
    }
    return SyncPlan(**(arguments | changes))


def refusal(**changes: Any) -> str:
    with pytest.raises(SyncInputError) as raised:
        plan(**changes)
    return str(raised.value)


def test_a_valid_plan_keeps_the_trimmed_query_and_defaults() -> None:
    made = plan(query="  SELECT * FROM ml.predictions;  ", actuals_query="SELECT * FROM ml.actuals;")
    assert made.query == "SELECT * FROM ml.predictions"
    assert made.actuals_query == "SELECT * FROM ml.actuals"
    assert (made.features, made.predictions, made.raw_inputs, made.actuals) == ({}, {}, {}, {})


def test_a_field_reads_its_mapped_column_or_the_column_of_its_name() -> None:
    mappings = {"features": {"amount": "amount_usd"}, "raw_inputs": {"raw_text": "text_col"}}
    columns = {(group, spec.name): column for group, spec, column in mapped_fields(SCHEMA.group, mappings)}
    assert columns == {
        ("features", "amount"): "amount_usd",
        ("features", "owner"): "owner",
        ("predictions", "will_buy"): "will_buy",
        ("predictions", "proba"): "proba",
        ("raw_inputs", "raw_text"): "text_col",
    }


def test_query_with_two_statements() -> None:
    assert refusal(query="SELECT 1; SELECT 2") == (
        "query holds more than one statement; give a single SELECT (a ';' may only end it)."
    )


def test_empty_actuals_query() -> None:
    assert refusal(actuals_query=" ; ") == "actuals_query is empty; give the SELECT that returns the model's rows."


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id_column": "prediction id"}, f"id_column 'prediction id' {PLAIN}"),
        ({"timestamp_column": "ts;"}, f"timestamp_column 'ts;' {PLAIN}"),
        ({"features": {"amount": "amount usd"}}, f"features mapping for 'amount' 'amount usd' {PLAIN}"),
        ({"raw_inputs": {"raw_text": "t-x"}}, f"raw_inputs mapping for 'raw_text' 't-x' {PLAIN}"),
        (
            {"actuals": {"proba": "1bad"}, "actuals_timestamp_column": "actual_at"},
            f"actuals mapping for 'proba' '1bad' {PLAIN}",
        ),
        (
            {"actuals": {"proba": "label"}, "actuals_timestamp_column": "actual at"},
            f"actuals_timestamp_column 'actual at' {PLAIN}",
        ),
    ],
)
def test_identifiers_are_validated_by_the_warehouse_rule(changes: dict[str, Any], message: str) -> None:
    made = plan(**changes)
    with pytest.raises(SyncInputError) as raised:
        layout_of(made, identifier)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("group", "kind"),
    [("features", "feature"), ("predictions", "prediction"), ("raw_inputs", "raw input")],
)
def test_a_mapping_of_an_unknown_field(group: str, kind: str) -> None:
    assert refusal(**{group: {"nope": "col"}}) == (
        f"{group} mapping names 'nope', which is not a {kind} of fraud v1; map only fields of the version schema."
    )


def test_a_mapping_names_a_field_of_another_group() -> None:
    assert refusal(features={"proba": "p"}).startswith("features mapping names 'proba', which is not a feature of")


def test_actuals_keyed_by_something_other_than_a_prediction() -> None:
    assert refusal(actuals={"amount": "label"}, actuals_timestamp_column="actual_at") == (
        "actuals mapping names 'amount', which is not a prediction of the version; "
        "actuals are keyed by prediction names (proba, will_buy)."
    )


def test_actuals_without_their_timestamp_column() -> None:
    assert refusal(actuals={"will_buy": "bought"}) == (
        "actuals are mapped but actuals_timestamp_column is not set; name the column that says when "
        "each actual arrived."
    )


def test_actuals_with_their_timestamp_column() -> None:
    made = plan(actuals={"will_buy": "bought"}, actuals_timestamp_column="bought_at")
    assert made.actuals == {"will_buy": "bought"} and made.actuals_timestamp_column == "bought_at"


def test_invalid_rows_error_is_a_sync_input_error() -> None:
    assert issubclass(InvalidRowsError, SyncInputError)


@pytest.mark.parametrize(
    ("options", "rows", "allowed"),
    [
        (SyncOptions(), 1000, 0),
        (SyncOptions(on_invalid_rows="skip"), 1000, None),
        (SyncOptions(max_invalid_rows=7), 1000, 7),
        (SyncOptions(max_invalid_rows=0), 1000, 0),
        (SyncOptions(max_invalid_rows=0.01), 1000, 10),
        (SyncOptions(max_invalid_rows=0.01), 99, 0),
    ],
)
def test_how_many_invalid_rows_a_sync_may_leave_out(options: SyncOptions, rows: int, allowed: int | None) -> None:
    assert options.invalid_rows_allowed(rows) == allowed
