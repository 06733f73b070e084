"""Sensors on the Aporia side of a sync."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from aporia_provider.compat import AirflowException, AirflowFailException, conf
from aporia_provider.hooks.aporia import AporiaHook
from aporia_provider.links.aporia import AporiaModelVersionLink
from aporia_provider.operators.base import APORIA_UI_COLOR
from aporia_provider.triggers.aporia import AporiaSyncStatusTrigger, sync_status_outcome

if TYPE_CHECKING:
    from airflow.sdk import Context


class AporiaSyncStatusSensor(BaseSensorOperator):
    """
    Wait until Aporia reports one of ``target_statuses`` for a data set of a model version.

    A status in ``failure_statuses`` ends the task as failed at once (no retries), with one sentence naming the
    data set and the status. In deferrable mode the waiting happens in the triggerer
    (``AporiaSyncStatusTrigger``), not in a worker slot.

    :param model_id: the Aporia model id (templated).
    :param model_version: the model version's name (templated).
    :param dataset: ``serving`` (default), ``training``, ``testing`` or ``actuals`` (templated).
    :param target_statuses: statuses that end the wait successfully; default ``("synced",)`` (templated: a list,
        or one string of comma-separated statuses).
    :param failure_statuses: statuses that fail the task; default ``("failed", "disabled")`` (templated, as
        ``target_statuses``). A status in both counts as a target.
    :param aporia_conn_id: the `aporia` connection (templated).
    :param deferrable: wait in the triggerer; defaults to the ``[operators] default_deferrable`` option.
    :param poke_interval: seconds between two looks, in both modes (BaseSensorOperator's).
    """

    template_fields: Sequence[str] = (
        "model_id",
        "model_version",
        "dataset",
        "target_statuses",
        "failure_statuses",
        "aporia_conn_id",
    )
    operator_extra_links = (AporiaModelVersionLink(),)
    ui_color = APORIA_UI_COLOR

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str,
        dataset: str = "serving",
        target_statuses: Sequence[str] | str = ("synced",),
        failure_statuses: Sequence[str] | str = ("failed", "disabled"),
        aporia_conn_id: str = AporiaHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.model_version = model_version
        self.dataset = dataset
        self.target_statuses = target_statuses if isinstance(target_statuses, str) else tuple(target_statuses)
        self.failure_statuses = failure_statuses if isinstance(failure_statuses, str) else tuple(failure_statuses)
        self.aporia_conn_id = aporia_conn_id
        self.deferrable = deferrable

    def poke(self, context: Context) -> bool:
        status = AporiaHook(aporia_conn_id=self.aporia_conn_id).get_sync_status(
            self.model_id, self.model_version, self.dataset
        )
        self.log.info("Aporia sync status of %s %s %s: %s", self.model_id, self.model_version, self.dataset, status)
        outcome = sync_status_outcome(
            status,
            self.model_id,
            self.model_version,
            self.dataset,
            _statuses(self.target_statuses),
            _statuses(self.failure_statuses),
        )
        if outcome is not None and outcome["status"] == "failure":
            raise AirflowFailException(outcome["message"])
        return outcome is not None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # One look first: a data set already in a target status needs no trip through the triggerer.
        if self.poke(context):
            return None
        self.defer(
            trigger=AporiaSyncStatusTrigger(
                model_id=self.model_id,
                model_version=self.model_version,
                dataset=self.dataset,
                target_statuses=_statuses(self.target_statuses),
                failure_statuses=_statuses(self.failure_statuses),
                aporia_conn_id=self.aporia_conn_id,
                poke_interval=float(self.poke_interval),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        """Back from the triggerer: success ends the task, a failure status fails it, an error may be retried."""
        event = event or {}
        if event.get("status") == "success":
            self.log.info(
                "Aporia sync status of %s %s %s: %s.",
                self.model_id,
                self.model_version,
                self.dataset,
                event.get("sync_status"),
            )
            return
        if event.get("status") == "failure":
            raise AirflowFailException(event["message"])
        raise AirflowException(
            f"Waiting for the Aporia sync status of {self.model_id} {self.model_version} {self.dataset} failed: "
            f"{event.get('message', f'the trigger sent {event!r}')}"
        )


def _statuses(value: Sequence[str] | str) -> tuple[str, ...]:
    """Statuses as given, or rendered from a template into one string of comma-separated names."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)
