"""Columns by prefix: which column feeds each field of a group a prefix maps, and how the query drifted from the schema.

With ``features_prefix="f_"`` the column ``f_amount`` feeds the feature ``amount``. An explicit mapping wins; a field
neither maps reads its prefixed column, or the column of its own name when only that one exists; both existing is
ambiguous and refused. Resolved against the query's columns (known before any row is read): the plan that comes out
maps every field explicitly, so the readers (`layout`) apply one rule whatever a field's mapping came from.

Drift is what a wide table shows when the schema falls behind it: a field whose column is missing (the sync then
fails, naming it), or columns matching a prefix that no field of the version schema reads (a new feature in the
table: the hint that a new version is due). It is logged as one WARNING, which the summary keeps, before any row is
read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.plan import SyncPlan
from aporia_provider.vocabulary import FIELD_GROUPS, group_label

log = logging.getLogger(__name__)
# Drift lists name this many columns, then say how many more.
MAX_LISTED = 20


def prefix_argument(group: str) -> str:
    return f"{group}_prefix"


@dataclass(frozen=True)
class Mapped:
    """A plan whose prefixed groups are resolved against the query's columns, and what drifted."""

    plan: SyncPlan
    missing: tuple[str, ...]  # "feature 'amount' (f_amount)": fields whose column the query lacks
    unknown: frozenset[str]  # columns matching a prefix that no field or mapping of the plan reads


def map_columns(plan: SyncPlan, present: Sequence[str]) -> Mapped:
    """Resolve the plan's prefixes against `present`, the query's columns; refuse a prefix that matches no column,
    and a field that two columns could feed."""
    subject = f"{plan.model_id} {plan.model_version}"
    mappings = {group: dict(_mapping(plan, group)) for group in FIELD_GROUPS}
    matching: set[str] = set()
    available = set(present)
    for group, prefix in plan.prefixes.items():
        argument = prefix_argument(group)
        matched = [column for column in present if column.startswith(prefix) and len(column) > len(prefix)]
        if not matched:
            raise SyncInputError(
                f"{argument} {prefix!r} matches no column of the query for {subject}; it returns "
                f"{', '.join(present)}; give the prefix the columns start with, or leave {argument} unset."
            )
        matching.update(matched)
        for spec in plan.schema.group(group):
            if spec.name in mappings[group]:
                continue  # an explicit mapping wins
            prefixed, own = prefix + spec.name, spec.name
            if prefixed in available and own in available:
                raise SyncInputError(
                    f"The {group_label(group)} {spec.name!r} of {subject} has two columns, {prefixed!r} ({argument}) "
                    f"and {own!r} (its own name); map it to one of them, e.g. {group}={{{spec.name!r}: {prefixed!r}}}."
                )
            mappings[group][spec.name] = own if own in available and prefixed not in available else prefixed
    resolved = replace(
        plan, features=mappings["features"], predictions=mappings["predictions"], raw_inputs=mappings["raw_inputs"]
    )
    read = {plan.id_column, plan.timestamp_column, *plan.actuals.values()}
    read.update(column for mapping in mappings.values() for column in mapping.values())
    missing = tuple(
        f"{group_label(group)} {name!r} ({column})"
        for group, mapping in mappings.items()
        for name, column in mapping.items()
        if column not in available
    )
    return Mapped(resolved, missing, frozenset(matching - read))


def warn_of_drift(subject: str, mapped: Sequence[Mapped]) -> None:
    """One WARNING for what the query and the versions' schemas disagree on: columns missing for a field (of any of
    the versions), columns matching a prefix that none of them reads."""
    missing = [f"{m.plan.model_version}: {field}" for m in mapped for field in m.missing]
    if len(mapped) == 1:
        missing = list(mapped[0].missing)
    unknown = sorted(frozenset.intersection(*(m.unknown for m in mapped))) if mapped else []
    parts = []
    if missing:
        parts.append(f"no column for {_listed(missing)}")
    if unknown:
        parts.append(f"columns no field of the version schema reads: {_listed(unknown)}")
    if not parts:
        return
    hint = "a new model version may be due (or a mapping is stale)"
    log.warning("Schema drift in the query for %s: %s; %s.", subject, "; ".join(parts), hint)


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown if len(items) <= MAX_LISTED else f"{shown} and {len(items) - MAX_LISTED:,} more"


def _mapping(plan: SyncPlan, group: str) -> Mapping[str, str]:
    mapping: Mapping[str, str] = getattr(plan, group)
    return mapping
