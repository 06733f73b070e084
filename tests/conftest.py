"""Session fixtures: one local stack of real stand-ins for the whole test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from aporia_provider.local.stack import LocalStack, StackSettings


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local_stack = LocalStack(tmp_path_factory.mktemp("stack"), StackSettings.with_free_ports())
    try:
        local_stack.start()
        yield local_stack
    finally:
        local_stack.stop()


@pytest.fixture(scope="session")
def airflow_env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Airflow configured for the stack: its connections as AIRFLOW_CONN_* variables, a private home."""
    home: Path = tmp_path_factory.mktemp("airflow-home")
    env = {
        **stack.airflow_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class AporiaProbe:
    """Reads the local Aporia server's state, as a person would through its read-only endpoints."""

    def __init__(self, stack: LocalStack) -> None:
        self.base_url = stack.settings.aporia_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {stack.settings.aporia_token}"

    def get(self, path: str, **params: Any) -> Any:
        response = self.session.get(self.base_url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = self.session.post(self.base_url + path, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def fragments(self, model_id: str, version: str, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while page := self.get(
            "/local/fragments",
            model_id=model_id,
            model_version=version,
            environment="production",
            limit=100_000,
            offset=len(found),
            **params,
        ):
            found.extend(page)
        return found

    def count(self, model_id: str, version: str, **params: Any) -> dict[str, int]:
        counts: dict[str, int] = self.get(
            "/local/fragments/count", model_id=model_id, model_version=version, environment="production", **params
        )
        return counts

    def fail_next(self, count: int, status: int = 503, path: str = "/v1/controller/graphql", delay: float = 0) -> None:
        self.post("/local/faults", {"path": path, "status": status, "count": count, "delay_seconds": delay})

    def clear_faults(self) -> None:
        self.session.delete(self.base_url + "/local/faults", timeout=30).raise_for_status()

    def reset(self) -> None:
        self.post("/local/reset", {})


@pytest.fixture
def aporia(stack: LocalStack) -> Iterator[AporiaProbe]:
    """The local Aporia server, emptied before each test that uses it."""
    probe = AporiaProbe(stack)
    probe.reset()
    yield probe
    probe.clear_faults()
