"""Triggers that wait on Aporia in the triggerer, so a waiting sensor holds no worker slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from aporia_provider.hooks.aporia import AporiaHook


def sync_status_outcome(
    status: dict[str, Any],
    model_id: str,
    model_version: str,
    dataset: str,
    target_statuses: Sequence[str],
    failure_statuses: Sequence[str],
) -> dict[str, Any] | None:
    """The event a sync status ends the wait with, or None to keep waiting. Shared by the sensor's poke."""
    found = status.get("status")
    if found in target_statuses:
        return {"status": "success", "sync_status": found}
    if found in failure_statuses:
        return {
            "status": "failure",
            "sync_status": found,
            "message": (
                f"Aporia reports the {dataset} data set of {model_id} {model_version} as {found!r}, one of "
                f"failure_statuses; fix or re-enable its sync in Aporia, then clear this task."
            ),
        }
    return None


class AporiaSyncStatusTrigger(BaseTrigger):
    """
    Poll Aporia's sync status of a data set until it reaches a target or a failure status.

    Fires one event: ``{"status": "success", "sync_status": ...}``, ``{"status": "failure", "sync_status": ...,
    "message": ...}`` for a failure status, or ``{"status": "error", "message": ...}`` when Aporia cannot be asked
    (after the client's own retries).

    :param model_id: the Aporia model id.
    :param model_version: the model version's name.
    :param dataset: ``serving``, ``training``, ``testing`` or ``actuals``.
    :param target_statuses: statuses that end the wait successfully.
    :param failure_statuses: statuses that end it as a failure.
    :param aporia_conn_id: the `aporia` connection.
    :param poke_interval: seconds between two polls.
    """

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str,
        dataset: str,
        target_statuses: Sequence[str],
        failure_statuses: Sequence[str],
        aporia_conn_id: str = AporiaHook.default_conn_name,
        poke_interval: float = 60.0,
    ) -> None:
        super().__init__()
        self.model_id = model_id
        self.model_version = model_version
        self.dataset = dataset
        self.target_statuses = list(target_statuses)
        self.failure_statuses = list(failure_statuses)
        self.aporia_conn_id = aporia_conn_id
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "model_id": self.model_id,
                "model_version": self.model_version,
                "dataset": self.dataset,
                "target_statuses": self.target_statuses,
                "failure_statuses": self.failure_statuses,
                "aporia_conn_id": self.aporia_conn_id,
                "poke_interval": self.poke_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The hook is synchronous (requests, with the client's retries); sync_to_async runs it off the event
        # loop, and lets it reach Airflow's connections through the triggerer as the Task SDK requires.
        from asgiref.sync import sync_to_async

        hook = AporiaHook(aporia_conn_id=self.aporia_conn_id)
        get_status = sync_to_async(hook.get_sync_status)
        while True:
            try:
                status = await get_status(self.model_id, self.model_version, self.dataset)
            except Exception as exc:
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            outcome = sync_status_outcome(
                status, self.model_id, self.model_version, self.dataset, self.target_statuses, self.failure_statuses
            )
            if outcome is not None:
                yield TriggerEvent(outcome)
                return
            self.log.info(
                "Aporia sync status of %s %s %s: %s; next look in %g s.",
                self.model_id,
                self.model_version,
                self.dataset,
                status.get("status"),
                self.poke_interval,
            )
            await asyncio.sleep(self.poke_interval)
