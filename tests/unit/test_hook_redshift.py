"""RedshiftIAMHook without AWS or Redshift: static and (faked) IAM credentials, renewal, URLs, and messages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.redshift_sql import RedshiftSQLHook
from botocore.exceptions import ClientError, NoCredentialsError

from aporia_provider.compat import AirflowException, AirflowFailException
from aporia_provider.exceptions import SyncInputError
from aporia_provider.hooks.redshift import (
    DEFAULT_CREDENTIAL_SECONDS,
    REFRESH_MARGIN,
    RedshiftCredentials,
    RedshiftIAMHook,
)
from tests.unit.conftest import ConnectionFactory

UTC = timezone.utc
CLUSTER_HOST = "examplecluster.abc123.us-west-2.redshift.amazonaws.com"


def static(connection: ConnectionFactory, conn_id: str = "rs", **changes: Any) -> RedshiftIAMHook:
    fields: dict[str, Any] = {
        "conn_type": "redshift",
        "host": "127.0.0.1",
        "schema": "dev",
        "login": "alice",
        "password": "static-pass-1",
        "port": 5439,
    }
    connection(conn_id, **{k: v for k, v in (fields | changes).items() if v is not None})
    return RedshiftIAMHook(redshift_conn_id=conn_id, aws_conn_id="aws_unit", timeout=5)


class FakeAws:
    """Stands in for boto3 clients: records calls, answers or raises what the test says."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers: list[Any] = []

    def _answer(self, name: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append((name, kwargs))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get_cluster_credentials(self, **kwargs: Any) -> Any:
        return self._answer("get_cluster_credentials", kwargs)

    def get_credentials(self, **kwargs: Any) -> Any:
        return self._answer("get_credentials", kwargs)

    def get_workgroup(self, **kwargs: Any) -> Any:
        return self._answer("get_workgroup", kwargs)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, connection: ConnectionFactory) -> Iterator[dict[str, FakeAws]]:
    """Fake AWS clients by client type; the AWS connection has static keys and a region, and no AWS is called."""
    fakes = {"redshift": FakeAws(), "redshift-serverless": FakeAws()}
    monkeypatch.setattr(AwsBaseHook, "conn", property(lambda self: fakes[self.client_type]))
    monkeypatch.setattr(AwsBaseHook, "account_id", property(lambda self: "123456789012"))
    connection(
        "aws_unit",
        conn_type="aws",
        login="AKIAUNITTEST",
        password="unit/secret+key=",
        extra={"region_name": "us-west-2"},
    )
    yield fakes


def iam(connection: ConnectionFactory, login: str | None = "IAM:alice", **extra: Any) -> RedshiftIAMHook:
    fields: dict[str, Any] = {
        "conn_type": "redshift",
        "host": CLUSTER_HOST,
        "schema": "dev",
        "extra": {"iam": True} | extra,
    }
    if login is not None:
        fields["login"] = login
    connection("rs_iam", **fields)
    return RedshiftIAMHook(redshift_conn_id="rs_iam", aws_conn_id="aws_unit")


# ----------------------------------------------------------------------------------------------- static credentials


def test_is_the_amazon_providers_redshift_hook() -> None:
    assert issubclass(RedshiftIAMHook, RedshiftSQLHook)
    hook = RedshiftIAMHook()
    assert (hook.redshift_conn_id, hook.aws_conn_id, hook.timeout) == ("redshift_default", "aws_default", 60.0)


def test_static_credentials(connection: ConnectionFactory) -> None:
    hook = static(connection)
    creds = hook.get_credentials()
    assert creds == RedshiftCredentials(
        host="127.0.0.1", port=5439, database="dev", user="alice", password="static-pass-1", ssl=True, expires_at=None
    )
    assert creds.fresh()
    assert hook.get_credentials() is creds


def test_static_credentials_default_port_and_ssl_extra(connection: ConnectionFactory) -> None:
    creds = static(connection, port=None, extra={"ssl": "false"}).get_credentials()
    assert (creds.port, creds.ssl) == (5439, False)


