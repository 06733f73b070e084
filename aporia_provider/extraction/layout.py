"""A sync's layout, derived once from its plan: what each source reads and how each row becomes a fragment.

Both readers of a window (the task's, `in_task`, and Spark's, `in_spark`) judge its rows with this layout through
the same code (`columnar`), so they need the same columns, refuse the same missing ones naming the same argument,
walk the same fields in wire order with the same rule (`rulebook`), and state the row rules once: a null id, a null
timestamp, a row that holds no actual yet, repeated ids, and which timestamp types a window can be compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aporia_provider.exceptions import InvalidRowsError, SyncInputError
from aporia_provider.extraction.plan import SyncPlan
from aporia_provider.extraction.rulebook import RULES, ColumnType, FieldRule, refused_column
from aporia_provider.schema import FieldSpec
from aporia_provider.vocabulary import FIELD_GROUPS, wire_group

# Rejected rows named in the summary and the log; repeated ids listed before the query is called wrong.
MAX_EXAMPLES = 5
MAX_DUPLICATES_LISTED = 10_000
ACTUALS = "actuals"
# How much of a rejected value is kept with it.
EXCERPT_CHARACTERS = 200

# Where every rejected row goes, as a JSON-ready object (see `SourceLayout.rejected_row`).
RejectedRows = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Source:
    """One of the row sets a sync reads: predictions by their timestamp, or actuals by their arrival."""

    kind: str  # "predictions" or "actuals"
    query: str
    timestamp_argument: str  # the argument naming its timestamp column
    timestamp_column: str
    query_argument: str  # the argument holding its query


@dataclass(frozen=True)
class FieldSlot:
    """One field of a fragment: where it goes on the wire, the column feeding it, and its type's rule."""

    wire_group: str  # features, predictions, rawInputs, or actuals
    group: str  # the argument mapping it: features, predictions, raw_inputs or actuals
    spec: FieldSpec
    column: str

    @property
    def rule(self) -> FieldRule:
        return RULES[self.spec.type]

    def fit(self, column_type: ColumnType) -> FieldRule:
        """The field's rule, once the column's type is known to fit it; a column that does not is refused."""
        refused = refused_column(self.spec, self.column, self.group, column_type)
        if refused:
            raise SyncInputError(refused)
        return self.rule


@dataclass(frozen=True)
class SourceLayout:
    """What one source's rows need, and how each becomes a fragment."""

    source: Source
    subject: str  # "<model id> <version>", for messages
    id_column: str
    fields: tuple[FieldSlot, ...]  # in wire order
    # Predictions carry their timestamp as occurredAt and are invalid without one; actuals are keyed by id alone.
    carries_timestamp: bool
    # A row is one only when one of these holds a value: an actuals row whose actuals are all null holds no actual
    # yet and is not sent or counted. Empty: every row is one.
    presence_columns: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def needed(self) -> dict[str, list[str]]:
        """The argument (or field group) naming each column the source's rows need, in the order they are checked."""
        needed = {"id_column": [self.id_column], self.source.timestamp_argument: [self.source.timestamp_column]}
        for slot in self.fields:
            needed.setdefault(slot.group, []).append(slot.column)
        return needed

    @property
    def columns(self) -> list[str]:
        """Every column the rows need, once each."""
        return list(dict.fromkeys(column for columns in self.needed.values() for column in columns))

    @property
    def wire_groups(self) -> list[str]:
        return list(dict.fromkeys(slot.wire_group for slot in self.fields))

    def require(self, present: list[str]) -> None:
        """Refuse, naming the argument to fix, a column the rows need that is not among `present`."""
        require_columns(present, self.subject, self.needed)

    def fit(self, types: Mapping[str, ColumnType | None]) -> None:
        """Refuse, in the words of the field's rule, a column whose type (as the reader types it) no field takes; the
        readers send a window here only when they read every needed column's type."""
        for slot in self.fields:
            column_type = types[slot.column]
            assert column_type is not None
            slot.fit(column_type)

    def require_timestamp(self, present: list[str]) -> None:
        source = self.source
        require_columns(present, self.subject, {source.timestamp_argument: [source.timestamp_column]})

    @property
    def null_id(self) -> str:
        """The problem of a row without an id; it overrides every other problem of the row."""
        return f"{self.id_column} is null"

    @property
    def null_timestamp(self) -> str | None:
        """The problem of a prediction without a timestamp; it comes before its fields' problems."""
        return f"{self.source.timestamp_column} is null" if self.carries_timestamp else None

    def repeated_id(self, identity: str) -> str:
        """The problem of every row whose id repeats in the window (all of them are rejected)."""
        return f"duplicate {self.id_column} {identity}"

    def refuse_many_repeats(self, repeated_ids: int) -> None:
        """Past a limit, repeated ids mean the query joins rows it should not: one sentence, not 10,000 examples."""
        if repeated_ids > MAX_DUPLICATES_LISTED:
            raise InvalidRowsError(
                f"More than {MAX_DUPLICATES_LISTED} {self.id_column} values repeat within the window; the query "
                "probably joins rows it should not; make it return one row per prediction."
            )

    def rejected_example(self, identity: str | None, problem: str) -> str:
        """One rejected row as the summary and the log name it."""
        return f"{self.kind} {identity if identity is not None else '(no id)'}: {problem}"

    def rejected_row(self, identity: str | None, problem: str, column: str | None, value: str | None) -> dict[str, Any]:
        """One rejected row as the rejected-rows file keeps it: its source, id, the column at fault, the reason and
        an excerpt of the value."""
        return {"source": self.kind, "id": identity, "column": column, "reason": problem, "value": value}

    def timestamp_problem(self, column_type: ColumnType, whole_days: bool) -> str | None:
        """Why the window cannot be compared with the timestamp column's type, or None when it can."""
        argument, column = self.source.timestamp_argument, self.source.timestamp_column
        if column_type.category == "timestamp":
            return None
        if column_type.category == "time":
            return (
                f"{argument} {column!r} is a time of day without a date, which no window can be compared with; name "
                f"a TIMESTAMP column, or build one in the query (e.g. day + {column} AS moment)."
            )
        if column_type.category == "date":
            if whole_days:
                return None
            return (
                f"{argument} {column!r} is a DATE, which only serves windows that start and end at midnight UTC; "
                f"schedule the sync daily (e.g. CronDataIntervalTimetable('0 0 * * *', timezone='UTC')) or name a "
                "TIMESTAMP column."
            )
        return (
            f"{argument} {column!r} is {column_type.name}, but the window is compared as time; select it as a "
            f"TIMESTAMP, e.g. CAST({column} AS TIMESTAMP) AS {column} in the query."
        )


