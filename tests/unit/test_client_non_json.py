"""AporiaClient when something other than Aporia answers: a proxy, an SSO login page, the wrong host.

Whatever comes back that is not JSON reads as one sentence naming the call, the status, the content type
and the likely cause; never a decoder exception, never the page itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from aporia_provider.client import MODEL_VERSION_SCHEMA, AporiaClient
from aporia_provider.exceptions import AporiaError

BASE_URL = "http://aporia.test:8080"
CAPABILITIES_URL = BASE_URL + "/v1beta/capabilities/"
LIKELY_CAUSE = (
    "a proxy or login page in front of Aporia, or the wrong host, is the likely cause: "
    f"check that {BASE_URL} serves the Aporia API (the host, port and schema of the Aporia connection)."
)
# The page writes its dash as an entity: the sentence shows it unescaped.
LOGIN_TITLE = "Sign in \N{EN DASH} Example SSO"
LOGIN_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>
  Sign in &ndash; Example SSO
</title></head>
<body><form action="/login">The Aporia API token you sent is not accepted here. Please sign in.</form></body></html>
"""
NOT_FOUND_PAGE = (
    "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
    "<p>The requested URL was not found on this server. Additional details follow " + "x" * 400 + "</p></body></html>"
)


@pytest.fixture
def stub() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client() -> AporiaClient:
    return AporiaClient(BASE_URL, "token", max_attempts=2, backoff_seconds=0)


def failure(client: AporiaClient, call: str = "capabilities") -> str:
    with pytest.raises(AporiaError) as raised:
        client.request(call, "GET", "/v1beta/capabilities/")
    return str(raised.value)


def test_a_login_page_with_200_reads_as_one_sentence(client: AporiaClient, stub: responses.RequestsMock) -> None:
    stub.get(CAPABILITIES_URL, body=LOGIN_PAGE, content_type="text/html; charset=utf-8")
    assert failure(client) == (
        f'Aporia capabilities failed: HTTP 200 answered with an HTML page (text/html) titled "{LOGIN_TITLE}" '
        f"instead of JSON; {LIKELY_CAUSE}"
    )
    assert len(stub.calls) == 1  # a page is an answer, not a transient failure


def test_a_404_page_is_neither_dumped_nor_blamed_on_the_model_id(
    client: AporiaClient, stub: responses.RequestsMock
) -> None:
    stub.get(CAPABILITIES_URL, body=NOT_FOUND_PAGE, status=404, content_type="text/html")
    message = failure(client)
    assert message == (
        'Aporia capabilities failed: HTTP 404 answered with an HTML page (text/html) titled "404 Not Found" '
        f"instead of JSON; {LIKELY_CAUSE}"
    )
    assert "model id" not in message and "<" not in message
    assert len(stub.calls) == 1


def test_a_page_without_a_content_type_is_recognised_by_its_start(
    client: AporiaClient, stub: responses.RequestsMock
) -> None:
    stub.get(CAPABILITIES_URL, body="\n  <!doctype html><html><body>Welcome</body></html>", content_type=None)
    assert failure(client) == (
        f"Aporia capabilities failed: HTTP 200 answered with an HTML page (no content type) instead of JSON; "
        f"{LIKELY_CAUSE}"
    )


@pytest.mark.parametrize(
    ("content_type", "body", "described"),
    [
        ("text/plain", "OK", "a body of type text/plain instead of JSON"),
        ("application/json", '{"truncated": ', "a body of type application/json that is not valid JSON"),
        (None, "OK", "a body without a content type instead of JSON"),
    ],
)
def test_any_other_body_that_is_not_json_names_its_content_type(
    client: AporiaClient, stub: responses.RequestsMock, content_type: str | None, body: str, described: str
) -> None:
    stub.get(CAPABILITIES_URL, body=body, content_type=content_type)
    assert failure(client) == f"Aporia capabilities failed: HTTP 200 answered with {described}; {LIKELY_CAUSE}"


def test_an_accepted_status_with_a_page_is_not_json_either(client: AporiaClient, stub: responses.RequestsMock) -> None:
    stub.post(BASE_URL + "/v1beta/models", body=LOGIN_PAGE, status=409, content_type="text/html")
    with pytest.raises(AporiaError) as raised:
        client.request("create_model", "POST", "/v1beta/models", json={"id": "m"}, ok=[409])
    assert str(raised.value).startswith("Aporia create_model failed: HTTP 409 answered with an HTML page (text/html)")


def test_graphql_calls_read_the_same_way(client: AporiaClient, stub: responses.RequestsMock) -> None:
    stub.post(BASE_URL + "/v1/controller/graphql", body=LOGIN_PAGE, content_type="text/html")
    with pytest.raises(AporiaError) as raised:
        client.graphql("modelVersionSchema", MODEL_VERSION_SCHEMA, {"modelId": "m", "modelVersion": "v1"})
    assert str(raised.value) == (
        "Aporia modelVersionSchema failed: HTTP 200 answered with an HTML page (text/html) titled "
        f'"{LOGIN_TITLE}" instead of JSON; {LIKELY_CAUSE}'
    )


def test_a_gateway_page_is_retried_then_named_without_its_body(
    client: AporiaClient, stub: responses.RequestsMock
) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    stub.get(CAPABILITIES_URL, body=page, status=502, content_type="text/html")
    assert failure(client) == (
        "Aporia capabilities failed after 2 attempts: HTTP 502 answered with an HTML page (text/html) titled "
        f'"502 Bad Gateway" instead of JSON; check that Aporia is up and reachable at {BASE_URL}.'
    )
    assert len(stub.calls) == 2


def test_one_attempt_is_singular(stub: responses.RequestsMock) -> None:
    stub.get(CAPABILITIES_URL, json={"detail": "down"}, status=503)
    assert failure(AporiaClient(BASE_URL, "token", max_attempts=1)) == (
        "Aporia capabilities failed after 1 attempt: HTTP 503: down; "
        f"check that Aporia is up and reachable at {BASE_URL}."
    )


def test_a_long_title_is_shortened_at_a_word(client: AporiaClient, stub: responses.RequestsMock) -> None:
    title = "Access denied by the corporate web gateway " * 5
    stub.get(CAPABILITIES_URL, body=f"<html><title>{title}</title></html>", status=403, content_type="text/html")
    message = failure(client)
    shown = message.split('titled "')[1].split('"')[0]
    assert shown.endswith(" …") and len(shown) <= 102
    assert title.startswith(shown.removesuffix(" …"))


def test_json_answers_are_unchanged(client: AporiaClient, stub: responses.RequestsMock) -> None:
    stub.get(CAPABILITIES_URL, json={"is_field_schema_supported": True})
    assert client.request("capabilities", "GET", "/v1beta/capabilities/") == {"is_field_schema_supported": True}