def test_get_iam_token_answers_from_the_credentials(connection: ConnectionFactory) -> None:
    hook = static(connection, port=5440)
    assert hook.get_iam_token(hook.conn) == ("alice", "static-pass-1", 5440)


def test_credentials_repr_hides_the_password() -> None:
    creds = RedshiftCredentials("h.example", 5439, "dev", "alice", "very-secret-pw", True)
    assert repr(creds) == "RedshiftCredentials(user='alice', host='h.example', expires_at=None)"
    assert "very-secret-pw" not in repr(creds) and "very-secret-pw" not in str(creds)


def test_fresh_keeps_the_refresh_margin() -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert REFRESH_MARGIN == timedelta(minutes=2)

    def expiring(at: datetime) -> RedshiftCredentials:
        return RedshiftCredentials("h", 5439, "dev", "u", "p", True, expires_at=at)

    assert expiring(now + REFRESH_MARGIN + timedelta(seconds=1)).fresh(now)
    assert not expiring(now + REFRESH_MARGIN).fresh(now)
    assert not expiring(now + timedelta(minutes=1)).fresh(now)
    assert not expiring(now - timedelta(hours=1)).fresh(now)
    assert expiring(datetime.now(UTC) + timedelta(hours=1)).fresh()


@pytest.mark.parametrize("missing", ["host", "schema"])
def test_a_connection_without_host_or_database(connection: ConnectionFactory, missing: str) -> None:
    hook = static(connection, **{missing: None})
    with pytest.raises(AirflowFailException) as raised:
        hook.get_credentials()
    assert str(raised.value) == "Connection 'rs' needs a host and a database (schema field); set both."


@pytest.mark.parametrize("changes", [{"password": None}, {"login": None}, {"login": None, "password": None}])
def test_neither_iam_nor_login_and_password(connection: ConnectionFactory, changes: dict[str, Any]) -> None:
    hook = static(connection, **changes)
    with pytest.raises(AirflowFailException) as raised:
        hook.get_credentials()
    assert str(raised.value) == (
        "Connection 'rs' has neither iam: true nor a login and password; "
        "set extra iam to true (recommended) or give a user and password."
    )


def test_a_missing_connection() -> None:
    hook = RedshiftIAMHook(redshift_conn_id="rs_missing")
    with pytest.raises(AirflowFailException) as raised:
        hook.get_credentials()
    assert str(raised.value) == (
        "The Redshift connection 'rs_missing' is not defined; create it in Airflow "
        "(UI, CLI or an AIRFLOW_CONN_RS_MISSING variable)."
    )


@pytest.mark.parametrize(
    ("login", "db_user"),
    [("IAM:alice", "alice"), ("IAMA:alice", "alice"), ("IAMR:etl_role", "etl_role"), ("alice", "alice"), (None, "")],
)
def test_db_user_strips_issued_prefixes(connection: ConnectionFactory, login: str | None, db_user: str) -> None:
    assert static(connection, login=login).db_user == db_user


# ----------------------------------------------------------------------------------------------- sessions and JDBC


def test_spark_jdbc_options_postgresql(connection: ConnectionFactory, listening_port: int) -> None:
    hook = static(connection, port=listening_port)
    assert hook.spark_jdbc_options() == {
        "url": f"jdbc:postgresql://127.0.0.1:{listening_port}/dev?sslmode=require",
        "user": "alice",
        "password": "static-pass-1",
        "driver": "org.postgresql.Driver",
    }


def test_spark_jdbc_options_without_ssl(connection: ConnectionFactory, listening_port: int) -> None:
    hook = static(connection, port=listening_port, extra={"ssl": False})
    assert (
        hook.spark_jdbc_options("postgresql")["url"]
        == f"jdbc:postgresql://127.0.0.1:{listening_port}/dev?sslmode=disable"
    )
    assert hook.spark_jdbc_options("redshift") == {
        "url": f"jdbc:redshift://127.0.0.1:{listening_port}/dev?ssl=false",
        "user": "alice",
        "password": "static-pass-1",
        "driver": "com.amazon.redshift.jdbc42.Driver",
    }


