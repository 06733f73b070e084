"""Fixtures of the fast unit tier: no servers, no Spark, no AWS; HTTP is stubbed with `responses`.

Airflow reads its home when first imported, so a private, throw-away home is set before any test module
imports it. Connections come from AIRFLOW_CONN_<ID> variables holding JSON, set per test.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

_AIRFLOW_HOME = tempfile.TemporaryDirectory(prefix="aporia-unit-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME.name
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Never let boto fall back to the instance metadata service, whatever a test does.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

APORIA_HOST = "aporia.test"
APORIA_PORT = 8080
BASE_URL = f"http://{APORIA_HOST}:{APORIA_PORT}"
TOKEN = "unit-test-token"
GRAPHQL_URL = BASE_URL + "/v1/controller/graphql"

ConnectionFactory = Callable[..., None]


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> ConnectionFactory:
    """Define an Airflow connection for this test: connection("my_id", conn_type=..., host=..., extra={...})."""

    def define(conn_id: str, **fields: Any) -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))

    return define


@pytest.fixture
def aporia_conn(connection: ConnectionFactory) -> dict[str, Any]:
    """The default `aporia` connection, pointing at the stubbed Aporia over plain HTTP."""
    fields: dict[str, Any] = {
        "conn_type": "aporia",
        "host": APORIA_HOST,
        "port": APORIA_PORT,
        "schema": "http",
        "password": TOKEN,
        "extra": {"environment": "staging"},
    }
    connection("aporia_default", **fields)
    return fields


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    """Stubbed HTTP: registered URLs answer, any other request fails as a connection error."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port with a listening socket (nothing answers beyond the TCP handshake)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def request_json(call: Any) -> Any:
    """The JSON body of a request `responses` recorded."""
    body = call.request.body
    return json.loads(body.decode() if isinstance(body, bytes) else body)
