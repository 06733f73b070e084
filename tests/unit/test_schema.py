"""Version schemas: parsed and checked before anything is sent, with one sentence per mistake."""

from __future__ import annotations

import re
from typing import Any

import pytest

from aporia_provider.exceptions import SchemaError
from aporia_provider.schema import FieldSpec, VersionSchema, check_model_type, parse_field

ALL_TYPES = "numeric, categorical, string, boolean, datetime, vector, text, dict, tensor"
TENSOR_HINT = '{"type": "tensor", "dimensions": [768]} with positive integer sizes.'


def parse(**groups: Any) -> VersionSchema:
    groups.setdefault("predictions", {"proba": "numeric"})
    return VersionSchema.parse(groups.get("features"), groups["predictions"], groups.get("raw_inputs"))


def test_parse_keeps_declaration_order_and_types() -> None:
    schema = VersionSchema.parse(
        {"b": "numeric", "a": {"type": "string"}, "emb": {"type": "tensor", "dimensions": [2, 3]}},
        {"proba": "numeric"},
        {"text": "text"},
    )
    assert schema.features == (
        FieldSpec("b", "numeric"),
        FieldSpec("a", "string"),
        FieldSpec("emb", "tensor", (2, 3)),
    )
    assert schema.predictions == (FieldSpec("proba", "numeric"),)
    assert schema.raw_inputs == (FieldSpec("text", "text"),)
    assert schema.group("raw_inputs") == schema.raw_inputs


@pytest.mark.parametrize("type_name", ALL_TYPES.split(", ")[:-1])
def test_every_plain_type_is_accepted_as_string_or_dict(type_name: str) -> None:
    schema = parse(features={"x": type_name, "y": {"type": type_name}})
    assert schema.features == (FieldSpec("x", type_name), FieldSpec("y", type_name))


def test_a_non_tensor_ignores_dimensions() -> None:
    assert parse(features={"x": {"type": "vector", "dimensions": [3]}}).features == (FieldSpec("x", "vector"),)


def test_tensor_dimensions_may_be_a_tuple() -> None:
    assert parse(features={"e": {"type": "tensor", "dimensions": (4,)}}).features == (FieldSpec("e", "tensor", (4,)),)


def test_empty_schema() -> None:
    message = (
        "The schema is empty; give at least one feature and one prediction, e.g. "
        'features={"amount": "numeric"}, predictions={"proba": "numeric"}.'
    )
    for features, predictions in [(None, None), ({}, {}), ({}, None)]:
        with pytest.raises(SchemaError) as raised:
            VersionSchema.parse(features, predictions)
        assert str(raised.value) == message


def test_no_predictions() -> None:
    with pytest.raises(SchemaError) as raised:
        VersionSchema.parse({"amount": "numeric"}, None)
    assert str(raised.value) == 'The schema has no predictions; add one, e.g. predictions={"proba": "numeric"}.'


def test_predictions_without_features_are_accepted() -> None:
    assert VersionSchema.parse(None, {"proba": "numeric"}).features == ()


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"features": ["amount"]}, "The features schema must be a dict of field name to type, got list."),
        ({"predictions": "numeric"}, "The predictions schema must be a dict of field name to type, got str."),
        ({"raw_inputs": [("t", "text")]}, "The raw_inputs schema must be a dict of field name to type, got list."),
    ],
)
def test_a_group_that_is_not_a_dict(groups: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError) as raised:
        parse(**groups)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"features": {"": "numeric"}}, "A feature has an empty name; give every feature a non-empty string name."),
        ({"features": {3: "numeric"}}, "A feature has an empty name; give every feature a non-empty string name."),
        (
            {"predictions": {"": "numeric"}},
            "A prediction has an empty name; give every prediction a non-empty string name.",
        ),
        (
            {"raw_inputs": {"": "text"}},
            "A raw input has an empty name; give every raw input a non-empty string name.",
        ),
    ],
)
def test_an_empty_field_name(groups: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError) as raised:
        parse(**groups)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"features": {"amount": "float"}}, f"The feature 'amount' has unknown type 'float'; use one of {ALL_TYPES}."),
        (
            {"features": {"amount": {"kind": "numeric"}}},
            f"The feature 'amount' has unknown type None; use one of {ALL_TYPES}.",
        ),
        ({"predictions": {"p": "Numeric"}}, f"The prediction 'p' has unknown type 'Numeric'; use one of {ALL_TYPES}."),
        ({"raw_inputs": {"r": 7}}, f"The raw input 'r' has unknown type 7; use one of {ALL_TYPES}."),
    ],
)
def test_an_unknown_field_type(groups: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError) as raised:
        parse(**groups)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "spec",
    [
        "tensor",
        {"type": "tensor"},
        {"type": "tensor", "dimensions": []},
        {"type": "tensor", "dimensions": [0]},
        {"type": "tensor", "dimensions": [-1]},
        {"type": "tensor", "dimensions": [768, 0]},
        {"type": "tensor", "dimensions": [True]},
        {"type": "tensor", "dimensions": [1.5]},
        {"type": "tensor", "dimensions": "768"},
        {"type": "tensor", "dimensions": 768},
    ],
)
def test_a_tensor_without_valid_dimensions(spec: Any) -> None:
    with pytest.raises(SchemaError) as raised:
        parse(features={"emb": spec})
    assert str(raised.value) == f"The feature 'emb' is a tensor without valid dimensions; declare it as {TENSOR_HINT}"


