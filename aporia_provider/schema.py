"""Aporia model-version schemas: parsed and checked before they are sent, compared with existing versions.

Values are checked where the rows are, by the sync's field rulebook (`extraction.rulebook`), in the task or in
Spark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aporia_provider.exceptions import SchemaError
from aporia_provider.vocabulary import FIELD_GROUPS, FIELD_TYPES, MODEL_TYPES, group_label


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    dimensions: tuple[int, ...] | None = None

    def to_wire(self) -> str | dict[str, Any]:
        if self.type == "tensor":
            return {"type": "tensor", "dimensions": list(self.dimensions or ())}
        return self.type


def parse_field(group: str, name: str, spec: Any) -> FieldSpec:
    """Parse one field's schema (a type string, or a dict with `type` and maybe `dimensions`)."""
    label = group_label(group)
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
