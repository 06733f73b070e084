"""Aporia's names, in one place: field types, model types, field groups, data sets, fragment keys.

The hook, the engine, the client and the local stand-in all read these. Rules about values (what a
numeric or a tensor accepts) are not here: the provider checks them in Spark, the stand-in on its own.
"""

from __future__ import annotations

FIELD_TYPES = ("numeric", "categorical", "string", "boolean", "datetime", "vector", "text", "dict", "tensor")
MODEL_TYPES = ("regression", "binary", "multiclass", "multi-label", "ranking")
DATASET_NAMES = ("serving", "training", "testing", "actuals")
DATA_SOURCE_TYPES = ("jdbc", "postgres-jdbc", "athena", "bigquery", "snowflake", "glue", "s3")

# Field groups of a version schema: the REST name -> (the GraphQL/fragment name, the singular for messages).
FIELD_GROUPS = {
    "features": ("features", "feature"),
    "predictions": ("predictions", "prediction"),
    "raw_inputs": ("rawInputs", "raw input"),
}
# The keys a logPredictions fragment may carry.
FRAGMENT_KEYS = ("id", "features", "predictions", "rawInputs", "actuals", "metrics", "occurredAt", "confidence")


def wire_group(group: str) -> str:
    """The GraphQL/fragment name of a field group (raw_inputs -> rawInputs)."""
    return FIELD_GROUPS[group][0]


def group_label(group: str) -> str:
    """The singular of a field group, as messages say it (raw_inputs -> raw input)."""
    return FIELD_GROUPS[group][1] if group in FIELD_GROUPS else group
