"""A sync of several model versions from one table (``model_version_column``): its arguments and its outcome.

Each version gets the summary a sync of its own would (`outcome.SyncSummary`); the task returns them together,
``{"model_id", "model_versions", "versions": {version: summary}}``, and its failure XCom keeps its counts so far the
same way, so the sync view shows each version's windows apart (`plugins.windows.per_version`); the metrics and the
Asset events are per version too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.options import SyncOptions
from aporia_provider.extraction.plan import Routing, SyncPlan
from aporia_provider.redshift import jdbc_driver as checked_jdbc_driver
from aporia_provider.redshift import table_query
from aporia_provider.sync.outcome import VERSIONS_KEY, SyncSummary, handled
from aporia_provider.sync.unload import check_unload_settings
from aporia_provider.vocabulary import FIELD_GROUPS

if TYPE_CHECKING:
    from aporia_provider.extraction.layout import RejectedRows
    from aporia_provider.extraction.options import SyncOptions
    from aporia_provider.extraction.spark import StartSpark
    from aporia_provider.extraction.sql import Window
    from aporia_provider.schema import VersionSchema
    from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

# The operator's templated arguments for versions from a column and for columns by prefix.
VERSION_ARGUMENTS = ("model_versions", "model_version_column")
PREFIX_ARGUMENTS = tuple(f"{group}_prefix" for group in FIELD_GROUPS)
# Where the rejected-rows file of the rows naming a version the sync does not serve goes, in place of a version.
OTHER_VERSIONS = "other-versions"


def routing_of(task: AporiaSyncOperator) -> Routing | None:
    """How the sync's rows are routed to versions, or None for a sync of one version; each misfit of its arguments
    refused in one sentence naming the argument and the fix."""
    model_version, model_versions, column = task.model_version, task.model_versions, task.model_version_column
    if column is None:
        if model_versions is not None:
            raise SyncInputError(
                "model_versions is set but model_version_column is not; name the column holding each row's version, "
                "or pass model_version for a sync of one version."
            )
        if not model_version:
            raise SyncInputError(
                "model_version is not set; pass the version the rows belong to, or model_version_column and "
                "model_versions to route each row to the version its column names."
            )
        return None
    if model_version is not None:
        raise SyncInputError(
            "model_version and model_version_column are both set; the column names each row's version: list the "
            "versions to sync in model_versions and leave model_version unset."
        )
    if isinstance(model_versions, str) or not isinstance(model_versions, Sequence):
        raise SyncInputError(
            f"model_versions {model_versions!r} is not a list; give the versions this sync serves, "
            "e.g. model_versions=['champion', 'challenger']."
        )
    return Routing(column, tuple(model_versions), task.on_unknown_version)


def named_versions(task: AporiaSyncOperator) -> dict[str, Any]:
    """The version (or versions) a sync task serves, as its XComs name them."""
    if task.model_version_column is None:
        return {"model_id": task.model_id, "model_version": task.model_version}
    return {"model_id": task.model_id, "model_versions": list(task.model_versions or ())}


def served(task: AporiaSyncOperator) -> str:
    """The version (or versions) a sync task serves, for its log lines."""
    return ", ".join(task.model_versions or ()) if task.model_version_column else str(task.model_version)


def sync_options(task: AporiaSyncOperator) -> SyncOptions:
    """The sync's settings, each checked: an InputError naming the argument."""
    checked_jdbc_driver(task.jdbc_driver)
    check_unload_settings(task.unload_s3_prefix, task.unload_iam_role, task.unload_min_rows)
    routing_of(task)
    return SyncOptions(
        batch_size=task.batch_size,
        num_partitions=task.num_partitions,
        spark_min_rows=task.spark_min_rows,
        lookback=task.lookback,
        on_invalid_rows=task.on_invalid_rows,
        max_invalid_rows=task.max_invalid_rows,
        min_rows=task.min_rows,
        on_low_volume=task.on_low_volume,
        dry_run=task.validate_only,
    )


def sync_plan(task: AporiaSyncOperator, version: str, schema: VersionSchema) -> SyncPlan:
    """The plan of one version's sync: what the task reads and how its columns map onto the version's schema."""
    prefixes = {group: getattr(task, f"{group}_prefix") for group in FIELD_GROUPS}
    return SyncPlan(
        model_id=task.model_id,
        model_version=version,
        schema=schema,
        # SyncPlan checks that the query is a single statement.
        query=table_query(task.table) if task.table else task.query or "",
        id_column=task.id_column,
        timestamp_column=task.timestamp_column,
        features=task.features or {},
        predictions=task.predictions or {},
        raw_inputs=task.raw_inputs or {},
        prefixes={group: prefix for group, prefix in prefixes.items() if prefix is not None},
        actuals=task.actuals or {},
        actuals_timestamp_column=task.actuals_timestamp_column,
        actuals_query=task.actuals_query,
        # A string is one expression, not a sequence of characters.
        select_expr=(task.select_expr,) if isinstance(task.select_expr, str) else tuple(task.select_expr or ()),
        read_options=dict(task.read_options or {}),
    )


