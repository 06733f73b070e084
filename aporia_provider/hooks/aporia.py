"""AporiaHook: the one door to the Aporia API and to Redshift through IAM."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException
from airflow.sdk.log import mask_secret

from aporia_provider.client import (
    MODEL_VERSION_SCHEMA,
    AporiaClient,
    AporiaError,
    LogResult,
    iter_version_schema,
)
from aporia_provider.datasources import JDBCDataSource
from aporia_provider.schema import VersionSchema, check_model_type

if TYPE_CHECKING:
    import redshift_connector
    from airflow.sdk import Connection

DATASET_NAMES = ("serving", "training", "testing", "actuals")
DEFAULT_CREDENTIAL_SECONDS = 900
# Temporary credentials are renewed when less than this remains, so a read never starts on a
# password about to lapse.
REFRESH_MARGIN = timedelta(minutes=2)
_IAM_USER_PREFIXES = ("IAM:", "IAMA:", "IAMR:")
# How Aporia says, in a GraphQL error, that the model or version is not there.
_MISSING_VERSION_PHRASES = ("not found", "does not exist", "has no version")


@dataclass(frozen=True)
class RedshiftCredentials:
    """Where and as whom to open a Redshift session; `expires_at` is None for static passwords."""

    host: str
    port: int
    database: str
    user: str
    password: str
    ssl: bool
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        return f"RedshiftCredentials(user={self.user!r}, host={self.host!r}, expires_at={self.expires_at})"

    def fresh(self, now: datetime | None = None) -> bool:
        return self.expires_at is None or (now or datetime.now(timezone.utc)) + REFRESH_MARGIN < self.expires_at


class AporiaHook(BaseHook):
    """
    Talks to Aporia (REST and GraphQL) and to Redshift with IAM temporary credentials.

    :param aporia_conn_id: an `aporia` connection: host, port, scheme (http/https), the API token as
        password, and extras `environment`, `verify_ssl` and `timeout` (seconds per call).
    :param redshift_conn_id: an Amazon Redshift connection; with extra `iam: true` the hook asks AWS for
        temporary credentials (`cluster_identifier`, or `is_serverless` with `serverless_work_group`).
    :param aws_conn_id: the AWS connection whose keys ask for those credentials.
    :param timeout: seconds to wait for any one Aporia call, unless the connection's `timeout` extra says.
    """

    conn_name_attr = "aporia_conn_id"
    default_conn_name = "aporia_default"
    conn_type = "aporia"
    hook_name = "Aporia"

    def __init__(
        self,
        aporia_conn_id: str = default_conn_name,
        redshift_conn_id: str = "redshift_default",
        aws_conn_id: str | None = "aws_default",
        timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.aporia_conn_id = aporia_conn_id
        self.redshift_conn_id = redshift_conn_id
        self.aws_conn_id = aws_conn_id
        self.timeout = timeout
        self._credentials: RedshiftCredentials | None = None
        self._credentials_lock = threading.Lock()

    # ----------------------------------------------------------------- Aporia

    @cached_property
    def client(self) -> AporiaClient:
        conn = self._connection(self.aporia_conn_id, "Aporia")
        if not conn.password:
            raise AirflowException(
                f"Connection '{self.aporia_conn_id}' has no API token; store the Aporia token as its password."
            )
        mask_secret(conn.password)
        extra = conn.extra_dejson
        scheme = conn.schema or "https"
        if scheme not in ("http", "https"):
            raise AirflowException(
                f"Connection '{self.aporia_conn_id}' has scheme {scheme!r}; set its schema field to https or http."
            )
        host = conn.host or "app.aporia.com"
        port = conn.port or (443 if scheme == "https" else 80)
        return AporiaClient(
            base_url=f"{scheme}://{host}:{port}",
            token=conn.password,
            environment=extra.get("environment", "production"),
            verify_ssl=_as_bool(extra.get("verify_ssl", True)),
            timeout=float(extra.get("timeout", self.timeout)),
        )

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
        """Create the model; returns False when it already exists (which is not an error)."""
        body = {
            "id": model_id,
            "name": name,
            "description": description,
            "owner": owner,
            "color": color,
            "icon": icon,
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
        model_data_type: str = "tabular",
    ) -> VersionSchema:
        """Check the schema locally (naming any bad field), then create the version in Aporia."""
        schema = VersionSchema.parse(features, predictions, raw_inputs)
        body = {
            "name": model_version,
            "model_type": check_model_type(model_type),
            "version_schema": schema.to_wire(),
            "model_data_type": model_data_type,
            "labels": dict(labels) if labels else None,
            "feature_importance": dict(feature_importance) if feature_importance else None,
            "mapping": dict(mapping) if mapping else None,
        }
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
        groups: dict[str, dict[str, Any]] = {"features": {}, "predictions": {}, "raw_inputs": {}}
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
        """Connect a serving/training/testing/actuals data set; unmapped fields use same-named columns."""
        if dataset not in DATASET_NAMES:
            raise AirflowException(f"dataset {dataset!r} is not one of {', '.join(DATASET_NAMES)}; pick one of those.")
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
        self.client.request("connect_dataset", "POST", self._version_path(model_id, model_version, "/datasets"), body)
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

    # ----------------------------------------------------------------- Redshift

    @cached_property
    def redshift_connection(self) -> Connection:
        return self._connection(self.redshift_conn_id, "Redshift")

    def get_redshift_credentials(self) -> RedshiftCredentials:
        """Credentials for the provider's own reads: cached, and renewed shortly before they expire."""
        with self._credentials_lock:
            if self._credentials is None or not self._credentials.fresh():
                self._credentials = self._fetch_redshift_credentials()
            return self._credentials

    def _fetch_redshift_credentials(self) -> RedshiftCredentials:
        conn = self.redshift_connection
        extra = conn.extra_dejson
        if not conn.host or not conn.schema:
            raise AirflowException(
                f"Connection '{self.redshift_conn_id}' needs a host and a database (schema field); set both."
            )
        expires_at: datetime | None = None
        if _as_bool(extra.get("iam", False)):
            duration = int(extra.get("iam_duration_seconds", DEFAULT_CREDENTIAL_SECONDS))
            if _as_bool(extra.get("is_serverless", False)):
                user, password, expires_at = self._serverless_credentials(conn.schema, extra, duration)
            else:
                user, password, expires_at = self._cluster_credentials(conn, duration)
            mask_secret(password)
            self.log.info("Obtained Redshift credentials for %s, valid until %s.", user, expires_at.isoformat())
        elif conn.login and conn.password:
            user, password = conn.login, conn.password
        else:
            raise AirflowException(
                f"Connection '{self.redshift_conn_id}' has neither iam: true nor a login and password; "
                "set extra iam to true (recommended) or give a user and password."
            )
        return RedshiftCredentials(
            host=conn.host,
            port=conn.port or 5439,
            database=conn.schema,
            user=user,
            password=password,
            ssl=_as_bool(extra.get("ssl", True)),
            expires_at=expires_at,
        )

    def _cluster_credentials(self, conn: Connection, duration: int) -> tuple[str, str, datetime]:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        extra = conn.extra_dejson
        cluster = extra.get("cluster_identifier") or (conn.host or "").split(".", 1)[0]
        db_user = self.db_user
        if not db_user:
            raise AirflowException(
                f"Connection '{self.redshift_conn_id}' has no database user; set its login to the Redshift user "
                "that GetClusterCredentials should issue credentials for."
            )
        client = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="redshift").conn
        with _botocore_quiet(), self._aws_refusal("GetClusterCredentials", f"DbUser {db_user} on cluster {cluster}"):
            answer = client.get_cluster_credentials(
                DbUser=db_user,
                DbName=conn.schema,
                ClusterIdentifier=cluster,
                DurationSeconds=duration,
                AutoCreate=_as_bool(extra.get("auto_create", False)),
            )
        return answer["DbUser"], answer["DbPassword"], _utc(answer["Expiration"])

    def _serverless_credentials(
        self, database: str, extra: Mapping[str, Any], duration: int
    ) -> tuple[str, str, datetime]:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        workgroup = extra.get("serverless_work_group")
        if not workgroup:
            raise AirflowException(
                f"Connection '{self.redshift_conn_id}' is serverless but has no serverless_work_group; "
                "set that extra to the workgroup name."
            )
        client = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="redshift-serverless").conn
        with _botocore_quiet(), self._aws_refusal("GetCredentials", f"workgroup {workgroup}"):
            answer = client.get_credentials(dbName=database, workgroupName=workgroup, durationSeconds=duration)
        return answer["dbUser"], answer["dbPassword"], _utc(answer["expiration"])

    @contextmanager
    def _aws_refusal(self, action: str, target: str) -> Iterator[None]:
        """Turn AWS's refusal into one sentence naming the connection and the fix."""
        from botocore.exceptions import ClientError, NoCredentialsError

        try:
            yield
        except NoCredentialsError:
            raise AirflowException(
                f"AWS connection '{self.aws_conn_id}' yields no access key; {action} for Redshift connection "
                f"'{self.redshift_conn_id}' needs an access key id (login) and secret key (password)."
            ) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise AirflowException(
                f"AWS refused {action} for {target} ({error.get('Code')}: {error.get('Message')}); grant the user "
                f"of AWS connection '{self.aws_conn_id}' the policy AporiaHook.iam_policy() renders, and check "
                f"Redshift connection '{self.redshift_conn_id}'."
            ) from None

    @property
    def db_user(self) -> str:
        """The DbUser to ask credentials for. A login saved as the issued `IAM:` name is stripped back,
        since asking for `IAM:alice` would yield `IAM:IAM:alice` (apache/airflow#64985)."""
        login = self.redshift_connection.login or ""
        for prefix in _IAM_USER_PREFIXES:
            if login.startswith(prefix):
                return login[len(prefix) :]
        return login

    def get_redshift_conn(self) -> redshift_connector.Connection:
        """A redshift_connector session with the hook's credentials. IAM is done here, not by the driver,
        so the driver never falls back to its own AWS credential chain."""
        import redshift_connector

        creds = self.get_redshift_credentials()
        try:
            return redshift_connector.connect(
                host=creds.host,
                port=creds.port,
                database=creds.database,
                user=creds.user,
                password=creds.password,
                ssl=creds.ssl,
                sslmode="verify-full" if creds.ssl else "disable",
                timeout=int(self.timeout),
            )
        except redshift_connector.InterfaceError as exc:
            if isinstance(exc.__cause__, OSError) or any(isinstance(a, OSError) for a in exc.args):
                raise self._unreachable(creds) from None
            raise

    def _unreachable(self, creds: RedshiftCredentials) -> AirflowException:
        return AirflowException(
            f"Cannot reach Redshift at {creds.host}:{creds.port} (connection '{self.redshift_conn_id}'); check that "
            "Redshift is up and that the connection's host and port are right."
        )

    def spark_jdbc_options(self, driver: str = "postgresql") -> dict[str, str]:
        """Spark JDBC options for the provider's own reads with the temporary credentials.

        The PostgreSQL JDBC driver (which Redshift accepts) is the default; pass driver="redshift" when
        the Amazon Redshift JDBC driver is on Spark's class path.
        """
        creds = self.get_redshift_credentials()
        # Spark would report a refused connection as a JVM stack; say it plainly before Spark starts reading.
        try:
            socket.create_connection((creds.host, creds.port), timeout=min(self.timeout, 10)).close()
        except OSError:
            raise self._unreachable(creds) from None
        if driver == "redshift":
            url = f"jdbc:redshift://{creds.host}:{creds.port}/{creds.database}?ssl={str(creds.ssl).lower()}"
            driver_class = "com.amazon.redshift.jdbc42.Driver"
        elif driver == "postgresql":
            sslmode = "require" if creds.ssl else "disable"
            url = f"jdbc:postgresql://{creds.host}:{creds.port}/{creds.database}?sslmode={sslmode}"
            driver_class = "org.postgresql.Driver"
        else:
            raise AirflowException(f"JDBC driver {driver!r} is not supported; use 'postgresql' or 'redshift'.")
        return {"url": url, "user": creds.user, "password": creds.password, "driver": driver_class}

    def redshift_iam_jdbc_url(self) -> str:
        """The JDBC URL Aporia uses to read Redshift with IAM, built from the AWS and Redshift connections.

        It carries the AWS secret key, which is registered with Airflow's secret masker.
        """
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        conn = self.redshift_connection
        if not conn.host or not conn.schema:
            raise AirflowException(
                f"Connection '{self.redshift_conn_id}' needs a host and a database (schema field) to build the "
                "Aporia JDBC URL; set both."
            )
        session_credentials = (
            AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="sts").get_session().get_credentials()
        )
        aws = session_credentials.get_frozen_credentials() if session_credentials else None
        if aws is None or not aws.access_key or not aws.secret_key:
            raise AirflowException(
                f"AWS connection '{self.aws_conn_id}' yields no access key; Aporia's IAM JDBC URL needs an access "
                "key id (login) and secret key (password)."
            )
        mask_secret(aws.secret_key)
        mask_secret(quote(aws.secret_key, safe=""))
        query = urlencode(
            {
                "AccessKeyID": aws.access_key,
                "SecretAccessKey": aws.secret_key,
                "DbUser": self.db_user,
                "ssl": "true",
                "tcpKeepAlive": "true",
            }
        )
        url = f"jdbc:redshift:iam://{conn.host}:{conn.port or 5439}/{conn.schema}?{query}"
        mask_secret(url)
        return url

    def iam_policy(self) -> dict[str, Any]:
        """The least-privilege policy that lets the AWS connection's user obtain these credentials."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        conn = self.redshift_connection
        extra = conn.extra_dejson
        if _as_bool(extra.get("is_serverless", False)):
            client = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="redshift-serverless").conn
            workgroup = client.get_workgroup(workgroupName=extra.get("serverless_work_group"))["workgroup"]
            statement = {
                "Effect": "Allow",
                "Action": "redshift-serverless:GetCredentials",
                "Resource": workgroup["workgroupArn"],
            }
        else:
            aws = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="redshift")
            cluster = extra.get("cluster_identifier") or (conn.host or "").split(".", 1)[0]
            region = aws.region_name or "*"
            statement = {
                "Effect": "Allow",
                "Action": "redshift:GetClusterCredentials",
                "Resource": f"arn:aws:redshift:{region}:{aws.account_id}:dbuser:{cluster}/{self.db_user}",
            }
        return {"Version": "2012-10-17", "Statement": statement}

    def _connection(self, conn_id: str, kind: str) -> Connection:
        try:
            return self.get_connection(conn_id)
        except Exception as exc:
            raise AirflowException(
                f"The {kind} connection '{conn_id}' is not defined; create it in Airflow "
                f"(UI, CLI or an AIRFLOW_CONN_{conn_id.upper()} variable)."
            ) from exc


@contextmanager
def _botocore_quiet() -> Iterator[None]:
    """At DEBUG, botocore logs whole response bodies, temporary passwords included: hold it at INFO."""
    logger = logging.getLogger("botocore")
    level = logger.level
    logger.setLevel(max(level, logging.INFO))
    try:
        yield
    finally:
        logger.setLevel(level)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _utc(moment: datetime | float) -> datetime:
    if isinstance(moment, int | float):
        return datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc)