def layout_of(plan: SyncPlan, identifier: Callable[[str, str], str]) -> list[SourceLayout]:
    """The layout of each source the plan reads, its column names checked by the warehouse's `identifier` rule."""
    identifier(plan.id_column, "id_column")
    identifier(plan.timestamp_column, "timestamp_column")
    for group in FIELD_GROUPS:
        for name, column in _mapping(plan, group).items():
            identifier(column, f"{group} mapping for {name!r}")
    for name, column in plan.actuals.items():
        identifier(column, f"actuals mapping for {name!r}")
    if plan.actuals_timestamp_column:
        identifier(plan.actuals_timestamp_column, "actuals_timestamp_column")
    subject = f"{plan.model_id} {plan.model_version}"
    predictions = SourceLayout(
        source=Source("predictions", plan.query, "timestamp_column", plan.timestamp_column, "query"),
        subject=subject,
        id_column=plan.id_column,
        fields=tuple(
            FieldSlot(wire_group(group), group, spec, column)
            for group, spec, column in mapped_fields(plan.schema.group, _mappings(plan))
        ),
        carries_timestamp=True,
        presence_columns=(),
    )
    if not (plan.actuals_timestamp_column and plan.actuals):
        return [predictions]
    specs = {spec.name: spec for spec in plan.schema.predictions}
    query, argument = (plan.actuals_query, "actuals_query") if plan.actuals_query else (plan.query, "query")
    actuals = SourceLayout(
        source=Source(ACTUALS, query, "actuals_timestamp_column", plan.actuals_timestamp_column, argument),
        subject=subject,
        id_column=plan.id_column,
        fields=tuple(FieldSlot(ACTUALS, ACTUALS, specs[name], column) for name, column in plan.actuals.items()),
        carries_timestamp=False,
        presence_columns=tuple(plan.actuals.values()),
    )
    return [predictions, actuals]


def mapped_fields(
    fields_of: Callable[[str], tuple[FieldSpec, ...]], mappings: Mapping[str, Mapping[str, str]]
) -> list[tuple[str, FieldSpec, str]]:
    """(group, field, column) of every field of a schema in wire order: a mapped field reads its mapped column, any
    other the column of its own name."""
    return [
        (group, spec, (mappings.get(group) or {}).get(spec.name, spec.name))
        for group in FIELD_GROUPS
        for spec in fields_of(group)
    ]


def _mappings(plan: SyncPlan) -> dict[str, Mapping[str, str]]:
    return {group: _mapping(plan, group) for group in FIELD_GROUPS}


def _mapping(plan: SyncPlan, group: str) -> Mapping[str, str]:
    mapping: Mapping[str, str] = getattr(plan, group)
    return mapping


def excerpt(value: Any) -> str | None:
    """The start of a value, as text, for a rejected row's record."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= EXCERPT_CHARACTERS else text[:EXCERPT_CHARACTERS] + "…"


def require_columns(present: list[str], subject: str, needed: Mapping[str, list[str]]) -> None:
    """Fail, naming the argument to fix, when a column some argument needs is not among `present`.

    `needed` maps an argument (id_column, timestamp_column, ...) or a field group (features, ...) to the columns it
    names.
    """
    for argument, columns in needed.items():
        missing = [c for c in dict.fromkeys(columns) if c not in present]
        if not missing:
            continue
        if argument.endswith("_column"):
            role, fix = f"named by {argument}", f"set {argument} to an existing column"
        else:
            role, fix = f"needed for {argument}", "map the field to an existing column"
        raise SyncInputError(
            f"The query for {subject} has no column {', '.join(repr(m) for m in missing)} {role}; it returns "
            f"{', '.join(present)}; add the column to the query or select_expr, or {fix}."
        )
