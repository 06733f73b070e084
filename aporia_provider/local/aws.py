"""The AWS stand-in: moto in server mode, plus the small part of Redshift Serverless that moto lacks.

Runs in one process: moto's WSGI application serves redshift, sts and iam; requests for
redshift-serverless (GetCredentials, GetWorkgroup) are answered here. Temporary database passwords
are signed (see credentials.py) so the Redshift stand-in can check them, and cluster endpoints point
at the Redshift stand-in on loopback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aporia_provider.local.credentials import issue_password

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
        if not target.startswith("RedshiftServerless."):
            return self.moto_app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = json.loads(environ["wsgi.input"].read(length) or b"{}")
        status, body = self._handle(target.split(".", 1)[1], request, environ.get("HTTP_AUTHORIZATION", ""))
        payload = json.dumps(body, default=_epoch).encode()
        start_response(status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(payload)))])
        return [payload]

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
        duration = int(request.get("durationSeconds", 900))
        if not 900 <= duration <= 3600:
            return "400 Bad Request", _error("ValidationException", "durationSeconds must be between 900 and 3600.")
        db_user = f"IAM:{_caller_name(authorization)}"
        expiration = datetime.now(timezone.utc) + timedelta(seconds=duration)
        return "200 OK", {
            "dbUser": db_user,
            "dbPassword": issue_password(self.signing_key, db_user, expiration),
            "expiration": expiration,
            "nextRefreshTime": expiration - timedelta(seconds=duration // 2),
        }


def _caller_name(authorization: str) -> str:
    """The IAM user owning the request's access key, as Redshift Serverless names its database user."""
    from moto.iam.models import iam_backends

    match = _ACCESS_KEY_IN_AUTHORIZATION.search(authorization)
    access_key = match.group(1) if match else ""
    user = iam_backends[ACCOUNT_ID]["global"].get_user_from_access_key_id(access_key)
    return user.name if user else access_key or "anonymous"


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
