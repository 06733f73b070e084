"""The client and the hook's Test button against a real loopback web server that is not Aporia.

A tiny http.server stands in for what people put in front of Aporia by mistake or by policy: an SSO
login page answering 200, and a web server's own 404 page. Each must read as one sentence.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aporia_provider.client import AporiaClient
from aporia_provider.exceptions import AporiaError
from aporia_provider.hooks.aporia import AporiaHook

LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Sign in to Example SSO</title></head>"
    "<body><form method='post'>Your session has expired. Please sign in again to continue.</form></body></html>"
)
NOT_FOUND_PAGE = (
    "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
    "<p>The requested URL was not found on this server. " + "Apache/2.4.62 (Debian) Server " * 20 + "</p></body></html>"
)


class _WebServer(BaseHTTPRequestHandler):
    """Answers every request with the page its server was given, as a misconfigured front end would."""

    server: _PageServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def _answer(self) -> None:
        body = self.server.page.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output to the test's own lines


class _PageServer(ThreadingHTTPServer):
    status = 200
    page = ""


@pytest.fixture
def web_server() -> Iterator[_PageServer]:
    server = _PageServer(("127.0.0.1", 0), _WebServer)
    # A short poll keeps shutdown() from waiting out the default half second.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _url(server: _PageServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _likely_cause(server: _PageServer) -> str:
    return (
        "a proxy or login page in front of Aporia, or the wrong host, is the likely cause: "
        f"check that {_url(server)} serves the Aporia API (the host, port and schema of the Aporia connection)."
    )


def test_a_200_login_page_fails_each_kind_of_call_in_one_sentence(web_server: _PageServer) -> None:
    web_server.status, web_server.page = 200, LOGIN_PAGE
    client = AporiaClient(_url(web_server), "token", backoff_seconds=0)
    page = 'HTTP 200 answered with an HTML page (text/html) titled "Sign in to Example SSO" instead of JSON'
    with pytest.raises(AporiaError) as rest:
        client.request("create_model", "POST", "/v1beta/models", json={"id": "m"}, ok=[409])
    assert str(rest.value) == f"Aporia create_model failed: {page}; {_likely_cause(web_server)}"
    with pytest.raises(AporiaError) as graphql:
        client.log_fragments("m", "v1", [{"id": "p1", "features": {"amount": 1.0}}])
    assert str(graphql.value) == f"Aporia logPredictions failed: {page}; {_likely_cause(web_server)}"


def test_a_404_page_is_named_not_dumped(web_server: _PageServer) -> None:
    web_server.status, web_server.page = 404, NOT_FOUND_PAGE
    client = AporiaClient(_url(web_server), "token", backoff_seconds=0)
    with pytest.raises(AporiaError) as raised:
        client.request("get_sync_status", "GET", "/v1beta/models/m/versions/v1/sync_status/serving")
    assert str(raised.value) == (
        'Aporia get_sync_status failed: HTTP 404 answered with an HTML page (text/html) titled "404 Not Found" '
        f"instead of JSON; {_likely_cause(web_server)}"
    )


@pytest.mark.parametrize(
    ("status", "page", "title"),
    [(200, LOGIN_PAGE, "Sign in to Example SSO"), (404, NOT_FOUND_PAGE, "404 Not Found")],
)
@pytest.mark.usefixtures("airflow_env")
def test_the_test_button_answers_with_that_sentence(
    web_server: _PageServer, monkeypatch: pytest.MonkeyPatch, status: int, page: str, title: str
) -> None:
    web_server.status, web_server.page = status, page
    port = web_server.server_address[1]
    connection = {"conn_type": "aporia", "host": "127.0.0.1", "port": port, "schema": "http", "password": "t"}
    monkeypatch.setenv("AIRFLOW_CONN_APORIA_BEHIND_SSO", json.dumps(connection))
    assert AporiaHook(aporia_conn_id="aporia_behind_sso").test_connection() == (
        False,
        f'Aporia test_connection failed: HTTP {status} answered with an HTML page (text/html) titled "{title}" '
        f"instead of JSON; {_likely_cause(web_server)}",
    )