def test_spark_jdbc_options_redshift_driver_with_ssl(connection: ConnectionFactory, listening_port: int) -> None:
    url = static(connection, port=listening_port).spark_jdbc_options("redshift")["url"]
    assert url == f"jdbc:redshift://127.0.0.1:{listening_port}/dev?ssl=true"


def test_spark_jdbc_options_unknown_driver(connection: ConnectionFactory, listening_port: int) -> None:
    with pytest.raises(SyncInputError) as raised:
        static(connection, port=listening_port).spark_jdbc_options("mysql")
    assert str(raised.value) == "jdbc_driver 'mysql' is not supported; use 'postgresql' or 'redshift'."


def unreachable(port: int) -> str:
    return (
        f"Cannot reach Redshift at 127.0.0.1:{port} (connection 'rs'); check that Redshift is up and that the "
        "connection's host and port are right."
    )


def test_spark_jdbc_options_on_an_unreachable_redshift(connection: ConnectionFactory, closed_port: int) -> None:
    with pytest.raises(AirflowException) as raised:
        static(connection, port=closed_port).spark_jdbc_options()
    assert str(raised.value) == unreachable(closed_port)


def test_get_conn_on_an_unreachable_redshift(connection: ConnectionFactory, closed_port: int) -> None:
    with pytest.raises(AirflowException) as raised:
        static(connection, port=closed_port).get_conn()
    assert str(raised.value) == unreachable(closed_port)
    assert raised.value.__suppress_context__


