"""A wire-compatible client for the Aporia API (REST /v1beta and the GraphQL controller).

It knows nothing of Airflow, so the extraction engine can ship it to Spark tasks, which deliver
their partitions themselves. Airflow code reaches it through AporiaHook, which builds it from a
connection.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import requests
import tenacity

from aporia_provider.exceptions import AporiaError, RetryableCall
from aporia_provider.vocabulary import FIELD_GROUPS, wire_group

log = logging.getLogger(__name__)

LOG_PREDICTIONS = """
mutation LogPredictions($modelId: String!, $modelVersion: String!, $environment: String!,
                        $predictions: [Prediction]!, $isSync: Boolean!) {
  logPredictions(modelId: $modelId, modelVersion: $modelVersion, environment: $environment,
                 predictions: $predictions, isSync: $isSync) { warnings }
}
"""
MODEL_VERSION_SCHEMA = """
query ModelVersionSchema($modelId: String!, $modelVersion: String!) {
  modelVersionSchema(modelId: $modelId, modelVersion: $modelVersion) {
    features { name type dimensions }
    predictions { name type dimensions }
    rawInputs { name type dimensions }
  }
}
"""
# A batch of fragments for one request: their JSON objects joined by commas, and how many there are.
JoinedFragments = tuple[str, int]
_RETRIED_STATUSES = {429, 500, 502, 503, 504}
_HINTS = {
    401: "check the API token stored as the password of the Aporia connection",
    403: "check that the API token may access this model",
    404: "check the model id, version and the Aporia host",
    405: "check the Aporia host and port: they do not serve the Aporia API",
}
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TITLE_LENGTH = 100


@dataclass
class LogResult:
    """What delivering fragments cost; the sync summary adds these up."""

    fragments: int = 0
    batches: int = 0
    retries: int = 0
    warnings: list[str] = field(default_factory=list)

    def add(self, other: LogResult) -> None:
        self.fragments += other.fragments
        self.batches += other.batches
        self.retries += other.retries
        self.warnings.extend(other.warnings)


@dataclass(frozen=True)
class AporiaClient:
    base_url: str
    token: str = field(repr=False)
    environment: str = "production"
    verify_ssl: bool = True
    timeout: float = 60.0
    max_attempts: int = 4
    backoff_seconds: float = 0.5

    def request(self, call: str, method: str, path: str, json: Any = None, ok: Iterable[int] = ()) -> Any:
        """One REST call; `ok` lists statuses that are answers rather than errors (e.g. 409)."""
        response, _ = self._send(call, method, path, json=json)
        if response.status_code in set(ok) or response.ok:
            return self._json(call, response) if response.content else None
        raise self._error(call, response)

    def graphql(self, call: str, query: str, variables: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """One GraphQL call; returns its `data` and the number of retries it took."""
        return self._post_graphql(call, json.dumps({"query": query, "variables": variables}).encode())

    def log_fragments(
        self,
        model_id: str,
        model_version: str,
        fragments: Iterable[Mapping[str, Any]],
        batch_size: int = 5000,
        is_sync: bool = True,
    ) -> LogResult:
        """Send fragments in batches; fragments with the same id merge in Aporia, so a resent batch is harmless."""
        batches = ((",".join(json.dumps(f) for f in batch), len(batch)) for batch in _batches(fragments, batch_size))
        return self.log_batches(model_id, model_version, batches, is_sync)

    def log_batches(
        self,
        model_id: str,
        model_version: str,
        batches: Iterable[JoinedFragments],
        is_sync: bool = True,
        in_flight: int = 1,
    ) -> LogResult:
        """Send each batch of fragments (JSON objects joined by commas, and their count), one request each, up to
        `in_flight` at once, and add up what it cost. Fragments merge by id in Aporia, so the order they arrive in does
        not matter. When a request fails, or taking the next batch raises, the requests under way finish first, then
        that is raised."""
        result = LogResult()
        if in_flight <= 1:
            for batch in batches:
                result.add(self.log_joined(model_id, model_version, batch, is_sync))
            return result
        with ThreadPoolExecutor(in_flight, thread_name_prefix="aporia-delivery") as pool:
            pending: set[Future[LogResult]] = set()
            try:
                for batch in batches:
                    if len(pending) >= in_flight:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        _add_all(result, done)
                    pending.add(pool.submit(self.log_joined, model_id, model_version, batch, is_sync))
            finally:
                done, pending = wait(pending)
                _add_all(result, done)
        return result

    def log_fragment_json(
        self, model_id: str, model_version: str, fragments: list[str], is_sync: bool = True
    ) -> LogResult:
        """Send one batch of fragments already serialised as JSON objects."""
        return self.log_joined(model_id, model_version, (",".join(fragments), len(fragments)), is_sync)

    def log_joined(
        self, model_id: str, model_version: str, fragments: JoinedFragments, is_sync: bool = True
    ) -> LogResult:
        """Send one batch of fragments joined by commas (as the sync's columnar engine builds them)."""
        joined, count = fragments
        variables = {"modelId": model_id, "modelVersion": model_version, "environment": self.environment}
        # The fragments are spliced in as they are: re-parsing them here would cost more than the request.
        body = (
            f'{{"query": {json.dumps(LOG_PREDICTIONS)}, "variables": {json.dumps(variables)[:-1]}, '
            f'"isSync": {json.dumps(is_sync)}, "predictions": [{joined}]}}}}'
        )
        data, retries = self._post_graphql("logPredictions", body.encode())
        warnings = (data.get("logPredictions") or {}).get("warnings") or []
        for warning in warnings[:20]:
            log.warning("Aporia warned about %s %s: %s", model_id, model_version, warning)
        return LogResult(count, 1, retries, list(warnings))

    def _post_graphql(self, call: str, body: bytes) -> tuple[dict[str, Any], int]:
        response, retries = self._send(call, "POST", "/v1/controller/graphql", data=body)
        if not response.ok:
            raise self._error(call, response)
        answer = self._json(call, response)
        if answer.get("errors"):
            reasons = "; ".join(str(e.get("message", e)) for e in answer["errors"])
            raise AporiaError(f"Aporia {call} failed: {reasons}")
        return answer.get("data") or {}, retries

    def _send(
        self, call: str, method: str, path: str, json: Any = None, data: bytes | None = None
    ) -> tuple[requests.Response, int]:
        session = _session()
        url = self.base_url.rstrip("/") + path
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff_seconds, max=30),
            retry=tenacity.retry_if_exception_type(RetryableCall),
            before_sleep=lambda state: log.warning(
                "Aporia %s: attempt %d failed (%s); retrying.",
                call,
                state.attempt_number,
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        response = session.request(
                            method,
                            url,
                            json=json,
                            data=data,
                            headers=headers,
                            timeout=self.timeout,
                            verify=self.verify_ssl,
                        )
                    except requests.Timeout as exc:
                        raise RetryableCall(f"no answer within {self.timeout:g} s") from exc
                    except requests.ConnectionError as exc:
                        raise RetryableCall(f"cannot reach {self.base_url}") from exc
                    if response.status_code in _RETRIED_STATUSES:
                        raise RetryableCall(_status_and_reason(response))
                    return response, attempt.retry_state.attempt_number - 1
        except RetryableCall as exc:
            attempts = "1 attempt" if self.max_attempts == 1 else f"{self.max_attempts} attempts"
            raise AporiaError(
                f"Aporia {call} failed after {attempts}: {exc}; "
                f"check that Aporia is up and reachable at {self.base_url}."
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _json(self, call: str, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self._not_json(call, response) from None

    def _error(self, call: str, response: requests.Response) -> AporiaError:
        if _is_html(response):
            # The page comes from whatever stands in front of Aporia, so the status-based hints would mislead.
            return self._not_json(call, response)
        hint = _HINTS.get(response.status_code)
        suffix = f"; {hint}" if hint else ""
        return AporiaError(f"Aporia {call} failed: {_status_and_reason(response)}{suffix}.")

    def _not_json(self, call: str, response: requests.Response) -> AporiaError:
        return AporiaError(
            f"Aporia {call} failed: HTTP {response.status_code} answered with {_non_json_body(response)}; "
            "a proxy or login page in front of Aporia, or the wrong host, is the likely cause: "
            f"check that {self.base_url} serves the Aporia API (the host, port and schema of the Aporia connection)."
        )


def _add_all(result: LogResult, done: Iterable[Future[LogResult]]) -> None:
    """Add up finished requests; the first that failed raises (after the others were added)."""
    failures = []
    for future in done:
        if future.exception() is None:
            result.add(future.result())
        else:
            failures.append(future.exception())
    if failures:
        raise failures[0]  # type: ignore[misc]


def iter_version_schema(data: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any] | str]]:
    """Turn the modelVersionSchema GraphQL answer into (group, name, field schema) triples."""
    for group in FIELD_GROUPS:
        for item in data.get(wire_group(group)) or []:
            spec: dict[str, Any] | str = item["type"]
            if item.get("dimensions"):
                spec = {"type": item["type"], "dimensions": item["dimensions"]}
            yield group, item["name"], spec


def _status_and_reason(response: requests.Response) -> str:
    if _is_html(response):
        return f"HTTP {response.status_code} answered with {_non_json_body(response)}"
    return f"HTTP {response.status_code}: {_reason(response)}"


def _is_html(response: requests.Response) -> bool:
    if "html" in _content_type(response):
        return True
    start = response.text.lstrip()[:15].lower()
    return start.startswith(("<!doctype html", "<html"))


def _content_type(response: requests.Response) -> str:
    """The media type alone: parameters such as the charset say nothing about what went wrong."""
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _non_json_body(response: requests.Response) -> str:
    """What came back instead of JSON, in a few words: the content type and, for a page, its title."""
    content_type = _content_type(response)
    if _is_html(response):
        page = f"an HTML page ({content_type or 'no content type'})"
        title = _HTML_TITLE.search(response.text)
        if title and (text := " ".join(html.unescape(title.group(1)).split())):
            if len(text) > _TITLE_LENGTH:
                text = text[:_TITLE_LENGTH].rsplit(" ", 1)[0] + " …"
            page += f' titled "{text}"'
        return f"{page} instead of JSON"
    if not content_type:
        return "a body without a content type instead of JSON"
    if "json" in content_type:
        return f"a body of type {content_type} that is not valid JSON"
    return f"a body of type {content_type} instead of JSON"


def _reason(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason
    if isinstance(body, Mapping):
        return str(body.get("detail") or body.get("message") or body)[:300]
    return str(body)[:300]


def _batches(items: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


_thread_state = threading.local()


def _session() -> requests.Session:
    """One pooled HTTP session per thread, so batches reuse their connections."""
    session: requests.Session | None = getattr(_thread_state, "session", None)
    if session is None:
        session = _thread_state.session = requests.Session()
    return session
