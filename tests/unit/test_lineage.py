"""OpenLineage facets of the sync and connect operators, computed without servers (the connections are data)."""

from __future__ import annotations

from typing import Any

import pytest

from aporia_provider.datasources import JDBCDataSource
from aporia_provider.operators.aporia import AporiaConnectServingOperator
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator
from tests.unit.conftest import ConnectionFactory

pytest.importorskip("airflow.providers.openlineage")

CLUSTER_HOST = "analytics.abc123xyz.eu-west-1.redshift.amazonaws.com"


@pytest.fixture
def connections(connection: ConnectionFactory, aporia_conn: dict[str, Any]) -> None:
    connection("aws_default", conn_type="aws", login="AKIA", password="secret", extra={"region_name": "eu-west-1"})
    connection(
        "redshift_default",
        conn_type="redshift",
        host=CLUSTER_HOST,
        schema="dev",
        login="aporia_reader",
        extra={"iam": True, "cluster_identifier": "analytics"},
    )


def sync(**kwargs: Any) -> AporiaSyncOperator:
    arguments: dict[str, Any] = {
        "task_id": "sync",
        "model_id": "fraud",
        "model_version": "v1",
        "query": "SELECT p.*, l.label FROM ml.predictions p JOIN labels l USING (id) -- today",
        "id_column": "id",
        "timestamp_column": "ts",
    }
    return AporiaSyncOperator(**(arguments | kwargs))


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


@pytest.mark.usefixtures("connections")
def test_the_sync_reads_redshift_tables_and_writes_the_aporia_version() -> None:
    operator = sync(actuals_query="SELECT id, label FROM ml.actuals")
    operator._synced = {"rows_read": 12, "fragments_sent": 12, "actuals_sent": 3}
    lineage = operator.get_openlineage_facets_on_complete(None)
    redshift = "redshift://analytics.eu-west-1:5439"
    assert names(lineage.inputs) == [
        (redshift, "dev.ml.predictions"),
        (redshift, "dev.public.labels"),
        (redshift, "dev.ml.actuals"),
    ]
    [output] = lineage.outputs
    assert (output.namespace, output.name) == ("aporia://aporia.test:8080", "fraud/v1")
    assert output.outputFacets["outputStatistics"].rowCount == 12
    assert lineage.run_facets == {}


@pytest.mark.usefixtures("connections")
def test_a_table_sync_names_its_table_and_a_dry_run_writes_nothing() -> None:
    lineage = sync(query=None, table="ml.predictions", validate_only=True).get_openlineage_facets_on_complete(None)
    assert names(lineage.inputs) == [("redshift://analytics.eu-west-1:5439", "dev.ml.predictions")]
    assert lineage.outputs == []


@pytest.mark.usefixtures("connections")
def test_an_unparseable_query_is_reported_not_raised() -> None:
    lineage = sync(query="SELECT FROM WHERE (((").get_openlineage_facets_on_complete(None)
    assert lineage.inputs == []
    assert lineage.run_facets["extractionError"].failedTasks == 1


@pytest.mark.usefixtures("connections")
def test_the_connect_operator_names_its_query_tables() -> None:
    operator = AporiaConnectServingOperator(
        task_id="connect",
        model_id="fraud",
        model_version="v1",
        query="SELECT * FROM ml.predictions;",
        id_column="id",
        timestamp_column="ts",
    )
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert names(lineage.inputs) == [("redshift://analytics.eu-west-1:5439", "dev.ml.predictions")]
    [output] = lineage.outputs
    assert (output.namespace, output.name, output.outputFacets) == ("aporia://aporia.test:8080", "fraud/v1", {})
    operator.data_source = JDBCDataSource(url="jdbc:postgresql://elsewhere/db", query="SELECT 1")
    assert operator.get_openlineage_facets_on_complete(None).inputs == []


@pytest.mark.usefixtures("connections")
def test_a_sync_of_two_versions_writes_each_with_its_rows() -> None:
    operator = sync(model_version=None, model_version_column="version", model_versions=["champion", "challenger"])
    operator._synced = {"versions": {"champion": {"fragments_sent": 9}, "challenger": {"fragments_sent": 3}}}
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(o.name, o.outputFacets["outputStatistics"].rowCount) for o in lineage.outputs] == [
        ("fraud/champion", 9),
        ("fraud/challenger", 3),
    ]
