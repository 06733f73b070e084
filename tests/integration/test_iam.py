"""IAM enforced: the policy iam_policy() renders grants exactly its DbUser on its cluster, nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest

from aporia_local.stack import CLUSTER_ID, DB_USER, READER_POLICY, UNLOAD_BUCKET, LocalStack
from aporia_provider.compat import AirflowException
from aporia_provider.hooks.redshift import RedshiftIAMHook

pytestmark = pytest.mark.usefixtures("airflow_env")


def bootstrap_client(stack: LocalStack, service: str) -> object:
    # A key of no IAM user: the stand-in treats it as the account root.
    return boto3.client(
        service,
        endpoint_url=stack.settings.aws_url,
        region_name="us-east-1",
        aws_access_key_id="root",
        aws_secret_access_key="root",
    )


@pytest.fixture(scope="module")
def policy_holder(stack: LocalStack) -> Iterator[dict[str, str]]:
    """An IAM user holding exactly the policy RedshiftIAMHook.iam_policy() renders for redshift_default."""
    iam = bootstrap_client(stack, "iam")
    policy = RedshiftIAMHook().iam_policy()
    iam.create_user(UserName="policy-holder")  # type: ignore[attr-defined]
    iam.put_user_policy(  # type: ignore[attr-defined]
        UserName="policy-holder", PolicyName="rendered", PolicyDocument=json.dumps(policy)
    )
    key = iam.create_access_key(UserName="policy-holder")["AccessKey"]  # type: ignore[attr-defined]
    bootstrap_client(stack, "redshift").create_cluster(  # type: ignore[attr-defined]
        ClusterIdentifier="other-cluster",
        NodeType="ra3.xlplus",
        MasterUsername="awsuser",
        MasterUserPassword="Other-cluster-1",
        DBName="dev",
        Port=stack.settings.redshift_port,
    )
    yield {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def hook_for(
    stack: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    key: dict[str, str],
    login: str = DB_USER,
    cluster: str = CLUSTER_ID,
) -> RedshiftIAMHook:
    connections = stack.connections()
    aws = connections["aws_default"] | {"login": key["AccessKeyId"], "password": key["SecretAccessKey"]}
    redshift = connections["redshift_default"]
    redshift = redshift | {"login": login, "extra": redshift["extra"] | {"cluster_identifier": cluster}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_POLICY", json.dumps(aws))
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_UNDER_TEST", json.dumps(redshift))
    return RedshiftIAMHook(aws_conn_id="aws_policy", redshift_conn_id="redshift_under_test")


def test_the_rendered_policy_is_the_one_the_stack_grants() -> None:
    statements = READER_POLICY["Statement"]
    assert RedshiftIAMHook().iam_policy()["Statement"] == [statements[0], *statements[2:4]]


def test_the_policy_reads_and_deletes_what_is_unloaded_under_its_prefix_and_nothing_else(
    stack: LocalStack, policy_holder: dict[str, str]
) -> None:
    import botocore.exceptions

    root = bootstrap_client(stack, "s3")
    root.put_object(Bucket=UNLOAD_BUCKET, Key="syncs/m/v1/span/try-1/predictions/0000_part_00.parquet", Body=b"1")  # type: ignore[attr-defined]
    root.put_object(Bucket=UNLOAD_BUCKET, Key="elsewhere/0000_part_00.parquet", Body=b"2")  # type: ignore[attr-defined]
    holder = boto3.client(
        "s3",
        endpoint_url=stack.settings.aws_url,
        region_name="us-east-1",
        aws_access_key_id=policy_holder["AccessKeyId"],
        aws_secret_access_key=policy_holder["SecretAccessKey"],
    )
    listed = holder.list_objects_v2(Bucket=UNLOAD_BUCKET, Prefix="syncs/m/")
    assert [item["Key"] for item in listed["Contents"]] == ["syncs/m/v1/span/try-1/predictions/0000_part_00.parquet"]
    assert holder.get_object(Bucket=UNLOAD_BUCKET, Key=listed["Contents"][0]["Key"])["Body"].read() == b"1"
    holder.delete_object(Bucket=UNLOAD_BUCKET, Key=listed["Contents"][0]["Key"])
    for denied in (
        lambda: holder.list_objects_v2(Bucket=UNLOAD_BUCKET, Prefix="elsewhere/"),
        lambda: holder.get_object(Bucket=UNLOAD_BUCKET, Key="elsewhere/0000_part_00.parquet"),
        lambda: holder.put_object(Bucket=UNLOAD_BUCKET, Key="syncs/written", Body=b"3"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as error:
            denied()
        assert error.value.response["Error"]["Code"] == "AccessDenied"
    root.delete_object(Bucket=UNLOAD_BUCKET, Key="elsewhere/0000_part_00.parquet")  # type: ignore[attr-defined]


def test_the_policy_grants_its_db_user_on_its_cluster(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, policy_holder: dict[str, str]
) -> None:
    creds = hook_for(stack, monkeypatch, policy_holder).get_credentials()
    assert creds.user == f"IAM:{DB_USER}"


def test_another_db_user_is_denied(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, policy_holder: dict[str, str]
) -> None:
    hook = hook_for(stack, monkeypatch, policy_holder, login="admin")
    with pytest.raises(AirflowException) as error:
        hook.get_credentials()
    assert str(error.value) == (
        f"AWS refused GetClusterCredentials for DbUser admin on cluster {CLUSTER_ID} (AccessDenied: User: "
        "arn:aws:iam::123456789012:user/policy-holder is not authorized to perform: redshift:GetClusterCredentials "
        f"on resource: arn:aws:redshift:us-east-1:123456789012:dbuser:{CLUSTER_ID}/admin); grant the user of AWS "
        "connection 'aws_policy' the policy RedshiftIAMHook.iam_policy() renders, and check Redshift connection "
        "'redshift_under_test'."
    )


def test_another_cluster_is_denied(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, policy_holder: dict[str, str]
) -> None:
    hook = hook_for(stack, monkeypatch, policy_holder, cluster="other-cluster")
    with pytest.raises(
        AirflowException,
        match=f"AccessDenied: .* on resource: arn:aws:redshift:us-east-1:123456789012:dbuser:other-cluster/{DB_USER}",
    ):
        hook.get_credentials()
