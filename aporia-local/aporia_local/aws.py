"""The AWS stand-in: moto in server mode, plus the small part of Redshift Serverless that moto lacks.

Runs in one process: moto's WSGI application serves redshift, sts and iam; requests for
redshift-serverless (GetCredentials, GetWorkgroup) are answered here. Temporary database passwords
are signed (see credentials.py) so the Redshift stand-in can check them, and cluster endpoints point
at the Redshift stand-in on loopback.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aporia_local.credentials import issue_password
from aporia_local.s3_access import is_s3_request, needed, permitted

if TYPE_CHECKING:
    from moto.iam.access_control import IAMUserAccessKey

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
_ACCESS_KEY_IN_AUTHORIZATION = re.compile(r"Credential=([A-Z0-9]+)/")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Workgroup:
    name: str
    namespace: str
    host: str
    port: int

    def describe(self) -> dict[str, Any]:
        return {
            "workgroupName": self.name,
            "namespaceName": self.namespace,
            "status": "AVAILABLE",
            "workgroupArn": f"arn:aws:redshift-serverless:{REGION}:{ACCOUNT_ID}:workgroup/{self.name}",
            "endpoint": {"address": self.host, "port": self.port},
        }


class ServerlessStandIn:
    """WSGI middleware answering the redshift-serverless JSON API and passing the rest to moto."""

    def __init__(self, moto_app: WsgiApp, signing_key: str, workgroups: list[Workgroup]) -> None:
        self.moto_app = moto_app
        self.signing_key = signing_key
        self.workgroups = {w.name: w for w in workgroups}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        if not target.startswith("RedshiftServerless."):
            # Redshift's query API posts a form; S3's bodies (UNLOAD's files) are not decoded for it.
            form = environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")
            cluster_denial = self._cluster_credentials_denial(raw, authorization) if form else None
            denial = cluster_denial or _s3_denial(environ, raw, authorization)
            if denial:
                return _respond(start_response, "403 Forbidden", "text/xml", denial.encode())
            environ["wsgi.input"] = io.BytesIO(raw)
            return self.moto_app(environ, start_response)
        status, body = self._handle(target.split(".", 1)[1], json.loads(raw or b"{}"), authorization)
        return _respond(start_response, status, "application/x-amz-json-1.1", json.dumps(body, default=_epoch).encode())

    def _cluster_credentials_denial(self, raw: bytes, authorization: str) -> str | None:
        """moto checks IAM policies against resource "*" only; GetClusterCredentials is granted per
        dbuser ARN, so it is checked here against the caller's policies."""
        form = parse_qs(raw.decode(errors="replace"))
        if form.get("Action") != ["GetClusterCredentials"]:
            return None
        cluster = form.get("ClusterIdentifier", [""])[0]
        db_user = form.get("DbUser", [""])[0]
        resource = f"arn:aws:redshift:{REGION}:{ACCOUNT_ID}:dbuser:{cluster}/{db_user}"
        denied = _denied(_caller(authorization), "redshift:GetClusterCredentials", resource)
        if not denied:
            return None
        return (
            '<ErrorResponse xmlns="http://redshift.amazonaws.com/doc/2012-12-01/"><Error><Type>Sender</Type>'
            f"<Code>AccessDenied</Code><Message>{denied}</Message></Error><RequestId>local</RequestId>"
            "</ErrorResponse>"
        )

    def _handle(self, action: str, request: dict[str, Any], authorization: str) -> tuple[str, dict[str, Any]]:
        workgroup = self.workgroups.get(request.get("workgroupName", ""))
        if action not in ("GetCredentials", "GetWorkgroup"):
            return "400 Bad Request", _error("UnknownOperationException", f"{action} is not served locally.")
        if workgroup is None:
            return "400 Bad Request", _error(
                "ResourceNotFoundException", f"Workgroup {request.get('workgroupName')} not found."
            )
        if action == "GetWorkgroup":
            return "200 OK", {"workgroup": workgroup.describe()}
        arn = workgroup.describe()["workgroupArn"]
        caller = _caller(authorization)
        denied = _denied(caller, "redshift-serverless:GetCredentials", arn)
        if denied:
            return "403 Forbidden", _error("AccessDeniedException", denied)
        duration = int(request.get("durationSeconds", 900))
        if not 900 <= duration <= 3600:
            return "400 Bad Request", _error("ValidationException", "durationSeconds must be between 900 and 3600.")
        # Redshift Serverless names the database user after the IAM user owning the key.
        db_user = f"IAM:{caller.arn.rsplit('/', 1)[1] if caller else _access_key(authorization) or 'anonymous'}"
        expiration = datetime.now(timezone.utc) + timedelta(seconds=duration)
        return "200 OK", {
            "dbUser": db_user,
            "dbPassword": issue_password(self.signing_key, db_user, expiration),
            "expiration": expiration,
            "nextRefreshTime": expiration - timedelta(seconds=duration // 2),
        }


def _respond(start_response: Callable[..., Any], status: str, content_type: str, payload: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
    return [payload]


def _access_key(authorization: str) -> str:
    match = _ACCESS_KEY_IN_AUTHORIZATION.search(authorization)
    return match.group(1) if match else ""


def _caller(authorization: str) -> IAMUserAccessKey | None:
    """The IAM user's key that signed the request; None for keys of no IAM user (the account root)."""
    from moto.iam.access_control import CreateAccessKeyFailure, IAMUserAccessKey

    try:
        return IAMUserAccessKey(ACCOUNT_ID, "aws", _access_key(authorization), {})
    except CreateAccessKeyFailure:
        return None


def _denied(caller: IAMUserAccessKey | None, action: str, resource: str) -> str | None:
    """Why the caller may not perform `action` on `resource`, or None when it may (the root may)."""
    if caller is None:
        return None
    if policies_allow(caller.collect_policies(), action, resource):
        return None
    return f"User: {caller.arn} is not authorized to perform: {action} on resource: {resource}"


def _s3_denial(environ: dict[str, Any], raw: bytes, authorization: str) -> str | None:
    """moto's server checks no IAM on S3: a request an IAM user's key signed is checked here, against the user's
    policies, action by action (`s3_access`)."""
    caller = _caller(authorization) if is_s3_request(authorization) else None
    if caller is None:
        return None
    documents = [_document(policy) for policy in caller.collect_policies()]
    method, path, query = environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")
    for action, resource, values in needed(method, path, query, raw):
        if not permitted(documents, action, resource, values):
            return (
                '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>User: '
                f"{caller.arn} is not authorized to perform: {action} on resource: {resource}</Message></Error>"
            )
    return None


def _document(policy: Any) -> dict[str, Any]:
    """A policy's document, as the caller's policies hold it: JSON text, an inline policy, or a managed policy."""
    from moto.iam.models import Policy

    if isinstance(policy, Policy):
        text = next(version.document for version in policy.versions if version.is_default)
    else:
        text = policy if isinstance(policy, str) else policy["policy_document"]
    document: dict[str, Any] = json.loads(text)
    return document


def policies_allow(policies: Iterable[Any], action: str, resource: str) -> bool:
    """Whether IAM policies (documents as JSON text, or moto's policy objects) allow `action` on `resource`:
    one statement allows it and none denies it. The Redshift stand-in checks UNLOAD's role with it too."""
    from moto.iam.access_control import IAMPolicy, PermissionResult

    results = {IAMPolicy(policy).is_action_permitted(action, resource) for policy in policies}
    return PermissionResult.PERMITTED in results and PermissionResult.DENIED not in results


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"__type": kind, "message": message}


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _sign_cluster_passwords(signing_key: str) -> None:
    """Make moto's GetClusterCredentials issue passwords the Redshift stand-in can verify."""
    from moto.redshift.models import RedshiftBackend

    issue_random = RedshiftBackend.get_cluster_credentials

    def issue_signed(self: RedshiftBackend, *args: Any, **kwargs: Any) -> dict[str, Any]:
        credentials = issue_random(self, *args, **kwargs)
        credentials["DbPassword"] = issue_password(signing_key, credentials["DbUser"], credentials["Expiration"])
        return credentials

    RedshiftBackend.get_cluster_credentials = issue_signed  # type: ignore[method-assign]


def _point_clusters_at(host: str) -> None:
    from moto.redshift.models import Cluster

    Cluster.address = property(lambda self: host)  # type: ignore[method-assign,assignment]


def serve(host: str, port: int, signing_key: str, redshift_host: str, workgroups: list[Workgroup]) -> None:
    """Run the AWS stand-in in the foreground."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    _sign_cluster_passwords(signing_key)
    _point_clusters_at(redshift_host)
    app = ServerlessStandIn(DomainDispatcherApplication(create_backend_app), signing_key, workgroups)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()
