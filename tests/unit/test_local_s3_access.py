"""The local S3's IAM: what each path-style request needs, and whether a policy allows it."""

from __future__ import annotations

import pytest

from aporia_local.s3_access import is_s3_request, needed, permitted
from aporia_provider.sync.unload import unload_read_policy

READ_SIDE = {"Version": "2012-10-17", "Statement": unload_read_policy("s3://ml-unload/syncs")}


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "need"),
    [
        (
            "GET",
            "/ml-unload",
            "list-type=2&prefix=syncs%2Fm%2F",
            b"",
            [("s3:ListBucket", "arn:aws:s3:::ml-unload", {"s3:prefix": "syncs/m/"})],
        ),
        (
            "HEAD",
            "/ml-unload/syncs/a%20b.parquet",
            "",
            b"",
            [("s3:GetObject", "arn:aws:s3:::ml-unload/syncs/a b.parquet", {})],
        ),
        ("PUT", "/ml-unload/syncs/x", "", b"", [("s3:PutObject", "arn:aws:s3:::ml-unload/syncs/x", {})]),
        ("DELETE", "/ml-unload/syncs/x", "", b"", [("s3:DeleteObject", "arn:aws:s3:::ml-unload/syncs/x", {})]),
        (
            "POST",
            "/ml-unload",
            "delete=",
            b"<Delete><Object><Key>syncs/a</Key></Object><Object><Key>other/b</Key></Object></Delete>",
            [
                ("s3:DeleteObject", "arn:aws:s3:::ml-unload/syncs/a", {}),
                ("s3:DeleteObject", "arn:aws:s3:::ml-unload/other/b", {}),
            ],
        ),
        ("PUT", "/ml-unload", "", b"", [("s3:CreateBucket", "arn:aws:s3:::ml-unload", {})]),
        ("PUT", "/ml-unload", "policy=", b"", [("s3:*", "arn:aws:s3:::ml-unload", {})]),
    ],
)
def test_each_request_needs_s3s_own_action_on_its_resource(
    method: str, path: str, query: str, body: bytes, need: list[tuple[str, str, dict[str, str]]]
) -> None:
    assert needed(method, path, query, body) == need


@pytest.mark.parametrize(
    ("action", "resource", "values", "allowed"),
    [
        ("s3:ListBucket", "arn:aws:s3:::ml-unload", {"s3:prefix": "syncs/m/v1/"}, True),
        ("s3:ListBucket", "arn:aws:s3:::ml-unload", {"s3:prefix": "other/"}, False),
        ("s3:ListBucket", "arn:aws:s3:::ml-unload", {"s3:prefix": ""}, False),
        ("s3:GetObject", "arn:aws:s3:::ml-unload/syncs/m/0000_part_00.parquet", {}, True),
        ("s3:DeleteObject", "arn:aws:s3:::ml-unload/syncs/m/0000_part_00.parquet", {}, True),
        ("s3:GetObject", "arn:aws:s3:::ml-unload/other/x", {}, False),
        ("s3:PutObject", "arn:aws:s3:::ml-unload/syncs/x", {}, False),
        ("s3:GetObject", "arn:aws:s3:::elsewhere/syncs/x", {}, False),
    ],
)
def test_the_unload_read_side_allows_reading_and_deleting_under_its_prefix_only(
    action: str, resource: str, values: dict[str, str], allowed: bool
) -> None:
    assert permitted([READ_SIDE], action, resource, values) is allowed


def test_a_deny_wins_and_only_s3_signatures_are_s3_requests() -> None:
    deny = {"Statement": {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::ml-unload/syncs/secret"}}
    assert not permitted([READ_SIDE, deny], "s3:GetObject", "arn:aws:s3:::ml-unload/syncs/secret", {})
    assert is_s3_request("AWS4-HMAC-SHA256 Credential=AKIA1/20261206/us-east-1/s3/aws4_request, SignedHeaders=host")
    assert not is_s3_request("AWS4-HMAC-SHA256 Credential=AKIA1/20261206/us-east-1/iam/aws4_request")