def test_iam_jdbc_url(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    url = iam(connection, login="IAMA:alice").iam_jdbc_url()
    assert url == (
        f"jdbc:redshift:iam://{CLUSTER_HOST}:5439/dev?AccessKeyID=AKIAUNITTEST&SecretAccessKey=unit%2Fsecret%2Bkey%3D"
        "&DbUser=alice&ssl=true&tcpKeepAlive=true"
    )
    assert parse_qs(urlsplit(url.removeprefix("jdbc:")).query)["SecretAccessKey"] == ["unit/secret+key="]
    assert aws["redshift"].calls == [] and aws["redshift-serverless"].calls == []


def test_iam_jdbc_url_without_host(connection: ConnectionFactory) -> None:
    connection("rs_nohost", conn_type="redshift", schema="dev", login="alice", extra={"iam": True})
    with pytest.raises(AirflowFailException) as raised:
        RedshiftIAMHook(redshift_conn_id="rs_nohost").iam_jdbc_url()
    assert str(raised.value) == (
        "Connection 'rs_nohost' needs a host and a database (schema field) to build the Aporia JDBC URL; set both."
    )


class _NoCredentialsSession:
    def get_credentials(self) -> None:
        return None


def test_iam_jdbc_url_without_aws_keys(
    connection: ConnectionFactory, aws: dict[str, FakeAws], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AwsBaseHook, "get_session", lambda self, *args, **kwargs: _NoCredentialsSession())
    with pytest.raises(AirflowFailException) as raised:
        iam(connection).iam_jdbc_url()
    assert str(raised.value) == (
        "AWS connection 'aws_unit' yields no access key; Aporia's IAM JDBC URL needs an access key id (login) and "
        "secret key (password)."
    )


# ----------------------------------------------------------------------------------------------- IAM (faked AWS)


def cluster_answer(expires_in: timedelta, password: str = "temp-pass-1") -> dict[str, Any]:
    return {"DbUser": "IAM:alice", "DbPassword": password, "Expiration": datetime.now(UTC) + expires_in}


def test_cluster_credentials(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    answer = cluster_answer(timedelta(minutes=15))
    aws["redshift"].answers = [answer]
    creds = iam(connection).get_credentials()
    assert aws["redshift"].calls == [
        (
            "get_cluster_credentials",
            {
                "DbUser": "alice",
                "DbName": "dev",
                "ClusterIdentifier": "examplecluster",
                "DurationSeconds": DEFAULT_CREDENTIAL_SECONDS,
                "AutoCreate": False,
            },
        )
    ]
    assert creds == RedshiftCredentials(
        host=CLUSTER_HOST,
        port=5439,
        database="dev",
        user="IAM:alice",
        password="temp-pass-1",
        ssl=True,
        expires_at=answer["Expiration"],
    )


def test_cluster_credentials_extras(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    aws["redshift"].answers = [cluster_answer(timedelta(hours=1))]
    iam(
        connection, cluster_identifier="other-cluster", iam_duration_seconds="1800", auto_create="true"
    ).get_credentials()
    [(_, kwargs)] = aws["redshift"].calls
    assert (kwargs["ClusterIdentifier"], kwargs["DurationSeconds"], kwargs["AutoCreate"]) == (
        "other-cluster",
        1800,
        True,
    )


def test_cluster_credentials_expiration_as_epoch_seconds(
    connection: ConnectionFactory, aws: dict[str, FakeAws]
) -> None:
    aws["redshift"].answers = [{"DbUser": "IAM:alice", "DbPassword": "temp-pass-1", "Expiration": 4_000_000_000}]
    creds = iam(connection).get_credentials()
    assert creds.expires_at == datetime.fromtimestamp(4_000_000_000, UTC)


def test_cached_until_the_refresh_margin(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    aws["redshift"].answers = [cluster_answer(timedelta(minutes=15))]
    hook = iam(connection)
    first = hook.get_credentials()
    assert hook.get_credentials() is first
    assert len(aws["redshift"].calls) == 1


def test_renewed_inside_the_refresh_margin(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    aws["redshift"].answers = [
        cluster_answer(REFRESH_MARGIN - timedelta(seconds=30), "about-to-lapse"),
        cluster_answer(timedelta(minutes=15), "renewed-pass"),
    ]
    hook = iam(connection)
    assert hook.get_credentials().password == "about-to-lapse"
    assert hook.get_credentials().password == "renewed-pass"
    assert hook.get_credentials().password == "renewed-pass"
    assert len(aws["redshift"].calls) == 2


def test_iam_without_a_database_user(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    with pytest.raises(AirflowFailException) as raised:
        iam(connection, login=None).get_credentials()
    assert str(raised.value) == (
        "Connection 'rs_iam' has no database user; set its login to the Redshift user that GetClusterCredentials "
        "should issue credentials for."
    )
    assert aws["redshift"].calls == []


def test_aws_refusal_is_one_sentence(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    error = {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}
    aws["redshift"].answers = [ClientError(error, "GetClusterCredentials")]
    with pytest.raises(AirflowException) as raised:
        iam(connection).get_credentials()
    assert str(raised.value) == (
        "AWS refused GetClusterCredentials for DbUser alice on cluster examplecluster (AccessDenied: not authorized); "
        "grant the user of AWS connection 'aws_unit' the policy RedshiftIAMHook.iam_policy() renders, and check "
        "Redshift connection 'rs_iam'."
    )


def test_aws_without_keys(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    aws["redshift"].answers = [NoCredentialsError()]
    with pytest.raises(AirflowFailException) as raised:
        iam(connection).get_credentials()
    assert str(raised.value) == (
        "AWS connection 'aws_unit' yields no access key; GetClusterCredentials for Redshift connection 'rs_iam' "
        "needs an access key id (login) and secret key (password)."
    )


def test_serverless_credentials(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    expiration = datetime(2026, 11, 20, 14, tzinfo=timezone(timedelta(hours=2)))
    aws["redshift-serverless"].answers = [{"dbUser": "IAMR:etl", "dbPassword": "sls-pass-1", "expiration": expiration}]
    hook = iam(
        connection,
        is_serverless=True,
        serverless_work_group="analytics",
        serverless_token_duration_seconds=1200,
        iam_duration_seconds=600,
    )
    creds = hook.get_credentials()
    assert aws["redshift-serverless"].calls == [
        ("get_credentials", {"dbName": "dev", "workgroupName": "analytics", "durationSeconds": 1200})
    ]
    assert (creds.user, creds.password, creds.expires_at) == ("IAMR:etl", "sls-pass-1", expiration)
    assert creds.expires_at is not None and creds.expires_at.tzinfo == UTC
    assert aws["redshift"].calls == []


def test_serverless_duration_falls_back_to_iam_duration(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    aws["redshift-serverless"].answers = [
        {"dbUser": "IAMR:etl", "dbPassword": "sls-pass-1", "expiration": datetime.now(UTC) + timedelta(hours=1)}
    ]
    iam(connection, is_serverless=True, serverless_work_group="analytics", iam_duration_seconds=600).get_credentials()
    assert aws["redshift-serverless"].calls[0][1]["durationSeconds"] == 600


def test_serverless_without_workgroup(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    with pytest.raises(AirflowFailException) as raised:
        iam(connection, is_serverless="true").get_credentials()
    assert str(raised.value) == (
        "Connection 'rs_iam' is serverless but has no serverless_work_group; set that extra to the workgroup name."
    )


def test_iam_policy_for_a_cluster(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    assert iam(connection, login="IAM:alice").iam_policy() == {
        "Version": "2012-10-17",
        "Statement": {
            "Effect": "Allow",
            "Action": "redshift:GetClusterCredentials",
            "Resource": "arn:aws:redshift:us-west-2:123456789012:dbuser:examplecluster/alice",
        },
    }


def test_iam_policy_for_serverless(connection: ConnectionFactory, aws: dict[str, FakeAws]) -> None:
    arn = "arn:aws:redshift-serverless:us-west-2:123456789012:workgroup/0000-1111"
    aws["redshift-serverless"].answers = [{"workgroup": {"workgroupArn": arn}}]
    policy = iam(connection, is_serverless=True, serverless_work_group="analytics").iam_policy()
    assert policy == {
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow", "Action": "redshift-serverless:GetCredentials", "Resource": arn},
    }
    assert aws["redshift-serverless"].calls == [("get_workgroup", {"workgroupName": "analytics"})]


class _SyncLikeOperator:
    """Calls the hook's AWS clients from an `execute`, as an operator does."""

    def execute(self, clients: AwsBaseHook, target: str = "execute") -> tuple[str | None, str | None]:
        return clients._find_operator_class_name(target), AwsBaseHook._find_operator_class_name(target)


def test_the_aws_user_agent_names_the_calling_operator_as_the_amazon_provider_does() -> None:
    from aporia_provider.hooks.redshift import _AwsClients

    clients = _AwsClients(aws_conn_id=None, client_type="redshift")
    assert _SyncLikeOperator().execute(clients) == ("_SyncLikeOperator", "_SyncLikeOperator")
    assert _SyncLikeOperator().execute(clients, target="poke") == (None, None)
    assert clients._get_caller() == AwsBaseHook(aws_conn_id=None, client_type="redshift")._get_caller()


def test_iam_policy_with_an_unload_prefix_reads_and_deletes_only_under_it(
    connection: ConnectionFactory, aws: dict[str, FakeAws]
) -> None:
    hook = iam(connection, login="IAM:alice", unload_s3_prefix="s3://ml-unload/syncs/")
    cluster = hook.iam_policy()["Statement"][0]
    assert cluster["Resource"] == "arn:aws:redshift:us-west-2:123456789012:dbuser:examplecluster/alice"
    for policy in (hook.iam_policy(), iam(connection, login="IAM:alice").iam_policy("s3://ml-unload/syncs")):
        assert policy["Statement"][1:] == [
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:DeleteObject"],
                "Resource": "arn:aws:s3:::ml-unload/syncs/*",
            },
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::ml-unload",
                "Condition": {"StringLike": {"s3:prefix": "syncs/*"}},
            },
        ]
