"""UNLOAD ... FORMAT PARQUET in the Redshift stand-in, into the stack's S3 (moto), read back with pyarrow.

UNLOAD page: https://docs.aws.amazon.com/redshift/latest/dg/r_UNLOAD.html
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redshift_connector

from aporia_local.aws import ACCOUNT_ID, REGION
from aporia_local.stack import CLUSTER_ID, MASTER_USER, UNLOAD_BUCKET, UNLOAD_ROLE_ARN, LocalStack
from tests.helpers import redshift_sql

MOMENT = datetime(2026, 11, 20, 6, 30, 15, 250000, tzinfo=timezone.utc)


def aws(stack: LocalStack, service: str) -> Any:
    """A client as the account's administrator (a key of no IAM user): it sees every prefix of the bucket."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=stack.settings.aws_url,
        region_name=REGION,
        aws_access_key_id="root",
        aws_secret_access_key="root",
    )


def unload(stack: LocalStack, sql: str) -> Any:
    """Run an UNLOAD as the master user; the connection's notices."""
    with stack.master_connection() as connection:
        cursor = connection.cursor()
        cursor.execute(sql)
        connection.commit()
        return list(connection.notices)


def objects(stack: LocalStack, prefix: str) -> dict[str, bytes]:
    s3 = aws(stack, "s3")
    listed = s3.list_objects_v2(Bucket=UNLOAD_BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=UNLOAD_BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def read(files: dict[str, bytes]) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(io.BytesIO(body)) for key, body in sorted(files.items()) if key.endswith("parquet")
    )


@pytest.fixture(scope="module")
def typed(stack: LocalStack) -> str:
    redshift_sql(stack, "DROP TABLE IF EXISTS unload_typed")
    redshift_sql(
        stack,
        "CREATE TABLE unload_typed (id INT, at TIMESTAMPTZ, local_at TIMESTAMP, amount NUMERIC(10,2), flag BOOLEAN, "
        "doc SUPER, note VARCHAR(32))",
    )
    for n in range(1, 6):
        redshift_sql(
            stack,
            "INSERT INTO unload_typed VALUES (%s, %s, %s, %s, %s, JSON_PARSE(%s), %s)",
            (n, MOMENT, MOMENT.replace(tzinfo=None), Decimal(f"{n}.25"), n % 2 == 0, json.dumps([n, 0.5]), f"it's {n}"),
        )
    return "unload_typed"


