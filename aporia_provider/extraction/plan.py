"""The sync plan: what to read from Redshift and how its columns map onto the version schema.

Checked when it is made, before Spark starts: identifiers, the single statement, the mappings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.sql import identifier, single_statement
from aporia_provider.schema import FieldSpec, VersionSchema

# Rejected rows named in the summary and the log; repeated ids listed before the query is called wrong.
MAX_EXAMPLES = 5
MAX_DUPLICATES_LISTED = 10_000
# Windows of fewer rows are read and sent by the task itself (no Spark): most hourly windows, whose rows fit
# in a task's memory many times over (20,000 rows of 768-dim vectors are ~150 MB of JSON text).
SPARK_MIN_ROWS = 20_000


@dataclass(frozen=True)
class Source:
    """One of the rows a sync reads: predictions by their timestamp, or actuals by their arrival."""

    kind: str  # "predictions" or "actuals"
    query: str
    timestamp_argument: str  # the argument naming its timestamp column
    timestamp_column: str
    query_argument: str  # the argument holding its query


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
    on_invalid_rows: str = "fail"

    def __post_init__(self) -> None:
        object.__setattr__(self, "query", single_statement(self.query, "query"))
        if self.actuals_query is not None:
            object.__setattr__(self, "actuals_query", single_statement(self.actuals_query, "actuals_query"))
        identifier(self.id_column, "id_column")
        identifier(self.timestamp_column, "timestamp_column")
        if self.on_invalid_rows not in ("fail", "skip"):
            raise SyncInputError(f"on_invalid_rows {self.on_invalid_rows!r} is not supported; use 'fail' or 'skip'.")
        for group in ("features", "predictions", "raw_inputs"):
            known = {f.name for f in self.schema.group(group)}
            for name, column in getattr(self, group).items():
                if name not in known:
                    raise SyncInputError(
                        f"{group} mapping names {name!r}, which is not a {group[:-1].replace('_', ' ')} of "
                        f"{self.model_id} {self.model_version}; map only fields of the version schema."
                    )
                identifier(column, f"{group} mapping for {name!r}")
        predictions = {f.name for f in self.schema.predictions}
        for name, column in self.actuals.items():
            if name not in predictions:
                raise SyncInputError(
                    f"actuals mapping names {name!r}, which is not a prediction of the version; "
                    f"actuals are keyed by prediction names ({', '.join(sorted(predictions))})."
                )
            identifier(column, f"actuals mapping for {name!r}")
        if self.actuals and not self.actuals_timestamp_column:
            raise SyncInputError(
                "actuals are mapped but actuals_timestamp_column is not set; name the column that says when "
                "each actual arrived."
            )
        if self.actuals_timestamp_column:
            identifier(self.actuals_timestamp_column, "actuals_timestamp_column")

    def column_for(self, group: str, spec: FieldSpec) -> str:
        mapping: Mapping[str, str] = getattr(self, group)
        return mapping.get(spec.name, spec.name)


@dataclass
class SyncSummary:
    window_start: str
    window_end: str
    rows_read: int = 0
    fragments_sent: int = 0
    actuals_read: int = 0
    actuals_sent: int = 0
    rows_rejected: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    batches: int = 0
    retries: int = 0
    warnings: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
