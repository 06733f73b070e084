"""RedshiftIAMHook: Redshift through IAM temporary credentials, for the provider's own reads and for Aporia."""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property, partial
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.redshift_sql import RedshiftSQLHook
from airflow.sdk.log import mask_secret

from aporia_provider.compat import AirflowException, AirflowFailException
from aporia_provider.redshift import DEFAULT_CURSOR_LIMIT_MB, JDBC_DRIVERS, RedshiftWarehouse, jdbc_driver
from aporia_provider.sync.unload import unload_read_policy

if TYPE_CHECKING:
    import redshift_connector
    from airflow.sdk import Connection

DEFAULT_CREDENTIAL_SECONDS = 900
# Temporary credentials are renewed when less than this remains, so a read never starts on a
# password about to lapse.
REFRESH_MARGIN = timedelta(minutes=2)
_IAM_USER_PREFIXES = ("IAM:", "IAMA:", "IAMR:")


class _AwsClients(AwsBaseHook):
    """The Amazon provider's AWS hook, naming the calling operator in its user agent without `inspect.stack()`,
    which reads the source lines of every frame on the stack: 0.1-0.3 s per client inside a task, most of a small
    sync's own time. Same answer: the class of the newest frame running `target_function_name`."""

    @staticmethod
    def _find_operator_class_name(target_function_name: str) -> str | None:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_name == target_function_name:
                return type(frame.f_locals["self"]).__name__
            frame = frame.f_back
        return None


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


