"""The sync plan: what to read from Redshift and how its columns map onto the version schema.

Checked when it is made, before anything is read: the single statement, the mappings. The column names are checked
by the warehouse's own identifier rule when the sync derives its layout (`layout`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.spark import require_pyspark
from aporia_provider.extraction.sql import single_statement
from aporia_provider.schema import VersionSchema


@dataclass(frozen=True)
class SyncPlan:
    """What to read and how it maps onto the version schema."""

    model_id: str
    model_version: str
    schema: VersionSchema
    query: str
    id_column: str
    timestamp_column: str
    # Field name -> column name, per group; unmapped fields read the column of the same name.
    features: Mapping[str, str] = field(default_factory=dict)
    predictions: Mapping[str, str] = field(default_factory=dict)
    raw_inputs: Mapping[str, str] = field(default_factory=dict)
    # Prediction field -> column holding its delayed actual.
    actuals: Mapping[str, str] = field(default_factory=dict)
    actuals_timestamp_column: str | None = None
    actuals_query: str | None = None
    select_expr: tuple[str, ...] = ()
    read_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", single_statement(self.query, "query"))
        if self.actuals_query is not None:
            object.__setattr__(self, "actuals_query", single_statement(self.actuals_query, "actuals_query"))
        for group in ("features", "predictions", "raw_inputs"):
            known = {f.name for f in self.schema.group(group)}
            for name in getattr(self, group):
                if name not in known:
                    raise SyncInputError(
                        f"{group} mapping names {name!r}, which is not a {group[:-1].replace('_', ' ')} of "
                        f"{self.model_id} {self.model_version}; map only fields of the version schema."
                    )
        predictions = {f.name for f in self.schema.predictions}
        for name in self.actuals:
            if name not in predictions:
                raise SyncInputError(
                    f"actuals mapping names {name!r}, which is not a prediction of the version; "
                    f"actuals are keyed by prediction names ({', '.join(sorted(predictions))})."
                )
        if self.select_expr:
            require_pyspark("select_expr (Spark SQL)")
        if self.actuals and not self.actuals_timestamp_column:
            raise SyncInputError(
                "actuals are mapped but actuals_timestamp_column is not set; name the column that says when "
                "each actual arrived."
            )
