"""Session fixtures of the integration tier: one local stack of real stand-ins for the whole session.

The stack includes a Spark Connect server; its connection, `spark_connect_default`, is in `airflow_env`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aporia_local.seed import SeedPlan, seed_predictions
from aporia_local.stack import LocalStack, StackSettings
from tests.helpers import MODEL, SEED_PLAN, AirflowCli, AporiaProbe, version_args


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture
def aporia(stack: LocalStack) -> Iterator[AporiaProbe]:
    """The local Aporia server, emptied before each test that uses it."""
    probe = AporiaProbe(stack)
    probe.reset()
    yield probe
    probe.clear_faults()


@pytest.fixture(scope="session")
def seeded(stack: LocalStack) -> SeedPlan:
    with stack.master_connection() as connection:
        seed_predictions(connection, SEED_PLAN)
    return SEED_PLAN


@pytest.fixture(scope="session")
def airflow_cli(airflow_env: dict[str, str]) -> AirflowCli:
    cli = AirflowCli(airflow_env)
    cli("db", "migrate")
    return cli


@pytest.fixture(scope="session", autouse=True)
def _stop_spark() -> Iterator[None]:
    """Stop the in-process Spark session while pytest's log capture is still open."""
    yield
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()


@pytest.fixture
def version(aporia: AporiaProbe) -> str:
    """The example model and version v1, freshly created in an empty Aporia."""
    from aporia_provider.operators.aporia import AporiaCreateModelOperator, AporiaCreateModelVersionOperator

    AporiaCreateModelOperator(task_id="model", model_id=MODEL).execute({})
    AporiaCreateModelVersionOperator(task_id="version", model_id=MODEL, **version_args()).execute({})
    return "v1"
