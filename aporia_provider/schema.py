"""Aporia model-version schemas: field types, model types, and value checks.

One module serves the hook (checking a schema before it is sent), the extraction engine (checking
rows before they are delivered) and the local Aporia server (reporting warnings as Aporia does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FIELD_TYPES = ("numeric", "categorical", "string", "boolean", "datetime", "vector", "text", "dict", "tensor")
MODEL_TYPES = ("regression", "binary", "multiclass", "multi-label", "ranking")
# Wire names of the field groups in a version schema, with the singular used in messages.
FIELD_GROUPS = {"features": "feature", "predictions": "prediction", "raw_inputs": "raw input"}


class SchemaError(ValueError):
    """A schema given by the user is not one Aporia accepts."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    dimensions: tuple[int, ...] | None = None

    def to_wire(self) -> str | dict[str, Any]:
        if self.type == "tensor":
            return {"type": "tensor", "dimensions": list(self.dimensions or ())}
        return self.type

    def check(self, value: Any) -> str | None:
        """Return why `value` does not fit this field, or None when it does (None values fit)."""
        if value is None:
            return None
        problem = _VALUE_CHECKS[self.type](value, self)
        return None if problem is None else f"{self.name}: {problem}"


def parse_field(group: str, name: str, spec: Any) -> FieldSpec:
    """Parse one field's schema (a type string, or a dict with `type` and maybe `dimensions`)."""
    label = FIELD_GROUPS.get(group, group)
    if not isinstance(name, str) or not name:
        raise SchemaError(f"A {label} has an empty name; give every {label} a non-empty string name.")
    type_name = spec.get("type") if isinstance(spec, Mapping) else spec
    if type_name not in FIELD_TYPES:
        raise SchemaError(f"The {label} '{name}' has unknown type {type_name!r}; use one of {', '.join(FIELD_TYPES)}.")
    if type_name != "tensor":
        return FieldSpec(name, type_name)
    dimensions = spec.get("dimensions") if isinstance(spec, Mapping) else None
    if (
        not isinstance(dimensions, list | tuple)
        or not dimensions
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dimensions)
    ):
        raise SchemaError(
            f"The {label} '{name}' is a tensor without valid dimensions; "
            f'declare it as {{"type": "tensor", "dimensions": [768]}} with positive integer sizes.'
        )
    return FieldSpec(name, "tensor", tuple(dimensions))


@dataclass(frozen=True)
class VersionSchema:
    features: tuple[FieldSpec, ...]
    predictions: tuple[FieldSpec, ...]
    raw_inputs: tuple[FieldSpec, ...] = ()

    @classmethod
    def parse(
        cls,
        features: Mapping[str, Any] | None,
        predictions: Mapping[str, Any] | None,
        raw_inputs: Mapping[str, Any] | None = None,
    ) -> VersionSchema:
        groups = {
            "features": features or {},
            "predictions": predictions or {},
            "raw_inputs": raw_inputs or {},
        }
        for group, fields in groups.items():
            if not isinstance(fields, Mapping):
                raise SchemaError(
                    f"The {group} schema must be a dict of field name to type, got {type(fields).__name__}."
                )
        if not groups["features"] and not groups["predictions"]:
            raise SchemaError(
                "The schema is empty; give at least one feature and one prediction, e.g. "
                'features={"amount": "numeric"}, predictions={"proba": "numeric"}.'
            )
        if not groups["predictions"]:
            raise SchemaError('The schema has no predictions; add one, e.g. predictions={"proba": "numeric"}.')
        parsed = {
            group: tuple(parse_field(group, name, spec) for name, spec in fields.items())
            for group, fields in groups.items()
        }
        return cls(parsed["features"], parsed["predictions"], parsed["raw_inputs"])

    @classmethod
    def from_wire(cls, version_schema: Mapping[str, Any]) -> VersionSchema:
        return cls.parse(
            version_schema.get("features"),
            version_schema.get("predictions"),
            version_schema.get("raw_inputs"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "features": {f.name: f.to_wire() for f in self.features},
            "predictions": {f.name: f.to_wire() for f in self.predictions},
            "raw_inputs": {f.name: f.to_wire() for f in self.raw_inputs},
            "metrics": {},
            "feature_positions": {f.name: i for i, f in enumerate(self.features)},
        }

    def group(self, group: str) -> tuple[FieldSpec, ...]:
        return {"features": self.features, "predictions": self.predictions, "raw_inputs": self.raw_inputs}[group]

    def differences(self, other: VersionSchema) -> list[str]:
        """Describe, field by field, how `other` differs from this schema."""
        found = []
        for group in FIELD_GROUPS:
            mine = {f.name: f for f in self.group(group)}
            theirs = {f.name: f for f in other.group(group)}
            for name in sorted(mine.keys() | theirs.keys()):
                if name not in theirs:
                    found.append(f"{group}.{name} removed")
                elif name not in mine:
                    found.append(f"{group}.{name} added as {theirs[name].to_wire()}")
                elif mine[name] != theirs[name]:
                    found.append(f"{group}.{name} changed from {mine[name].to_wire()} to {theirs[name].to_wire()}")
        return found


def check_model_type(model_type: str) -> str:
    if model_type not in MODEL_TYPES:
        raise SchemaError(f"model_type {model_type!r} is not supported; use one of {', '.join(MODEL_TYPES)}.")
    return model_type


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_numeric(value: Any, spec: FieldSpec) -> str | None:
    if not _is_number(value):
        return f"expected a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"expected a finite number, got {value}"
    return None


def _check_categorical(value: Any, spec: FieldSpec) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer category, got {type(value).__name__}"
    return None


def _check_string(value: Any, spec: FieldSpec) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {type(value).__name__}"


def _check_boolean(value: Any, spec: FieldSpec) -> str | None:
    return None if isinstance(value, bool) else f"expected a boolean, got {type(value).__name__}"


def _check_datetime(value: Any, spec: FieldSpec) -> str | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
            return None
        except ValueError:
            pass
    return f"expected an ISO-8601 datetime, got {value!r}"


def _check_vector(value: Any, spec: FieldSpec) -> str | None:
    if not isinstance(value, list | tuple) or not all(_is_number(v) and math.isfinite(v) for v in value):
        return "expected a list of finite numbers"
    return None


def _check_dict(value: Any, spec: FieldSpec) -> str | None:
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


def _check_tensor(value: Any, spec: FieldSpec) -> str | None:
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


_VALUE_CHECKS = {
    "numeric": _check_numeric,
    "categorical": _check_categorical,
    "string": _check_string,
    "text": _check_string,
    "boolean": _check_boolean,
    "datetime": _check_datetime,
    "vector": _check_vector,
    "dict": _check_dict,
    "tensor": _check_tensor,
}