class _VersionsWarnings(logging.Handler):
    """A WARNING line goes to the summary of the version it names, or to every version's when it names none."""

    def __init__(self, model_id: str, summaries: Mapping[str, SyncSummary]) -> None:
        super().__init__(logging.WARNING)
        self.model_id, self.summaries = model_id, summaries

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        every = f"{self.model_id} {', '.join(self.summaries)}"  # how the engine names the versions together
        named = [s for v, s in self.summaries.items() if f"{self.model_id} {v}" in message and every not in message]
        for summary in named or self.summaries.values():
            summary.logged_warnings.append(message)


def warnings_by_version(model_id: str, summaries: Mapping[str, SyncSummary]) -> AbstractContextManager[None]:
    """Keep the engine's WARNING lines meanwhile in the summaries of the versions they concern."""
    return handled(_VersionsWarnings(model_id, summaries))


def sync_versions(
    task: AporiaSyncOperator,
    plans: Mapping[str, SyncPlan],
    routing: Routing,
    window: Window,
    options: SyncOptions,
    kept: Mapping[str, RejectedRows],
    spark: StartSpark,
    tag: str,
    spark_where: str,
) -> None:
    """Run the sync of several versions (`extraction.versions`), filling in the summaries the task keeps, so a
    failure reports each version's counts so far; `kept` holds each version's rejected-rows file (and, under "",
    that of the rows naming another version)."""
    from aporia_provider.extraction.versions import run_versions

    summaries = task._summaries or {}
    with warnings_by_version(task.model_id, summaries):
        run_versions(
            plans,
            routing,
            window,
            task.redshift_hook.warehouse(task.jdbc_driver, task.execution_timeout),
            spark,
            task.aporia_hook.client,
            options,
            summaries,
            tag=tag,
            stop=task._stop,
            spark_where=spark_where,
            rejected_rows={version: file for version, file in kept.items() if version},
            other_rejected=kept.get(""),
        )


def version_result(
    model_id: str, version: str, summary: SyncSummary, rejected_files: Mapping[str, str]
) -> dict[str, Any]:
    """What a sync of one version returns: its summary, the model version first (the sync view groups windows by
    it, and a log reader wants it too)."""
    result = {"model_id": model_id, "model_version": version, **summary.to_dict()}
    if version in rejected_files:
        result["rejected_rows_file"] = rejected_files[version]
    return result


def versions_result(
    model_id: str, summaries: Mapping[str, SyncSummary], rejected_files: Mapping[str, str]
) -> dict[str, Any]:
    """What the task returns: each version's summary (with its rejected-rows file, if it kept rows), by version."""
    versions: dict[str, Any] = {}
    for version, summary in summaries.items():
        versions[version] = summary.to_dict()
        if version in rejected_files:
            versions[version]["rejected_rows_file"] = rejected_files[version]
    result: dict[str, Any] = {"model_id": model_id, "model_versions": list(summaries), VERSIONS_KEY: versions}
    if "" in rejected_files:  # the rows that named another version
        result["other_versions_rejected_rows_file"] = rejected_files[""]
    return result


def version_records(record: Mapping[str, Any], version: str | None = None) -> list[tuple[str, Mapping[str, Any]]]:
    """(version, its counts) of a summary or failure record: each version's of a sync of several, else its one (the
    record's model version, or `version`)."""
    versions = record.get(VERSIONS_KEY)
    if isinstance(versions, Mapping):
        return [(str(version), counts) for version, counts in versions.items() if isinstance(counts, Mapping)]
    version = record.get("model_version") or version
    return [(str(version), record)] if version else []


def synced_versions(task: AporiaSyncOperator) -> list[tuple[str, Mapping[str, Any]]]:
    """(version, its summary, or nothing before it synced) of each version the task serves."""
    if task.model_version_column is None:
        return [(task.model_version, task._synced or {})] if task.model_version else []
    synced = (task._synced or {}).get(VERSIONS_KEY) or {}
    return [(version, synced.get(version, {})) for version in task.model_versions or ()]
