"""The base of the provider's operators: connections, hooks, and bad input as a non-retried failure."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from aporia_provider.assets.aporia import model_version_asset
from aporia_provider.compat import AirflowFailException
from aporia_provider.exceptions import InputError
from aporia_provider.hooks.aporia import AporiaHook
from aporia_provider.hooks.redshift import RedshiftIAMHook
from aporia_provider.schema import VersionSchema

if TYPE_CHECKING:
    from airflow.sdk import Context


__all__ = ["ALL_CONNECTIONS", "APORIA_CONNECTION", "APORIA_UI_COLOR", "AporiaBaseOperator", "model_version_asset"]


# One color for every Aporia task in the Airflow UI's graph.
APORIA_UI_COLOR = "#e6e0f8"
# The connection ids, templated on every operator that uses them (e.g. a connection per environment).
APORIA_CONNECTION = ("aporia_conn_id",)
ALL_CONNECTIONS = ("aporia_conn_id", "redshift_conn_id", "aws_conn_id")


class AporiaBaseOperator(BaseOperator):
    """Shared plumbing: the Aporia and Redshift hooks, and bad input turned into a failure Airflow does not retry.

    :param aporia_conn_id: the `aporia` connection (default ``aporia_default``).
    :param redshift_conn_id: the Amazon Redshift connection the data is read through (default
        ``redshift_default``); used by the operators that read Redshift.
    :param aws_conn_id: the AWS connection whose keys obtain the Redshift credentials (default ``aws_default``).
    """

    ui_color = APORIA_UI_COLOR

    def __init__(
        self,
        *,
        aporia_conn_id: str = AporiaHook.default_conn_name,
        redshift_conn_id: str = "redshift_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aporia_conn_id = aporia_conn_id
        self.redshift_conn_id = redshift_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def aporia_hook(self) -> AporiaHook:
        return AporiaHook(aporia_conn_id=self.aporia_conn_id)

    @cached_property
    def redshift_hook(self) -> RedshiftIAMHook:
        return RedshiftIAMHook(redshift_conn_id=self.redshift_conn_id, aws_conn_id=self.aws_conn_id)

    def execute(self, context: Context) -> Any:
        try:
            return self.run(context)
        except InputError as exc:
            raise AirflowFailException(str(exc)) from None

    def run(self, context: Context) -> Any:
        raise NotImplementedError

    def existing_schema(self, model_id: str, model_version: str) -> VersionSchema:
        schema = self.aporia_hook.get_model_version_schema(model_id, model_version)
        if schema is None:
            raise AirflowFailException(
                f"Model {model_id!r} has no version {model_version!r} in Aporia; create it first with "
                "AporiaCreateModelVersionOperator."
            )
        return schema
