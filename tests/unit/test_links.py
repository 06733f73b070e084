"""The "Aporia model version" extra link, as Airflow 3 builds it when a task ends."""

from __future__ import annotations

from typing import Any

import pytest

from aporia_provider.links.aporia import AporiaModelVersionLink
from aporia_provider.operators.aporia import (
    AporiaConnectServingOperator,
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
)
from aporia_provider.sensors.aporia import AporiaSyncStatusSensor
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator
from tests.unit.conftest import ConnectionFactory

NAMED = {"model_id": "fraud detection", "model_version": "v1/2"}
EXPECTED = "http://aporia.test:8080/models/fraud%20detection/versions/v1%2F2"


def link(operator: Any) -> str:
    [extra_link] = operator.operator_extra_links
    assert isinstance(extra_link, AporiaModelVersionLink) and extra_link.name == "Aporia model version"
    url: str = extra_link.get_link(operator, ti_key=None)  # type: ignore[arg-type]
    return url


@pytest.mark.parametrize(
    "operator",
    [
        AporiaCreateModelVersionOperator(task_id="t", model_type="binary", **NAMED),
        AporiaConnectServingOperator(task_id="t", query="SELECT 1", id_column="i", timestamp_column="t", **NAMED),
        AporiaSyncOperator(task_id="t", query="SELECT 1", id_column="i", timestamp_column="t", **NAMED),
        AporiaSyncStatusSensor(task_id="t", **NAMED),
    ],
    ids=lambda operator: type(operator).__name__,
)
def test_every_operator_naming_a_version_links_to_it(aporia_conn: dict[str, Any], operator: Any) -> None:
    assert link(operator) == EXPECTED


def test_the_model_operator_names_no_version_and_has_no_link() -> None:
    assert not AporiaCreateModelOperator(task_id="t", model_id="fraud").operator_extra_links


def test_the_version_actually_created_is_linked(aporia_conn: dict[str, Any]) -> None:
    operator = AporiaCreateModelVersionOperator(task_id="t", model_type="binary", **NAMED)
    operator.linked_model_version = "v1/2-2"
    assert link(operator) == EXPECTED + "-2"


def test_default_ports_are_left_out(connection: ConnectionFactory, aporia_conn: dict[str, Any]) -> None:
    connection("aporia_cloud", conn_type="aporia", host="app.aporia.com", password="token")
    sensor = AporiaSyncStatusSensor(task_id="t", model_id="m", model_version="v1", aporia_conn_id="aporia_cloud")
    assert link(sensor) == "https://app.aporia.com/models/m/versions/v1"
    connection("aporia_http", conn_type="aporia", host="aporia.internal", schema="http", port=80)
    sensor = AporiaSyncStatusSensor(task_id="t", model_id="m", model_version="v1", aporia_conn_id="aporia_http")
    # No token is needed to name the page.
    assert link(sensor) == "http://aporia.internal/models/m/versions/v1"


def test_no_link_rather_than_a_failure(aporia_conn: dict[str, Any]) -> None:
    unrendered = AporiaSyncStatusSensor(task_id="t", model_id="m", model_version="{{ params.version }}")
    assert link(unrendered) == ""
    missing = AporiaSyncStatusSensor(task_id="t", model_id="m", model_version="v1", aporia_conn_id="nowhere")
    assert link(missing) == ""