class RedshiftIAMHook(RedshiftSQLHook):
    """
    Redshift with IAM temporary credentials: cached and renewed before they lapse, a redshift_connector
    session, Spark JDBC options, the IAM JDBC URL Aporia reads with, and the least-privilege policy.

    Builds on the Amazon provider's RedshiftSQLHook and reads the same connection: with extra `iam: true`
    it asks AWS for temporary credentials (`cluster_identifier`, or `is_serverless` with
    `serverless_work_group`); lifetimes from `iam_duration_seconds` (default 900) or, serverless,
    `serverless_token_duration_seconds`.

    :param redshift_conn_id: an Amazon Redshift connection.
    :param aws_conn_id: the AWS connection whose keys ask for the credentials.
    :param timeout: seconds to wait when opening a session.
    """

    def __init__(
        self,
        redshift_conn_id: str = RedshiftSQLHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        timeout: float = 60.0,
    ) -> None:
        super().__init__(redshift_conn_id=redshift_conn_id, aws_conn_id=aws_conn_id)
        self.redshift_conn_id = redshift_conn_id
        self.timeout = timeout
        self._credentials: RedshiftCredentials | None = None
        self._credentials_lock = threading.Lock()

    @cached_property
    def conn(self) -> Connection:
        try:
            return self.get_connection(self.redshift_conn_id)
        except Exception as exc:
            raise AirflowFailException(
                f"The Redshift connection '{self.redshift_conn_id}' is not defined; create it in Airflow "
                f"(UI, CLI or an AIRFLOW_CONN_{self.redshift_conn_id.upper()} variable)."
            ) from exc

    def get_iam_token(self, conn: Connection) -> tuple[str, str, int]:
        """The Amazon provider's entry point for IAM logins, answered from the cached credentials."""
        creds = self.get_credentials()
        return creds.user, creds.password, creds.port

    def get_credentials(self) -> RedshiftCredentials:
        """Credentials for the provider's own reads: cached, and renewed shortly before they expire."""
        with self._credentials_lock:
            if self._credentials is None or not self._credentials.fresh():
                self._credentials = self._fetch_credentials()
            return self._credentials

    def _fetch_credentials(self) -> RedshiftCredentials:
        conn = self.conn
        extra = conn.extra_dejson
        if not conn.host or not conn.schema:
            raise AirflowFailException(
                f"Connection '{self.redshift_conn_id}' needs a host and a database (schema field); set both."
            )
        expires_at: datetime | None = None
        if _as_bool(extra.get("iam", False)):
            if _as_bool(extra.get("is_serverless", False)):
                # The Amazon provider's name for the serverless lifetime; iam_duration_seconds serves both.
                duration = int(
                    extra.get("serverless_token_duration_seconds")
                    or extra.get("iam_duration_seconds", DEFAULT_CREDENTIAL_SECONDS)
                )
                user, password, expires_at = self._serverless_credentials(conn.schema, extra, duration)
            else:
                duration = int(extra.get("iam_duration_seconds", DEFAULT_CREDENTIAL_SECONDS))
                user, password, expires_at = self._cluster_credentials(conn, duration)
            mask_secret(password)
            self.log.info("Obtained Redshift credentials for %s, valid until %s.", user, expires_at.isoformat())
        elif conn.login and conn.password:
            user, password = conn.login, conn.password
        else:
            raise AirflowFailException(
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
        extra = conn.extra_dejson
        cluster = self.cluster_identifier
        db_user = self.db_user
        if not db_user:
            raise AirflowFailException(
                f"Connection '{self.redshift_conn_id}' has no database user; set its login to the Redshift user "
                "that GetClusterCredentials should issue credentials for."
            )
        client = _AwsClients(aws_conn_id=self.aws_conn_id, client_type="redshift").conn
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
        workgroup = extra.get("serverless_work_group")
        if not workgroup:
            raise AirflowFailException(
                f"Connection '{self.redshift_conn_id}' is serverless but has no serverless_work_group; "
                "set that extra to the workgroup name."
            )
        client = _AwsClients(aws_conn_id=self.aws_conn_id, client_type="redshift-serverless").conn
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
            raise AirflowFailException(
                f"AWS connection '{self.aws_conn_id}' yields no access key; {action} for Redshift connection "
                f"'{self.redshift_conn_id}' needs an access key id (login) and secret key (password)."
            ) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise AirflowException(
                f"AWS refused {action} for {target} ({error.get('Code')}: {error.get('Message')}); grant the user "
                f"of AWS connection '{self.aws_conn_id}' the policy RedshiftIAMHook.iam_policy() renders, and check "
                f"Redshift connection '{self.redshift_conn_id}'."
            ) from None

    @property
    def cluster_identifier(self) -> str:
        """Extra `cluster_identifier`, else the host's first label (as the Amazon provider reads it)."""
        return self.conn.extra_dejson.get("cluster_identifier") or (self.conn.host or "").split(".", 1)[0]

    @property
    def db_user(self) -> str:
        """The DbUser to ask credentials for. A login saved as the issued `IAM:` name is stripped back,
        since asking for `IAM:alice` would yield `IAM:IAM:alice` (apache/airflow#64985)."""
        login = self.conn.login or ""
        for prefix in _IAM_USER_PREFIXES:
            if login.startswith(prefix):
                return login[len(prefix) :]
        return login

    # The parent's get_conn is wrapped in its own retry decorator; ours answers from cached credentials.
    def get_conn(self) -> redshift_connector.Connection:  # type: ignore[override]
        """A redshift_connector session with the hook's credentials. IAM is done here, not by the driver,
        so the driver never falls back to its own AWS credential chain."""
        import redshift_connector

        creds = self.get_credentials()
        try:
            connection = redshift_connector.connect(
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
        # The driver keeps its timeout on the socket for every later read, so a query queued or running longer
        # would fail; the timeout is for opening the session only.
        sock = getattr(connection, "_usock", None)
        if sock is not None:
            sock.settimeout(None)
        return connection

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
        creds = self.get_credentials()
        # Spark would report a refused connection as a JVM stack; say it plainly before Spark starts reading.
        try:
            socket.create_connection((creds.host, creds.port), timeout=min(self.timeout, 10)).close()
        except OSError:
            raise self._unreachable(creds) from None
        if jdbc_driver(driver) == "redshift":
            url = f"jdbc:redshift://{creds.host}:{creds.port}/{creds.database}?ssl={str(creds.ssl).lower()}"
        else:
            sslmode = "require" if creds.ssl else "disable"
            url = f"jdbc:postgresql://{creds.host}:{creds.port}/{creds.database}?sslmode={sslmode}"
        driver_class = JDBC_DRIVERS[driver]
        return {"url": url, "user": creds.user, "password": creds.password, "driver": driver_class}

    def warehouse(self, driver: str = "postgresql", statement_timeout: timedelta | None = None) -> RedshiftWarehouse:
        """Redshift for the sync engine: sessions and Spark's JDBC options (with `driver`) on this hook's
        credentials, statements cancelled after `statement_timeout`, and the lineage namespace of the Amazon
        provider."""
        jdbc_driver(driver)
        return RedshiftWarehouse(
            open_connection=self.get_conn,
            spark_options=partial(self.spark_jdbc_options, driver),
            namespace=lambda: f"redshift://{self.get_openlineage_database_info(self.conn).authority}",
            database=self.conn.schema or "",
            statement_timeout=statement_timeout,
            cursor_limit_mb=float(self.conn.extra_dejson.get("cursor_result_limit_mb", DEFAULT_CURSOR_LIMIT_MB)),
        )

    def iam_jdbc_url(self) -> str:
        """The JDBC URL Aporia uses to read Redshift with IAM, built from the AWS and Redshift connections.

        It carries the AWS secret key, which is registered with Airflow's secret masker.
        """
        conn = self.conn
        if not conn.host or not conn.schema:
            raise AirflowFailException(
                f"Connection '{self.redshift_conn_id}' needs a host and a database (schema field) to build the "
                "Aporia JDBC URL; set both."
            )
        session_credentials = (
            _AwsClients(aws_conn_id=self.aws_conn_id, client_type="sts").get_session().get_credentials()
        )
        aws = session_credentials.get_frozen_credentials() if session_credentials else None
        if aws is None or not aws.access_key or not aws.secret_key:
            raise AirflowFailException(
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

    def iam_policy(self, unload_s3_prefix: str | None = None) -> dict[str, Any]:
        """The least-privilege policy that lets the AWS connection's user obtain these credentials and, with an UNLOAD
        prefix (`unload_s3_prefix`, else the connection's extra of that name), read and delete what Redshift
        unloads under it."""
        conn = self.conn
        extra = conn.extra_dejson
        if _as_bool(extra.get("is_serverless", False)):
            client = _AwsClients(aws_conn_id=self.aws_conn_id, client_type="redshift-serverless").conn
            workgroup = client.get_workgroup(workgroupName=extra.get("serverless_work_group"))["workgroup"]
            statement = {
                "Effect": "Allow",
                "Action": "redshift-serverless:GetCredentials",
                "Resource": workgroup["workgroupArn"],
            }
        else:
            aws = _AwsClients(aws_conn_id=self.aws_conn_id, client_type="redshift")
            cluster = self.cluster_identifier
            region = aws.region_name or "*"
            # AutoCreate makes GetClusterCredentials create the database user, which needs its own action.
            auto_create = _as_bool(extra.get("auto_create", False))
            statement = {
                "Effect": "Allow",
                "Action": ["redshift:GetClusterCredentials", "redshift:CreateClusterUser"]
                if auto_create
                else "redshift:GetClusterCredentials",
                "Resource": f"arn:aws:redshift:{region}:{aws.account_id}:dbuser:{cluster}/{self.db_user}",
            }
        prefix = unload_s3_prefix or extra.get("unload_s3_prefix")
        if not prefix:
            return {"Version": "2012-10-17", "Statement": statement}
        return {"Version": "2012-10-17", "Statement": [statement, *unload_read_policy(prefix)]}


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
