"""The AWS stand-in: moto's GetClusterCredentials and the serverless GetCredentials issue passwords
that the Redshift stand-in accepts."""

from __future__ import annotations

import boto3
import redshift_connector

from aporia_local.stack import CLUSTER_ID, DATABASE, DB_USER, IAM_USER, WORKGROUP, LocalStack


def aws_client(stack: LocalStack, service: str) -> object:
    s = stack.settings
    return boto3.client(
        service,
        endpoint_url=s.aws_url,
        region_name="us-east-1",
        aws_access_key_id=s.aws_access_key_id,
        aws_secret_access_key=s.aws_secret_access_key,
    )


def query_as(stack: LocalStack, user: str, password: str) -> list:
    with redshift_connector.connect(
        host="127.0.0.1", port=stack.settings.redshift_port, database=DATABASE, user=user, password=password, ssl=False
    ) as conn:
        cur = conn.cursor()
        cur.execute("SELECT current_database()")
        return [list(row) for row in cur.fetchall()]


def test_cluster_credentials_open_a_redshift_session(stack: LocalStack) -> None:
    redshift = aws_client(stack, "redshift")
    creds = redshift.get_cluster_credentials(  # type: ignore[attr-defined]
        DbUser=DB_USER, DbName=DATABASE, ClusterIdentifier=CLUSTER_ID, DurationSeconds=900, AutoCreate=False
    )
    assert creds["DbUser"] == f"IAM:{DB_USER}"
    assert query_as(stack, creds["DbUser"], creds["DbPassword"]) == [[DATABASE]]


def test_cluster_endpoint_points_at_the_redshift_stand_in(stack: LocalStack) -> None:
    cluster = aws_client(stack, "redshift").describe_clusters(ClusterIdentifier=CLUSTER_ID)["Clusters"][0]  # type: ignore[attr-defined]
    assert cluster["Endpoint"] == {"Address": "127.0.0.1", "Port": stack.settings.redshift_port}


def test_serverless_credentials_name_the_iam_user(stack: LocalStack) -> None:
    serverless = aws_client(stack, "redshift-serverless")
    workgroup = serverless.get_workgroup(workgroupName=WORKGROUP)["workgroup"]  # type: ignore[attr-defined]
    assert workgroup["endpoint"] == {"address": "127.0.0.1", "port": stack.settings.redshift_port}
    creds = serverless.get_credentials(workgroupName=WORKGROUP, dbName=DATABASE, durationSeconds=900)  # type: ignore[attr-defined]
    assert creds["dbUser"] == f"IAM:{IAM_USER}"
    assert query_as(stack, creds["dbUser"], creds["dbPassword"]) == [[DATABASE]]
