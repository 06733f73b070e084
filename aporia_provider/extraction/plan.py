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

ON_UNKNOWN_VERSION = ("reject", "ignore")


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
    # Field group -> the prefix its columns carry (`mapping`): resolved against the query's columns.
    prefixes: Mapping[str, str] = field(default_factory=dict)
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
        for group, prefix in self.prefixes.items():
            if not isinstance(prefix, str) or not prefix:
                raise SyncInputError(
                    f"{group}_prefix {prefix!r} is not a column prefix; give the text the columns start with, "
                    'e.g. "f_" for the column f_amount of the feature amount, or leave it unset.'
                )
        if self.prefixes and self.select_expr:
            raise SyncInputError(
                "Column prefixes are matched against the query's columns, which select_expr changes; compute the "
                "columns in the query instead, or map the fields explicitly."
            )
        if self.select_expr:
            require_pyspark("select_expr (Spark SQL)")
        if self.actuals and not self.actuals_timestamp_column:
            raise SyncInputError(
                "actuals are mapped but actuals_timestamp_column is not set; name the column that says when "
                "each actual arrived."
            )


@dataclass(frozen=True)
class Routing:
    """Which column names each row's version, the versions this sync serves, and what a row of another one is."""

    column: str
    versions: tuple[str, ...]
    on_unknown: str = "reject"

    def __post_init__(self) -> None:
        versions = self.versions
        if not versions or not all(isinstance(v, str) and v for v in versions):
            raise SyncInputError(
                f"model_versions {list(versions)!r} does not list the versions to sync; give their names as the "
                "version column holds them, e.g. model_versions=['champion', 'challenger']."
            )
        repeated = sorted({v for v in versions if versions.count(v) > 1})
        if repeated:
            raise SyncInputError(f"model_versions lists {', '.join(map(repr, repeated))} twice; list each once.")
        if self.on_unknown not in ON_UNKNOWN_VERSION:
            raise SyncInputError(f"on_unknown_version {self.on_unknown!r} is not supported; use 'reject' or 'ignore'.")

    NOT_SERVED = "which model_versions does not list"

    def problem(self, value: str | None) -> str:
        """Why a row naming `value` is no row of this sync (`columnar.judge_routed` says it of each such row)."""
        if value is None:
            return f"{self.column} is null"
        return f"{self.column} names '{value}', {self.NOT_SERVED}"