def test_unload_writes_parquet_that_pyarrow_reads_with_redshift_types(stack: LocalStack, typed: str) -> None:
    # The select is a quoted literal: its own quotes doubled.
    notices = unload(
        stack,
        f"UNLOAD ('SELECT * FROM {typed} WHERE note <> ''it''''s 3''') TO 's3://{UNLOAD_BUCKET}/typed/' "
        f"IAM_ROLE '{UNLOAD_ROLE_ARN}' FORMAT AS PARQUET",
    )
    assert notices[-1][b"M"] == b"UNLOAD completed, 4 record(s) unloaded successfully."
    files = objects(stack, "typed/")
    # PARALLEL ON (the default): a file per slice, two slices on the single ra3.xlplus node.
    assert sorted(files) == ["typed/0000_part_00.parquet", "typed/0001_part_00.parquet"]
    table = read(files).sort_by("id")
    assert table.schema == pa.schema(
        [
            ("id", pa.int32()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("local_at", pa.timestamp("us")),
            ("amount", pa.decimal128(10, 2)),
            ("flag", pa.bool_()),
            ("doc", pa.json_()),  # SUPER: Parquet's JSON type
            ("note", pa.string()),
        ]
    )
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [1, 2, 4, 5]
    assert rows[0] == {
        "id": 1,
        "at": MOMENT,
        "local_at": MOMENT.replace(tzinfo=None),
        "amount": Decimal("1.25"),
        "flag": False,
        "doc": "[1, 0.5]",  # JSON text
        "note": "it's 1",
    }


def test_parallel_off_maxfilesize_and_manifest(stack: LocalStack) -> None:
    redshift_sql(stack, "DROP TABLE IF EXISTS unload_wide")
    # ~16 MB of Parquet that does not compress: four files of at most 5 MB, written serially.
    redshift_sql(
        stack,
        "CREATE TABLE unload_wide AS SELECT n, md5(n::text) || md5((n + 1)::text) AS pad "
        "FROM generate_series(1, 250000) n",
    )
    unload(
        stack,
        f"unload ('select n, pad from unload_wide order by n') to 's3://{UNLOAD_BUCKET}/wide/part_' "
        f"iam_role '{UNLOAD_ROLE_ARN}' parquet parallel off maxfilesize as 5 mb manifest verbose",
    )
    files = objects(stack, "wide/")
    manifest = json.loads(files.pop("wide/part_manifest"))
    names = sorted(files)
    assert names == [f"wide/part_{n:03d}.parquet" for n in range(len(names))] and len(names) >= 3
    assert all(len(body) <= 5 * 1000**2 for body in files.values())
    table = read(files)
    assert table.column("n").to_pylist() == list(range(1, 250001))  # serially, in the select's order
    assert manifest["entries"] == [
        {
            "url": f"s3://{UNLOAD_BUCKET}/{name}",
            "meta": {
                "content_length": len(files[name]),
                "record_count": pq.read_metadata(io.BytesIO(files[name])).num_rows,
            },
        }
        for name in names
    ]
    assert manifest["meta"] == {"content_length": sum(map(len, files.values())), "record_count": 250000}
    assert manifest["schema"] == {
        "elements": [{"name": "n", "type": {"base": "integer"}}, {"name": "pad", "type": {"base": "character varying"}}]
    }
    redshift_sql(stack, "DROP TABLE unload_wide")


def test_an_existing_prefix_needs_cleanpath_or_allowoverwrite(stack: LocalStack) -> None:
    target = f"TO 's3://{UNLOAD_BUCKET}/again/' IAM_ROLE '{UNLOAD_ROLE_ARN}' FORMAT PARQUET PARALLEL OFF"
    aws(stack, "s3").put_object(Bucket=UNLOAD_BUCKET, Key="again/stale.parquet", Body=b"old")
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        unload(stack, f"UNLOAD ('SELECT 1 AS one') {target}")
    assert {k: refused.value.args[0][k] for k in "CM"} == {
        "C": "XX000",
        "M": "Specified unload destination on S3 is not empty. Consider using a different bucket / prefix, "
        "manually removing the target files in S3, or using the ALLOWOVERWRITE or CLEANPATH option.",
    }
    unload(stack, f"UNLOAD ('SELECT 1 AS one') {target} ALLOWOVERWRITE")
    assert sorted(objects(stack, "again/")) == ["again/000.parquet", "again/stale.parquet"]
    unload(stack, f"UNLOAD ('SELECT 2 AS two') {target} CLEANPATH")
    files = objects(stack, "again/")
    assert sorted(files) == ["again/000.parquet"]
    assert read(files).to_pylist() == [{"two": 2}]


@pytest.mark.parametrize("kind", ["missing", "untrusted", "other-bucket"])
def test_a_role_that_may_not_write_there_is_refused(stack: LocalStack, kind: str) -> None:
    iam = aws(stack, "iam")
    role = f"unload-{kind}"
    trust = {"Service": "redshift.amazonaws.com" if kind != "untrusted" else "ec2.amazonaws.com"}
    if kind != "missing":
        iam.create_role(
            RoleName=role,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": trust, "Action": "sts:AssumeRole"}],
                }
            ),
        )
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::another-bucket/*"}],
        }
        iam.put_role_policy(RoleName=role, PolicyName="elsewhere", PolicyDocument=json.dumps(policy))
    arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{role}"
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        unload(stack, f"UNLOAD ('SELECT 1') TO 's3://{UNLOAD_BUCKET}/denied/' IAM_ROLE '{arn}' FORMAT PARQUET")
    fields = refused.value.args[0]
    if kind == "other-bucket":
        expected = (
            f"S3ServiceException:Access Denied,Status 403,Error AccessDenied: {arn} is not authorized to perform: "
            f"s3:PutObject on resource: arn:aws:s3:::{UNLOAD_BUCKET}/denied/0000_part_00.parquet"
        )
    else:
        user = f"arn:aws:redshift:{REGION}:{ACCOUNT_ID}:dbuser:{CLUSTER_ID}/{MASTER_USER}"
        expected = f"User {user} is not authorized to assume IAM Role {arn}"
    assert (fields["C"], fields["M"]) == ("XX000", expected)
    assert objects(stack, "denied/") == {}


@pytest.mark.parametrize(
    ("options", "code", "message"),
    [
        ("FORMAT CSV", "0A000", "the Redshift stand-in unloads FORMAT PARQUET only"),
        ("PARQUET MAXFILESIZE 4 MB", "22023", "MAXFILESIZE must be between 5 MB and 6.2 GB"),
        ("PARQUET CLEANPATH ALLOWOVERWRITE", "42601", 'syntax error at or near "CLEANPATH"'),
    ],
)
def test_unload_options_redshift_refuses(stack: LocalStack, options: str, code: str, message: str) -> None:
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        unload(stack, f"UNLOAD ('SELECT 1') TO 's3://{UNLOAD_BUCKET}/x/' IAM_ROLE '{UNLOAD_ROLE_ARN}' {options}")
    assert (refused.value.args[0]["C"], refused.value.args[0]["M"]) == (code, message)


def test_the_select_s_own_error_and_an_empty_result(stack: LocalStack) -> None:
    target = f"TO 's3://{UNLOAD_BUCKET}/empty/' IAM_ROLE '{UNLOAD_ROLE_ARN}' FORMAT PARQUET MANIFEST"
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        unload(stack, f"UNLOAD ('SELECT * FROM no_such_table') {target}")
    assert refused.value.args[0]["C"] == "42P01"
    notices = unload(stack, f"UNLOAD ('SELECT 1 AS one WHERE false') {target}")
    assert notices[-1][b"M"] == b"UNLOAD completed, 0 record(s) unloaded successfully."
    # No slice got a row: no data files, only the manifest.
    files = objects(stack, "empty/")
    assert list(files) == ["empty/manifest"]
    assert json.loads(files["empty/manifest"]) == {"entries": [], "meta": {"content_length": 0, "record_count": 0}}