def test_a_raw_input_tensor_names_its_group() -> None:
    with pytest.raises(SchemaError, match=re.escape("The raw input 'img' is a tensor without valid dimensions;")):
        parse(raw_inputs={"img": "tensor"})


def test_parse_field_directly() -> None:
    assert parse_field("predictions", "p", {"type": "boolean"}) == FieldSpec("p", "boolean")


def test_schema_error_is_a_value_error() -> None:
    assert issubclass(SchemaError, ValueError)


@pytest.mark.parametrize("model_type", ["regression", "binary", "multiclass", "multi-label", "ranking"])
def test_check_model_type_accepts_the_design_list(model_type: str) -> None:
    assert check_model_type(model_type) == model_type


@pytest.mark.parametrize("model_type", ["classification", "Binary", ""])
def test_check_model_type_refuses_others(model_type: str) -> None:
    with pytest.raises(SchemaError) as raised:
        check_model_type(model_type)
    assert str(raised.value) == (
        f"model_type {model_type!r} is not supported; use one of regression, binary, multiclass, multi-label, ranking."
    )


def test_field_spec_to_wire() -> None:
    assert FieldSpec("a", "numeric").to_wire() == "numeric"
    assert FieldSpec("e", "tensor", (2, 3)).to_wire() == {"type": "tensor", "dimensions": [2, 3]}


def test_to_wire_is_the_design_version_schema_with_feature_positions() -> None:
    schema = VersionSchema.parse(
        {"amount": "numeric", "owner": "string", "emb": {"type": "tensor", "dimensions": [4]}},
        {"will_buy": "boolean", "proba": "numeric"},
        {"raw_text": "text"},
    )
    assert schema.to_wire() == {
        "features": {"amount": "numeric", "owner": "string", "emb": {"type": "tensor", "dimensions": [4]}},
        "predictions": {"will_buy": "boolean", "proba": "numeric"},
        "raw_inputs": {"raw_text": "text"},
        "metrics": {},
        "feature_positions": {"amount": 0, "owner": 1, "emb": 2},
    }
    assert list(schema.to_wire()["feature_positions"]) == ["amount", "owner", "emb"]


def test_from_wire_round_trips() -> None:
    schema = VersionSchema.parse({"a": "numeric", "e": {"type": "tensor", "dimensions": [3]}}, {"p": "boolean"})
    assert VersionSchema.from_wire(schema.to_wire()) == schema


def test_from_wire_checks_like_parse() -> None:
    with pytest.raises(SchemaError, match=r"^The schema has no predictions;"):
        VersionSchema.from_wire({"features": {"a": "numeric"}})


def test_differences_of_equal_schemas_are_empty() -> None:
    schema = parse(features={"a": "numeric"})
    assert schema.differences(parse(features={"a": {"type": "numeric"}})) == []


def test_differences_name_each_field_in_group_and_name_order() -> None:
    mine = VersionSchema.parse(
        {"b": "numeric", "a": "string", "emb": {"type": "tensor", "dimensions": [4]}},
        {"proba": "numeric"},
        {"old": "text"},
    )
    theirs = VersionSchema.parse(
        {"a": "categorical", "c": "boolean", "emb": {"type": "tensor", "dimensions": [8]}},
        {"proba": "numeric", "label": {"type": "tensor", "dimensions": [2]}},
        {"new": "text"},
    )
    assert mine.differences(theirs) == [
        "features.a changed from string to categorical",
        "features.b removed",
        "features.c added as boolean",
        "features.emb changed from {'type': 'tensor', 'dimensions': [4]} to {'type': 'tensor', 'dimensions': [8]}",
        "predictions.label added as {'type': 'tensor', 'dimensions': [2]}",
        "raw_inputs.new added as text",
        "raw_inputs.old removed",
    ]


def test_differences_ignore_declaration_order() -> None:
    assert (
        parse(features={"a": "numeric", "b": "string"}).differences(parse(features={"b": "string", "a": "numeric"}))
        == []
    )
