"""The names Aporia uses, as DESIGN §3 lists them."""

from __future__ import annotations

import pytest

from aporia_provider import vocabulary


def test_field_types_are_the_design_list_in_order() -> None:
    assert vocabulary.FIELD_TYPES == (
        "numeric",
        "categorical",
        "string",
        "boolean",
        "datetime",
        "vector",
        "text",
        "dict",
        "tensor",
    )


def test_model_types_data_sets_and_data_source_types() -> None:
    assert vocabulary.MODEL_TYPES == ("regression", "binary", "multiclass", "multi-label", "ranking")
    assert vocabulary.DATASET_NAMES == ("serving", "training", "testing", "actuals")
    assert vocabulary.DATA_SOURCE_TYPES == ("jdbc", "postgres-jdbc", "athena", "bigquery", "snowflake", "glue", "s3")


def test_fragment_keys_are_the_logpredictions_prediction_fields() -> None:
    assert vocabulary.FRAGMENT_KEYS == (
        "id",
        "features",
        "predictions",
        "rawInputs",
        "actuals",
        "metrics",
        "occurredAt",
        "confidence",
    )


@pytest.mark.parametrize(
    ("group", "wire", "label"),
    [
        ("features", "features", "feature"),
        ("predictions", "predictions", "prediction"),
        ("raw_inputs", "rawInputs", "raw input"),
    ],
)
def test_wire_group_and_group_label(group: str, wire: str, label: str) -> None:
    assert vocabulary.wire_group(group) == wire
    assert vocabulary.group_label(group) == label


def test_field_groups_are_in_rest_order() -> None:
    assert list(vocabulary.FIELD_GROUPS) == ["features", "predictions", "raw_inputs"]


def test_group_label_of_an_unknown_group_is_the_group_itself() -> None:
    assert vocabulary.group_label("labels") == "labels"


def test_wire_group_of_an_unknown_group_raises_key_error() -> None:
    with pytest.raises(KeyError):
        vocabulary.wire_group("labels")
