"""AporiaHook: the one door to the Aporia API (REST /v1beta and the GraphQL controller)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from aporia_provider.client import MODEL_VERSION_SCHEMA, AporiaClient, LogResult, iter_version_schema
from aporia_provider.compat import AirflowException, AirflowFailException
from aporia_provider.datasources import JDBCDataSource
from aporia_provider.exceptions import AporiaError
from aporia_provider.schema import VersionSchema, check_model_type
from aporia_provider.vocabulary import DATASET_NAMES, FIELD_GROUPS

if TYPE_CHECKING:
    from airflow.sdk import Connection

# Connecting a data set makes Aporia check the query against the database while the call waits; the SDK allows
# such calls 600 s.
CONNECT_TIMEOUT = 600.0
# The SDK's defaults for a new model's look in Aporia's UI.
DEFAULT_MODEL_COLOR = "blue"
DEFAULT_MODEL_ICON = "general"
# How Aporia says, in a GraphQL error, that the model or version is not there.
_MISSING_VERSION_PHRASES = ("not found", "does not exist", "has no version")


class AporiaHook(BaseHook):
    """
    Talks to Aporia (REST and GraphQL).

    :param aporia_conn_id: an `aporia` connection: host, port, scheme (http/https), the API token as
        password, and extras `environment`, `verify_ssl` and `timeout` (seconds per call).
    :param timeout: seconds to wait for any one Aporia call, unless the connection's `timeout` extra says.
    """

    conn_name_attr = "aporia_conn_id"
    default_conn_name = "aporia_default"
    conn_type = "aporia"
    hook_name = "Aporia"

    def __init__(
        self,
        aporia_conn_id: str = default_conn_name,
        timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.aporia_conn_id = aporia_conn_id
        self.timeout = timeout

    # ------------------------------------------------------------ the form

    # Airflow >= 3.2 builds the connection form from the provider info's `conn-fields` and `ui-field-behaviour`
    # and never calls these two; Airflow 3.1 calls them. Both read the same provider info, so the form is one.

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The form's extra fields for Airflow 3.1, from the provider info's `conn-fields`."""
        from wtforms import BooleanField, IntegerField, StringField
        from wtforms.validators import Optional

        kinds = {"string": StringField, "boolean": BooleanField, "number": IntegerField}
        return {
            name: kinds[field["schema"]["type"]](
                field["label"],
                validators=[Optional()],
                description=field["description"],
                default=field["schema"]["default"],
            )
            for name, field in _connection_type_info()["conn-fields"].items()
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The form's relabelled, hidden and hinted fields for Airflow 3.1, from the provider info."""
        behaviour: dict[str, Any] = _connection_type_info()["ui-field-behaviour"]
        return {key.replace("-", "_"): value for key, value in behaviour.items()}

    # ----------------------------------------------------------------- Aporia

    @cached_property
    def client(self) -> AporiaClient:
        conn = self._connection(self.aporia_conn_id, "Aporia")
        if not conn.password:
            raise AirflowFailException(
                f"Connection '{self.aporia_conn_id}' has no API token; store the Aporia token as its password."
            )
        mask_secret(conn.password)
        extra = conn.extra_dejson
        scheme, host, port = self._address(conn)
        return AporiaClient(
            base_url=f"{scheme}://{host}:{port}",
            token=conn.password,
            environment=extra.get("environment", "production"),
            verify_ssl=_as_bool(extra.get("verify_ssl", True)),
            timeout=float(extra.get("timeout", self.timeout)),
        )

    def ui_base_url(self) -> str:
        """Where people reach Aporia: the connection's scheme, host and port (a default port left out).
        Needs no token, so links and lineage can name Aporia without it."""
        scheme, host, port = self._address(self._connection(self.aporia_conn_id, "Aporia"))
        default = (scheme, port) in (("https", 443), ("http", 80))
        return f"{scheme}://{host}" if default else f"{scheme}://{host}:{port}"

    def _address(self, conn: Connection) -> tuple[str, str, int]:
        scheme = conn.schema or "https"
        if scheme not in ("http", "https"):
            raise AirflowFailException(
                f"Connection '{self.aporia_conn_id}' has scheme {scheme!r}; set its schema field to https or http."
            )
        host = conn.host or "app.aporia.com"
        return scheme, host, conn.port or (443 if scheme == "https" else 80)

    def test_connection(self) -> tuple[bool, str]:
        try:
            # One attempt: the UI's Test button should answer promptly.
            replace(self.client, max_attempts=1).request("test_connection", "GET", "/v1beta/capabilities/")
        except (AporiaError, AirflowException) as exc:
            return False, str(exc)
        return True, f"Connected to Aporia at {self.client.base_url}."

    def create_model(
        self,
        model_id: str,
        name: str,
        description: str | None = None,
        owner: str | None = None,
        color: str | None = None,
        icon: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> bool:
        """Create the model; returns False when it already exists (which is not an error).

        Color and icon default to the SDK's, ``blue`` and ``general``.
        """
        body = {
            "id": model_id,
            "name": name,
            "description": description,
            "owner": owner,
            "color": color or DEFAULT_MODEL_COLOR,
            "icon": icon or DEFAULT_MODEL_ICON,
            "tags": dict(tags) if tags else None,
        }
        answer = self.client.request("create_model", "POST", "/v1beta/models", json=body, ok=[409])
        created = not (isinstance(answer, Mapping) and "detail" in answer)
        self.log.info("Aporia model %s %s.", model_id, "created" if created else "already exists")
        return created

    def delete_model(self, model_id: str) -> None:
        self.client.request("delete_model", "DELETE", f"/v1beta/models/{quote(model_id, safe='')}")

    def create_model_version(
        self,
        model_id: str,
        model_version: str,
        model_type: str,
        features: Mapping[str, Any] | None = None,
        predictions: Mapping[str, Any] | None = None,
        raw_inputs: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
        feature_importance: Mapping[str, float] | None = None,
        mapping: Mapping[str, Any] | None = None,
        model_data_type: str | None = None,
    ) -> VersionSchema:
        """Check the schema locally (naming any bad field), then create the version in Aporia.

        ``model_data_type`` is sent only when given, as the SDK does (Aporia then decides).
        """
        schema = VersionSchema.parse(features, predictions, raw_inputs)
        body: dict[str, Any] = {
            "name": model_version,
            "model_type": check_model_type(model_type),
            "version_schema": schema.to_wire(),
            "labels": dict(labels) if labels else None,
            "feature_importance": dict(feature_importance) if feature_importance else None,
            "mapping": dict(mapping) if mapping else None,
        }
        if model_data_type:
            body["model_data_type"] = model_data_type
        self.client.request("create_model_version", "POST", self._versions_path(model_id), body)
        self.log.info("Aporia model %s version %s created.", model_id, model_version)
        return schema

    def get_model_version_schema(self, model_id: str, model_version: str) -> VersionSchema | None:
        """The version's schema, or None when the version does not exist."""
        try:
            data, _ = self.client.graphql(
                "modelVersionSchema",
                MODEL_VERSION_SCHEMA,
                {"modelId": model_id, "modelVersion": model_version},
            )
        except AporiaError as exc:
            if any(phrase in str(exc).lower() for phrase in _MISSING_VERSION_PHRASES):
                return None
            raise
        found = data.get("modelVersionSchema")
        if not found:
            return None
        groups: dict[str, dict[str, Any]] = {group: {} for group in FIELD_GROUPS}
        for group, name, spec in iter_version_schema(found):
            groups[group][name] = spec
        return VersionSchema.parse(groups["features"], groups["predictions"], groups["raw_inputs"])

    def connect_dataset(
        self,
        model_id: str,
        model_version: str,
        dataset: str,
        data_source: JDBCDataSource,
        id_column: str,
        timestamp_column: str,
        features: Mapping[str, str] | None = None,
        predictions: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        raw_inputs: Mapping[str, str] | None = None,
        schedule: str | None = None,
    ) -> None:
        """Connect a serving/training/testing/actuals data set; unmapped fields use same-named columns.

        Aporia checks the query against the database before it answers, so the call may take up to
        CONNECT_TIMEOUT (600 s, as in the SDK), or the connection's `timeout` if that is longer.
        """
        if dataset not in DATASET_NAMES:
            raise AirflowFailException(
                f"dataset {dataset!r} is not one of {', '.join(DATASET_NAMES)}; pick one of those."
            )
        sync: dict[str, Any] = {"enabled": True, "environment": self.client.environment}
        if schedule:
            sync["schedule"] = schedule
        body: dict[str, Any] = {
            "name": dataset,
            "data_source": data_source.serialize(),
            "sync": sync,
            "id_column": id_column,
            "timestamp_column": timestamp_column,
        }
        for key, value in (
            ("features", features),
            ("predictions", predictions),
            ("labels", labels),
            ("raw_inputs", raw_inputs),
        ):
            if value:
                body[key] = dict(value)
        patient = replace(self.client, timeout=max(self.client.timeout, CONNECT_TIMEOUT))
        patient.request("connect_dataset", "POST", self._version_path(model_id, model_version, "/datasets"), body)
        self.log.info("Aporia model %s version %s: %s data set connected.", model_id, model_version, dataset)

    def set_sync_enabled(self, model_id: str, model_version: str, enabled: bool) -> None:
        path = self._version_path(model_id, model_version, f"/datasets_sync?enabled={str(enabled).lower()}")
        self.client.request("set_sync_enabled", "POST", path, json={})

    def get_sync_status(self, model_id: str, model_version: str, dataset: str) -> dict[str, Any]:
        path = self._version_path(model_id, model_version, f"/sync_status/{quote(dataset, safe='')}")
        status: dict[str, Any] = self.client.request("get_sync_status", "GET", path)
        return status

    def log_fragments(
        self,
        model_id: str,
        model_version: str,
        fragments: Iterable[Mapping[str, Any]],
        batch_size: int = 5000,
        is_sync: bool = True,
    ) -> LogResult:
        """Deliver prediction, delayed-actual or raw-input fragments in batches."""
        return self.client.log_fragments(model_id, model_version, fragments, batch_size, is_sync)

    @staticmethod
    def _versions_path(model_id: str) -> str:
        return f"/v1beta/models/{quote(model_id, safe='')}/versions"

    def _version_path(self, model_id: str, model_version: str, suffix: str) -> str:
        return f"{self._versions_path(model_id)}/{quote(model_version, safe='')}{suffix}"

    def _connection(self, conn_id: str, kind: str) -> Connection:
        try:
            return self.get_connection(conn_id)
        except Exception as exc:
            raise AirflowFailException(
                f"The {kind} connection '{conn_id}' is not defined; create it in Airflow "
                f"(UI, CLI or an AIRFLOW_CONN_{conn_id.upper()} variable)."
            ) from exc


def _connection_type_info() -> dict[str, Any]:
    from aporia_provider import get_provider_info

    [info] = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == AporiaHook.conn_type]
    return info


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
