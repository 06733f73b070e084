"""IAM on the local S3: a request signed by an IAM user's key is allowed only as far as the user's policies allow it.

moto's server checks IAM only when told to for every service and every key; the AWS stand-in checks S3 requests
itself, so a test can show that a rendered policy is enough and no more. The actions and resources are S3's own
(the Service Authorization Reference's "Actions defined by Amazon S3"): path-style requests, as clients address a
local endpoint, mapped to the action each needs; `s3:prefix` conditions (StringLike, StringEquals) on ListBucket
are evaluated, as a policy scoped to a prefix relies on them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import parse_qs, unquote

# The keys of a multi-object delete (DeleteObjects' XML body): no entity but XML's five escapes.
_DELETED_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)
_S3_SCOPE = re.compile(r"Credential=[A-Z0-9]+/\d{8}/[a-z0-9-]+/s3/aws4_request")
_LISTING = {
    "list-type",
    "prefix",
    "delimiter",
    "continuation-token",
    "max-keys",
    "start-after",
    "encoding-type",
    "marker",
}
_BUCKET_ACTIONS = {"PUT": "s3:CreateBucket", "DELETE": "s3:DeleteBucket"}
# (action, resource, the request's condition values)
Needed = tuple[str, str, dict[str, str]]


def is_s3_request(authorization: str) -> bool:
    return bool(_S3_SCOPE.search(authorization))


def needed(method: str, path: str, query: str, body: bytes) -> list[Needed]:
    """What a path-style S3 request needs, action by action (a multi-object delete: one per key)."""
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    params = parse_qs(query, keep_blank_values=True)
    if not bucket:
        return [("s3:ListAllMyBuckets", "*", {})]
    bucket_arn = f"arn:aws:s3:::{bucket}"
    if key:
        action = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "DELETE": "s3:DeleteObject"}.get(method)
        return [(action or "s3:PutObject", f"{bucket_arn}/{key}", {})]
    if method == "POST" and "delete" in params:
        keys = [html.unescape(key.decode()) for key in _DELETED_KEY.findall(body)]
        return [("s3:DeleteObject", f"{bucket_arn}/{name}", {}) for name in keys]
    if method in ("GET", "HEAD") and set(params) <= _LISTING:
        return [("s3:ListBucket", bucket_arn, {"s3:prefix": params.get("prefix", [""])[0]})]
    if not params and method in _BUCKET_ACTIONS:
        return [(_BUCKET_ACTIONS[method], bucket_arn, {})]
    if method == "GET" and set(params) == {"location"}:
        return [("s3:GetBucketLocation", bucket_arn, {})]
    return [("s3:*", bucket_arn, {})]  # an operation not mapped here: only a grant of every action covers it


def permitted(policies: Iterable[Mapping[str, Any]], action: str, resource: str, values: Mapping[str, str]) -> bool:
    """Whether the policies allow the action on the resource with these condition values (and none denies it)."""
    allowed = False
    for policy in policies:
        statements = policy.get("Statement", [])
        for statement in statements if isinstance(statements, list) else [statements]:
            if not _applies(statement, action, resource, values):
                continue
            if statement.get("Effect") == "Deny":
                return False
            allowed = True
    return allowed


def _applies(statement: Mapping[str, Any], action: str, resource: str, values: Mapping[str, str]) -> bool:
    actions, resources = _listed(statement.get("Action")), _listed(statement.get("Resource"))
    if not any(fnmatchcase(action.lower(), pattern.lower()) for pattern in actions):
        return False
    if not any(fnmatchcase(resource, pattern) for pattern in resources):
        return False
    for operator, conditions in (statement.get("Condition") or {}).items():
        for name, expected in conditions.items():
            value = values.get(name)
            if value is None:
                return False
            if operator == "StringLike" and not any(fnmatchcase(value, p) for p in _listed(expected)):
                return False
            if operator == "StringEquals" and value not in _listed(expected):
                return False
    return True


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
