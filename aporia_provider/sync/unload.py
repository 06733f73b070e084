"""Where a window's try unloads: the operator's UNLOAD settings (or the Redshift connection's extras), a prefix of
the try's own, and S3 reached through the AWS connection with pyarrow's filesystem."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aporia_provider.exceptions import SyncInputError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from aporia_provider.extraction.sql import Window
    from aporia_provider.extraction.unload import Unload

# Windows of at least this many rows go by UNLOAD, where it is configured.
DEFAULT_UNLOAD_MIN_ROWS = 1_000_000


def try_key(model_id: str, model_version: str, window: Window, attempt: int) -> str:
    """``<model id>/<version>/<start>--<end>/try-<n>``: a window's try, as its files are named."""
    return f"{model_id}/{model_version}/{window.start.isoformat()}--{window.end.isoformat()}/try-{attempt}"


def check_unload_settings(prefix: str | None, iam_role: str | None, min_rows: int) -> None:
    """Refuse settings no UNLOAD can run with, in one sentence naming the argument."""
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise SyncInputError(f"unload_min_rows {min_rows!r} is not allowed; give a whole number of rows (0 or more).")
    if prefix and not (prefix.startswith("s3://") and urlsplit(prefix).netloc):
        raise SyncInputError(f"unload_s3_prefix {prefix!r} is not an S3 URL; give s3://bucket/prefix.")
    if iam_role and not iam_role.startswith("arn:aws"):
        raise SyncInputError(
            f"unload_iam_role {iam_role!r} is not a role ARN; give the ARN of the role Redshift assumes to write to "
            "S3, arn:aws:iam::<account>:role/<name>."
        )


def unload_of(task: Any, key: str) -> Unload | None:
    """Where the sync `task` (an AporiaSyncOperator) unloads the large windows of its try `key`, or None when no S3
    prefix is configured: its arguments, else its Redshift connection's extras."""
    extra: Mapping[str, Any] = task.redshift_hook.conn.extra_dejson
    return unload_target(
        task.unload_s3_prefix or extra.get("unload_s3_prefix"),
        task.unload_iam_role or extra.get("unload_iam_role"),
        task.unload_min_rows,
        task.aws_conn_id,
        key,
    )


def unload_target(
    prefix: str | None, iam_role: str | None, min_rows: int, aws_conn_id: str | None, key: str
) -> Unload | None:
    """Where a try (`key`) unloads large windows under `prefix`, or None without one."""
    if not prefix:
        return None
    check_unload_settings(prefix, iam_role, min_rows)
    if not iam_role:
        raise SyncInputError(
            f"unload_s3_prefix {prefix!r} needs the role Redshift assumes to write there; pass unload_iam_role or "
            "set the Redshift connection's extra unload_iam_role."
        )
    from aporia_provider.extraction.unload import Unload

    filesystem = partial(s3_filesystem, aws_conn_id)
    return Unload(f"{prefix.rstrip('/')}/{key}/", iam_role, min_rows, filesystem, S3Store(aws_conn_id))


class S3Store:
    """The unloaded objects, listed and deleted through the Amazon provider's S3 hook."""

    def __init__(self, aws_conn_id: str | None) -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        self.hook = S3Hook(aws_conn_id=aws_conn_id)

    def keys(self, url: str) -> list[str]:
        bucket, prefix = self.hook.parse_s3_url(url)
        return list(self.hook.list_keys(bucket_name=bucket, prefix=prefix))

    def delete(self, url: str, keys: list[str]) -> None:
        bucket, _ = self.hook.parse_s3_url(url)
        self.hook.delete_objects(bucket, keys)


def s3_filesystem(aws_conn_id: str | None) -> pafs.S3FileSystem:
    """S3 as pyarrow reaches it with the AWS connection's credentials, region and endpoint (a local S3's too)."""
    import pyarrow.fs as pafs
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3")
    credentials = hook.get_credentials()
    endpoint = hook.conn_config.get_service_endpoint_url("s3")
    location = urlsplit(endpoint) if endpoint else None
    return pafs.S3FileSystem(
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.token,
        region=hook.conn_region_name or "us-east-1",
        endpoint_override=location.netloc if location else None,
        scheme=location.scheme if location else "https",
    )


def unload_read_policy(prefix: str) -> list[dict[str, Any]]:
    """What the sync does with the files under an UNLOAD prefix: lists them, reads them, deletes them after success.
    (Writing them is the role's that Redshift assumes, not this user's.)"""
    location = urlsplit(prefix)
    key = location.path.strip("/")
    return [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:DeleteObject"],
            "Resource": f"arn:aws:s3:::{location.netloc}/{key}/*",
        },
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{location.netloc}",
            "Condition": {"StringLike": {"s3:prefix": f"{key}/*"}},
        },
    ]
