"""Aporia's rules as the local server states them: which version schemas it accepts and which values fit.

Deliberately independent of the provider's own checks (`aporia_provider.schema`, the Spark row checks),
so a mistake in one does not pass unseen on both sides of the wire. Only names come from the provider's
vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aporia_provider.vocabulary import FIELD_GROUPS, MODEL_TYPES, group_label


class RuleError(ValueError):
    """A version the server refuses; the message is the answer's detail."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    dimensions: tuple[int, ...] | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` does not fit this field, or None when it does (a null always fits)."""
        if value is None:
            return None
        found = VALUE_RULES[self.type](value, self)
        return None if found is None else f"{self.name}: {found}"


# Group (REST name) -> field name -> Field.
Schema = dict[str, dict[str, Field]]


def parse_version(model_type: Any, version_schema: Mapping[str, Any]) -> Schema:
    """The version's fields by group, or RuleError naming what the server refuses."""
    if model_type not in MODEL_TYPES:
        raise RuleError(f"model_type {model_type!r} is not supported; use one of {', '.join(MODEL_TYPES)}.")
    return parse_schema(version_schema)


def parse_schema(version_schema: Mapping[str, Any]) -> Schema:
    groups = {group: version_schema.get(group) or {} for group in FIELD_GROUPS}
    for group, fields in groups.items():
        if not isinstance(fields, Mapping):
            raise RuleError(f"The {group} schema must be a dict of field name to type, got {type(fields).__name__}.")
    if not groups["features"] and not groups["predictions"]:
        raise RuleError(
            "The schema is empty; give at least one feature and one prediction, e.g. "
            'features={"amount": "numeric"}, predictions={"proba": "numeric"}.'
        )
    if not groups["predictions"]:
        raise RuleError('The schema has no predictions; add one, e.g. predictions={"proba": "numeric"}.')
    return {
        group: {name: _field(group, name, spec) for name, spec in fields.items()} for group, fields in groups.items()
    }


def _field(group: str, name: Any, spec: Any) -> Field:
    label = group_label(group)
    if not isinstance(name, str) or not name:
        raise RuleError(f"A {label} has an empty name; give every {label} a non-empty string name.")
    type_name = spec.get("type") if isinstance(spec, Mapping) else spec
    if type_name not in VALUE_RULES:
        raise RuleError(f"The {label} '{name}' has unknown type {type_name!r}; use one of {', '.join(VALUE_RULES)}.")
    if type_name != "tensor":
        return Field(name, type_name)
    dimensions = spec.get("dimensions") if isinstance(spec, Mapping) else None
    valid = isinstance(dimensions, list | tuple) and len(dimensions) > 0
    if not valid or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dimensions or ()):
        raise RuleError(
            f"The {label} '{name}' is a tensor without valid dimensions; "
            f'declare it as {{"type": "tensor", "dimensions": [768]}} with positive integer sizes.'
        )
    return Field(name, "tensor", tuple(dimensions or ()))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_numeric(value: Any, spec: Field) -> str | None:
    if not _is_number(value):
        return f"expected a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"expected a finite number, got {value}"
    return None


def _check_categorical(value: Any, spec: Field) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer category, got {type(value).__name__}"
    return None


def _check_string(value: Any, spec: Field) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {type(value).__name__}"


def _check_boolean(value: Any, spec: Field) -> str | None:
    return None if isinstance(value, bool) else f"expected a boolean, got {type(value).__name__}"


def _check_datetime(value: Any, spec: Field) -> str | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return None
        except ValueError:
            pass
    return f"expected an ISO-8601 datetime, got {value!r}"


def _check_vector(value: Any, spec: Field) -> str | None:
    if not isinstance(value, list | tuple) or not all(_is_number(v) and math.isfinite(v) for v in value):
        return "expected a list of finite numbers"
    return None


def _check_dict(value: Any, spec: Field) -> str | None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and _is_number(v) and math.isfinite(v) for k, v in value.items()
    ):
        return "expected a dict of string keys to finite numbers"
    return None


def _tensor_shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a nested list of finite numbers, or None when it is ragged or holds other values."""
    if _is_number(value):
        return () if math.isfinite(value) else None
    if not isinstance(value, list | tuple):
        return None
    shapes = {_tensor_shape(v) for v in value}
    if len(shapes) > 1 or None in shapes:
        return None
    inner = shapes.pop() if shapes else ()
    return None if inner is None else (len(value), *inner)


def _check_tensor(value: Any, spec: Field) -> str | None:
    dimensions = spec.dimensions or ()
    # Fast path for the common flat embedding: one pass, no recursion per element.
    if len(dimensions) == 1 and isinstance(value, list) and len(value) == dimensions[0]:
        if all(_is_number(v) and math.isfinite(v) for v in value):
            return None
    shape = _tensor_shape(value)
    if shape is None:
        return "expected a (nested) list of finite numbers"
    if shape != spec.dimensions:
        return f"expected a tensor of shape {list(spec.dimensions or ())}, got {list(shape)}"
    return None


# In the order Aporia lists them.
VALUE_RULES: dict[str, Callable[[Any, Field], str | None]] = {
    "numeric": _check_numeric,
    "categorical": _check_categorical,
    "string": _check_string,
    "boolean": _check_boolean,
    "datetime": _check_datetime,
    "vector": _check_vector,
    "text": _check_string,
    "dict": _check_dict,
    "tensor": _check_tensor,
}
