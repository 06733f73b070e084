"""The local Aporia stand-in's own rules (pure functions): which schemas it accepts and which values fit."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pytest

from aporia_local.rules import VALUE_RULES, Field, RuleError, parse_schema, parse_version

ALL_TYPES = "numeric, categorical, string, boolean, datetime, vector, text, dict, tensor"


def refusal(model_type: Any, version_schema: dict[str, Any]) -> str:
    with pytest.raises(RuleError) as raised:
        parse_version(model_type, version_schema)
    return str(raised.value)


def test_parse_version_groups_fields() -> None:
    parsed = parse_version(
        "binary",
        {
            "features": {"amount": "numeric", "emb": {"type": "tensor", "dimensions": [2, 3]}},
            "predictions": {"proba": {"type": "numeric"}},
            "metrics": {},
        },
    )
    assert parsed == {
        "features": {"amount": Field("amount", "numeric"), "emb": Field("emb", "tensor", (2, 3))},
        "predictions": {"proba": Field("proba", "numeric")},
        "raw_inputs": {},
    }


def test_the_rules_know_the_vocabulary_types_in_order() -> None:
    assert ", ".join(VALUE_RULES) == ALL_TYPES


@pytest.mark.parametrize(
    ("model_type", "version_schema", "message"),
    [
        (
            "logistic",
            {"predictions": {"p": "numeric"}},
            "model_type 'logistic' is not supported; use one of regression, binary, multiclass, multi-label, ranking.",
        ),
        (
            None,
            {"predictions": {"p": "numeric"}},
            "model_type None is not supported; use one of regression, binary, multiclass, multi-label, ranking.",
        ),
        (
            "binary",
            {},
            "The schema is empty; give at least one feature and one prediction, e.g. "
            'features={"amount": "numeric"}, predictions={"proba": "numeric"}.',
        ),
        (
            "binary",
            {"features": {"a": "numeric"}},
            'The schema has no predictions; add one, e.g. predictions={"proba": "numeric"}.',
        ),
        (
            "binary",
            {"features": ["a"], "predictions": {"p": "numeric"}},
            "The features schema must be a dict of field name to type, got list.",
        ),
        (
            "binary",
            {"predictions": {"": "numeric"}},
            "A prediction has an empty name; give every prediction a non-empty string name.",
        ),
        (
            "binary",
            {"predictions": {"p": "numeric"}, "raw_inputs": {"r": "blob"}},
            f"The raw input 'r' has unknown type 'blob'; use one of {ALL_TYPES}.",
        ),
        (
            "binary",
            {"features": {"e": {"type": "tensor", "dimensions": [True]}}, "predictions": {"p": "numeric"}},
            "The feature 'e' is a tensor without valid dimensions; "
            'declare it as {"type": "tensor", "dimensions": [768]} with positive integer sizes.',
        ),
        (
            "binary",
            {"features": {"e": "tensor"}, "predictions": {"p": "numeric"}},
            "The feature 'e' is a tensor without valid dimensions; "
            'declare it as {"type": "tensor", "dimensions": [768]} with positive integer sizes.',
        ),
    ],
)
def test_parse_version_refusals(model_type: Any, version_schema: dict[str, Any], message: str) -> None:
    assert refusal(model_type, version_schema) == message


def test_parse_schema_skips_the_model_type() -> None:
    assert parse_schema({"predictions": {"p": "boolean"}})["predictions"] == {"p": Field("p", "boolean")}


def test_rule_error_is_a_value_error() -> None:
    assert issubclass(RuleError, ValueError)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (Field("x", "numeric"), 1, None),
        (Field("x", "numeric"), 1.5, None),
        (Field("x", "numeric"), "1", "x: expected a number, got str"),
        (Field("x", "numeric"), True, "x: expected a number, got bool"),
        (Field("x", "numeric"), math.nan, "x: expected a finite number, got nan"),
        (Field("x", "numeric"), math.inf, "x: expected a finite number, got inf"),
        (Field("c", "categorical"), 3, None),
        (Field("c", "categorical"), 3.0, "c: expected an integer category, got float"),
        (Field("c", "categorical"), False, "c: expected an integer category, got bool"),
        (Field("s", "string"), "a", None),
        (Field("s", "string"), 1, "s: expected a string, got int"),
        (Field("t", "text"), "long text", None),
        (Field("t", "text"), ["a"], "t: expected a string, got list"),
        (Field("b", "boolean"), False, None),
        (Field("b", "boolean"), 0, "b: expected a boolean, got int"),
        (Field("d", "datetime"), "2026-11-20T00:00:00+00:00", None),
        (Field("d", "datetime"), datetime(2026, 11, 20), None),
        (Field("d", "datetime"), "yesterday", "d: expected an ISO-8601 datetime, got 'yesterday'"),
        (Field("d", "datetime"), 1700000000, "d: expected an ISO-8601 datetime, got 1700000000"),
        (Field("v", "vector"), [1, 2.5], None),
        (Field("v", "vector"), (), None),
        (Field("v", "vector"), [1, "2"], "v: expected a list of finite numbers"),
        (Field("v", "vector"), [math.inf], "v: expected a list of finite numbers"),
        (Field("v", "vector"), "1,2", "v: expected a list of finite numbers"),
        (Field("m", "dict"), {"a": 1, "b": 0.5}, None),
        (Field("m", "dict"), {"a": "x"}, "m: expected a dict of string keys to finite numbers"),
        (Field("m", "dict"), {1: 1}, "m: expected a dict of string keys to finite numbers"),
        (Field("m", "dict"), [("a", 1)], "m: expected a dict of string keys to finite numbers"),
        (Field("e", "tensor", (3,)), [1, 2, 3], None),
        (Field("e", "tensor", (2, 2)), [[1, 2], [3, 4.5]], None),
        (Field("e", "tensor", (3,)), [1, 2], "e: expected a tensor of shape [3], got [2]"),
        (Field("e", "tensor", (2, 2)), [1, 2, 3, 4], "e: expected a tensor of shape [2, 2], got [4]"),
        (Field("e", "tensor", (2, 2)), [[1, 2], [3]], "e: expected a (nested) list of finite numbers"),
        (Field("e", "tensor", (2,)), [1, math.nan], "e: expected a (nested) list of finite numbers"),
        (Field("e", "tensor", (2,)), [1, "2"], "e: expected a (nested) list of finite numbers"),
        (Field("e", "tensor", (1,)), 5, "e: expected a tensor of shape [1], got []"),
    ],
)
def test_field_problem(field: Field, value: Any, problem: str | None) -> None:
    assert field.problem(value) == problem


@pytest.mark.parametrize("type_name", list(VALUE_RULES))
def test_a_null_always_fits(type_name: str) -> None:
    assert Field("x", type_name, (1,) if type_name == "tensor" else None).problem(None) is None
