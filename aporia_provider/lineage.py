"""OpenLineage for the provider's operators: Redshift tables in, an Aporia model version out.

Airflow asks operators for lineage only when the OpenLineage provider (the `openlineage` extra) is installed, so
everything from it is imported when asked. Names follow the Amazon provider: Redshift datasets live in the namespace
``redshift://<cluster>.<region>:<port>`` (from ``RedshiftSQLHook.get_openlineage_database_info``) and are named
``<database>.<schema>.<table>``; an Aporia model version lives in ``aporia://<host>`` and is named
``<model id>/<version>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from aporia_provider.extraction.warehouse import Warehouse
    from aporia_provider.hooks.aporia import AporiaHook

# Redshift's search_path starts with the user's own schema, then public; unqualified tables are read as public.
DEFAULT_SCHEMA = "public"


def aporia_dataset(aporia_hook: AporiaHook, model_id: str, model_version: str, rows: int | None = None) -> Any:
    """The Aporia model version as an OpenLineage dataset, with the rows delivered to it when known."""
    from airflow.providers.common.compat.openlineage.facet import OutputDataset, OutputStatisticsOutputDatasetFacet

    facets: dict[str, Any] = {}
    if rows is not None:
        facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=rows)
    netloc = urlsplit(aporia_hook.ui_base_url()).netloc
    return OutputDataset(namespace=f"aporia://{netloc}", name=f"{model_id}/{model_version}", outputFacets=facets)


def warehouse_lineage(warehouse: Warehouse, queries: Iterable[str], outputs: list[Any]) -> OperatorLineage:
    """The tables the queries read, in the warehouse's namespace, and the given outputs. A query the SQL parser cannot
    read is reported in an extractionError run facet instead of failing."""
    from airflow.providers.common.compat.openlineage.facet import Error, ExtractionErrorRunFacet
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.providers.openlineage.sqlparser import SQLParser, from_table_meta

    namespace = warehouse.lineage_namespace()
    parser = SQLParser(dialect=warehouse.lineage_dialect, default_schema=DEFAULT_SCHEMA)
    inputs: dict[str, Any] = {}
    errors: list[Any] = []
    for query in queries:
        parsed = parser.parse(query)
        if parsed is None:
            continue
        for table in parsed.in_tables:
            dataset = from_table_meta(table, warehouse.database, namespace, False)
            inputs.setdefault(dataset.name, dataset)
        errors += [
            Error(errorMessage=e.message, stackTrace=None, task=e.origin_statement, taskNumber=e.index)
            for e in parsed.errors
        ]
    run_facets: dict[str, Any] = {}
    if errors:
        run_facets["extractionError"] = ExtractionErrorRunFacet(totalTasks=1, failedTasks=1, errors=errors)
    return OperatorLineage(inputs=list(inputs.values()), outputs=outputs, run_facets=run_facets)


def sync_lineage(
    warehouse: Warehouse,
    queries: Iterable[str],
    aporia_hook: AporiaHook,
    model_id: str,
    versions: Iterable[tuple[str, Mapping[str, Any]]],
) -> OperatorLineage:
    """A sync's lineage: the tables its queries read, and each version of the model they went to (`versions`: each
    with its summary), with the predictions delivered as its row count."""
    outputs = [
        aporia_dataset(aporia_hook, model_id, version, counts.get("fragments_sent")) for version, counts in versions
    ]
    return warehouse_lineage(warehouse, queries, outputs)
