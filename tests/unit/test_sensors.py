"""AporiaSyncStatusSensor and AporiaSyncStatusTrigger against stubbed HTTP."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
import responses

from aporia_provider.compat import AirflowException, AirflowFailException
from aporia_provider.sensors.aporia import AporiaSyncStatusSensor
from aporia_provider.triggers.aporia import AporiaSyncStatusTrigger
from tests.unit.conftest import BASE_URL

try:  # Airflow >= 3.2
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

STATUS_URL = BASE_URL + "/v1beta/models/fraud/versions/v1/sync_status/actuals"


@pytest.mark.parametrize(("status", "done"), [("synced", True), ("syncing", False), ("pending", False)])
def test_poke_compares_the_status(
    aporia_conn: dict[str, Any], http: responses.RequestsMock, status: str, done: bool
) -> None:
    http.get(STATUS_URL, json={"status": status})
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id="fraud", model_version="v1", dataset="actuals")
    assert sensor.poke({}) is done
    assert len(http.calls) == 1


@pytest.mark.parametrize("status", ["failed", "disabled"])
def test_a_failure_status_fails_the_task_at_once(
    aporia_conn: dict[str, Any], http: responses.RequestsMock, status: str
) -> None:
    http.get(STATUS_URL, json={"status": status})
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id="fraud", model_version="v1", dataset="actuals")
    with pytest.raises(AirflowFailException) as raised:
        sensor.poke({})
    assert str(raised.value) == (
        f"Aporia reports the actuals data set of fraud v1 as {status!r}, one of failure_statuses; fix or re-enable "
        "its sync in Aporia, then clear this task."
    )


def test_poke_with_other_target_statuses(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.get(STATUS_URL, json={"status": "failed"})
    sensor = AporiaSyncStatusSensor(
        task_id="wait", model_id="fraud", model_version="v1", dataset="actuals", target_statuses=["synced", "failed"]
    )
    assert sensor.target_statuses == ("synced", "failed")
    assert sensor.poke({}) is True


def test_rendered_statuses_may_be_one_comma_separated_string(
    aporia_conn: dict[str, Any], http: responses.RequestsMock
) -> None:
    http.get(STATUS_URL, json={"status": "broken"})
    sensor = AporiaSyncStatusSensor(
        task_id="wait",
        model_id="fraud",
        model_version="v1",
        dataset="actuals",
        target_statuses="synced",
        failure_statuses="broken, failed",
    )
    with pytest.raises(AirflowFailException):
        sensor.poke({})
    http.replace(responses.GET, STATUS_URL, json={"status": "synced"})
    assert sensor.poke({}) is True


def test_sensor_defaults() -> None:
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id="fraud", model_version="v1")
    assert (sensor.dataset, sensor.target_statuses, sensor.aporia_conn_id) == ("serving", ("synced",), "aporia_default")
    assert sensor.failure_statuses == ("failed", "disabled")
    assert sensor.deferrable is False
    assert tuple(sensor.template_fields) == (
        "model_id",
        "model_version",
        "dataset",
        "target_statuses",
        "failure_statuses",
        "aporia_conn_id",
    )


def test_deferrable_follows_the_default_deferrable_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    import aporia_provider.sensors.aporia as module

    # The default is read when the class is defined, as in Airflow's own providers.
    reloaded = importlib.reload(module)
    try:
        assert reloaded.AporiaSyncStatusSensor(task_id="wait", model_id="m", model_version="v").deferrable is True
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(module)


def test_deferrable_mode_looks_once_then_defers(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.get(STATUS_URL, json={"status": "syncing"})
    sensor = AporiaSyncStatusSensor(
        task_id="wait",
        model_id="fraud",
        model_version="v1",
        dataset="actuals",
        failure_statuses="failed",
        deferrable=True,
        poke_interval=5,
        timeout=300,
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert len(http.calls) == 1
    trigger = deferred.value.trigger
    assert isinstance(trigger, AporiaSyncStatusTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout is not None and deferred.value.timeout.total_seconds() == 300
    classpath, kwargs = trigger.serialize()
    assert classpath == "aporia_provider.triggers.aporia.AporiaSyncStatusTrigger"
    assert kwargs == {
        "model_id": "fraud",
        "model_version": "v1",
        "dataset": "actuals",
        "target_statuses": ["synced"],
        "failure_statuses": ["failed"],
        "aporia_conn_id": "aporia_default",
        "poke_interval": 5.0,
    }
    # The triggerer rebuilds the trigger from exactly this.
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name)(**kwargs).serialize() == (classpath, kwargs)


def test_deferrable_mode_needs_no_trigger_when_already_there(
    aporia_conn: dict[str, Any], http: responses.RequestsMock
) -> None:
    http.get(STATUS_URL, json={"status": "synced"})
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id="fraud", model_version="v1", dataset="actuals")
    sensor.deferrable = True
    assert sensor.execute({}) is None


def test_execute_complete_turns_events_into_outcomes() -> None:
    sensor = AporiaSyncStatusSensor(task_id="wait", model_id="fraud", model_version="v1", deferrable=True)
    assert sensor.execute_complete({}, {"status": "success", "sync_status": "synced"}) is None
    with pytest.raises(AirflowFailException) as failed:
        sensor.execute_complete({}, {"status": "failure", "sync_status": "failed", "message": "Aporia reports x."})
    assert str(failed.value) == "Aporia reports x."
    with pytest.raises(AirflowException) as errored:
        sensor.execute_complete({}, {"status": "error", "message": "Aporia get_sync_status failed: HTTP 500."})
    assert not isinstance(errored.value, AirflowFailException)
    assert str(errored.value) == (
        "Waiting for the Aporia sync status of fraud v1 serving failed: Aporia get_sync_status failed: HTTP 500."
    )


def run_trigger(trigger: AporiaSyncStatusTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=30))


def test_the_trigger_polls_until_a_target_status(aporia_conn: dict[str, Any], http: responses.RequestsMock) -> None:
    http.get(STATUS_URL, json={"status": "syncing"})
    http.get(STATUS_URL, json={"status": "syncing"})
    http.get(STATUS_URL, json={"status": "synced"})
    trigger = AporiaSyncStatusTrigger(
        model_id="fraud",
        model_version="v1",
        dataset="actuals",
        target_statuses=["synced"],
        failure_statuses=["failed"],
        poke_interval=0.01,
    )
    assert run_trigger(trigger) == [{"status": "success", "sync_status": "synced"}]
    assert len(http.calls) == 3


def test_the_trigger_reports_an_unreachable_aporia_as_an_error(
    connection: Any, aporia_conn: dict[str, Any], closed_port: int
) -> None:
    connection("aporia_down", **(aporia_conn | {"host": "127.0.0.1", "port": closed_port, "extra": {"timeout": 1}}))
    trigger = AporiaSyncStatusTrigger(
        model_id="fraud",
        model_version="v1",
        dataset="actuals",
        target_statuses=["synced"],
        failure_statuses=[],
        aporia_conn_id="aporia_down",
    )
    # After the client's own retries (a few seconds of back-off), one error event.
    [event] = run_trigger(trigger)
    assert event["status"] == "error"
    assert event["message"].startswith("Aporia get_sync_status failed after 4 attempts: cannot reach")
