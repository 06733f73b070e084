"""Sensors on the Aporia side of a sync."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from aporia_provider.hooks.aporia import AporiaHook

if TYPE_CHECKING:
    from airflow.sdk import Context


class AporiaSyncStatusSensor(BaseSensorOperator):
    """Wait until Aporia reports one of `target_statuses` for a data set of a model version."""

    template_fields: Sequence[str] = ("model_id", "model_version", "dataset")

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str,
        dataset: str = "serving",
        target_statuses: Sequence[str] = ("synced",),
        aporia_conn_id: str = AporiaHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.model_version = model_version
        self.dataset = dataset
        self.target_statuses = tuple(target_statuses)
        self.aporia_conn_id = aporia_conn_id

    def poke(self, context: Context) -> bool:
        status = AporiaHook(aporia_conn_id=self.aporia_conn_id).get_sync_status(
            self.model_id, self.model_version, self.dataset
        )
        self.log.info("Aporia sync status of %s %s %s: %s", self.model_id, self.model_version, self.dataset, status)
        return status.get("status") in self.target_statuses
