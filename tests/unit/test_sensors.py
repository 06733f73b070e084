"""AporiaSyncStatusSensor against stubbed HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from aporia_provider.sensors.aporia import AporiaSyncStatusSensor
from tests.unit.conftest import BASE_URL

STATUS_URL = BASE_URL + "/v1beta/models/fraud/versions/v1/sync_status/actuals"


@pytest.mark.parametrize(("status", "done"), [("synced", True), ("syncing", False), ("failed", False)])
def test_poke_compares_the_status(
    aporia_conn: dict[str, Any], http: responses.RequestsMock, status: str, done: bool
) -> None:
    http.get(STATUS_URL, json={"status": status})
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id="fraud", model_version="v1", dataset="actuals")
    assert sensor.poke({}) is done
    assert len(http.calls) == 1


def test_poke_with_other_target_statuses(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.get(STATUS_URL, json={"status": "failed"})
    sensor = AporiaSyncStatusSensor(
        task_id="wait", model_id="fraud", model_version="v1", dataset="actuals", target_statuses=["synced", "failed"]
    )
    assert sensor.target_statuses == ("synced", "failed")
    assert sensor.poke({}) is True


def test_sensor_defaults() -> None:
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id="fraud", model_version="v1")
    assert (sensor.dataset, sensor.target_statuses, sensor.aporia_conn_id) == ("serving", ("synced",), "aporia_default")
    assert tuple(sensor.template_fields) == ("model_id", "model_version", "dataset")
