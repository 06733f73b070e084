"""The sync-status sensor, poking and deferred, and its trigger's run() against the local Aporia server."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from aporia_provider.compat import AirflowException, AirflowFailException
from aporia_provider.datasources import JDBCDataSource
from aporia_provider.hooks.aporia import AporiaHook
from aporia_provider.sensors.aporia import AporiaSyncStatusSensor
from aporia_provider.triggers.aporia import AporiaSyncStatusTrigger
from tests.helpers import MODEL, AporiaProbe

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

pytestmark = pytest.mark.usefixtures("airflow_env")


@pytest.fixture
def serving(version: str) -> AporiaHook:
    """Version v1 with its serving data set connected, and its sync switched off."""
    hook = AporiaHook()
    source = JDBCDataSource(url="jdbc:postgresql://127.0.0.1:5439/dev", query="SELECT * FROM model_predictions")
    hook.connect_dataset(MODEL, version, "serving", source, "prediction_id", "prediction_timestamp")
    hook.set_sync_enabled(MODEL, version, False)
    return hook


def rebuilt(trigger: AporiaSyncStatusTrigger) -> AporiaSyncStatusTrigger:
    """The trigger as the triggerer makes it: from its serialized class path and arguments."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    made: AporiaSyncStatusTrigger = getattr(importlib.import_module(module), name)(**kwargs)
    return made


async def first_event(trigger: AporiaSyncStatusTrigger, meanwhile: Any = None) -> dict[str, Any]:
    """Run the trigger until its event; `meanwhile` (a sync callable) runs once it has polled a few times."""
    events = trigger.run()
    pending = asyncio.ensure_future(events.__anext__())
    if meanwhile is not None:
        await asyncio.sleep(1.0)
        assert not pending.done(), "the trigger should still be waiting"
        await sync_to_async(meanwhile)()
    event = await asyncio.wait_for(pending, timeout=30)
    await events.aclose()
    payload: dict[str, Any] = event.payload
    return payload


def test_deferred_sensor_waits_in_the_trigger_until_aporia_syncs(serving: AporiaHook, aporia: AporiaProbe) -> None:
    sensor = AporiaSyncStatusSensor(
        task_id="wait",
        model_id=MODEL,
        model_version="v1",
        failure_statuses=["failed"],
        deferrable=True,
        poke_interval=0.2,
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = rebuilt(deferred.value.trigger)
    event = asyncio.run(first_event(trigger, meanwhile=lambda: serving.set_sync_enabled(MODEL, "v1", True)))
    assert event == {"status": "success", "sync_status": "synced"}
    assert getattr(sensor, deferred.value.method_name)({}, event) is None


def test_a_failure_status_ends_the_deferred_sensor_with_one_sentence(serving: AporiaHook, aporia: AporiaProbe) -> None:
    sensor = AporiaSyncStatusSensor(
        task_id="wait", model_id=MODEL, model_version="v1", failure_statuses=[], deferrable=True, poke_interval=0.2
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = rebuilt(deferred.value.trigger)
    trigger.failure_statuses = ["disabled"]  # as if the DAG had rendered another list
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "failure"
    with pytest.raises(AirflowFailException) as failed:
        sensor.execute_complete({}, event)
    assert str(failed.value) == (
        f"Aporia reports the serving data set of {MODEL} v1 as 'disabled', one of failure_statuses; fix or re-enable "
        "its sync in Aporia, then clear this task."
    )


def test_the_poking_sensor_fails_on_a_failure_status(serving: AporiaHook, aporia: AporiaProbe) -> None:
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id=MODEL, model_version="v1", poke_interval=0.2, timeout=30)
    with pytest.raises(AirflowFailException) as failed:
        sensor.execute({})
    assert "as 'disabled', one of failure_statuses" in str(failed.value)


def test_an_unconnected_data_set_is_an_error_not_a_wait(version: str, aporia: AporiaProbe) -> None:
    trigger = AporiaSyncStatusTrigger(
        model_id=MODEL,
        model_version=version,
        dataset="actuals",
        target_statuses=["synced"],
        failure_statuses=["failed"],
        poke_interval=0.2,
    )
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "error"
    assert "HTTP 404" in event["message"] and "'actuals' is not connected" in event["message"]
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id=MODEL, model_version=version, dataset="actuals")
    with pytest.raises(AirflowException) as errored:
        sensor.execute_complete({}, event)
    assert not isinstance(errored.value, AirflowFailException)
