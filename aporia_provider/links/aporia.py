"""Extra links from a task to what it worked on in Aporia."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)


def model_version_url(base_url: str, model_id: str, model_version: str) -> str:
    """The page of a model version in Aporia's UI, on the host of the `aporia` connection."""
    return f"{base_url.rstrip('/')}/models/{quote(model_id, safe='')}/versions/{quote(model_version, safe='')}"


class AporiaModelVersionLink(BaseOperatorLink):
    """
    "Aporia model version": the model version a task named, on the host of its `aporia` connection.

    Airflow 3 builds the link on the worker when the task ends, from the operator with its templates rendered,
    and keeps it in XCom for the UI. An operator may name the version it actually used in ``linked_model_version``
    (a version created under another name, say); otherwise its ``model_version`` is taken.
    """

    name = "Aporia model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # A link must never fail the task's end (Airflow 3.1 does not guard the call): no link instead.
        try:
            return self._link(operator)
        except Exception as exc:
            log.debug("No Aporia link for %s: %s", getattr(operator, "task_id", operator), exc)
            return ""

    @staticmethod
    def _link(operator: Any) -> str:
        from aporia_provider.hooks.aporia import AporiaHook

        model_id = getattr(operator, "model_id", None)
        version = getattr(operator, "linked_model_version", None) or getattr(operator, "model_version", None)
        if not isinstance(model_id, str) or not isinstance(version, str) or "{{" in model_id + version:
            return ""
        base_url = AporiaHook(aporia_conn_id=operator.aporia_conn_id).ui_base_url()
        return model_version_url(base_url, model_id, version)
