"""Session fixtures of the integration tier: one local stack of real stand-ins for the whole session.

Spark, three ways, chosen per sync by its Spark connection: none means `local[*]` in the test process;
`spark_connect_default` (in `airflow_env`, like every connection of the stack) is the stack's Spark
Connect server; the `spark_standalone_conn` fixture sets `spark_standalone`, a standalone master with
one worker started for the session (`spark_standalone` gives its master URL).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from aporia_local.seed import SeedPlan, seed_predictions
from aporia_local.spark import StandaloneCluster
from aporia_local.stack import LocalStack, StackSettings
from tests.helpers import MODEL, SEED_PLAN, SESSION_NOTES, AirflowCli, AporiaProbe, session_note, version_args
from tests.integration.standalone import SYNC_DAG, AirflowStandalone, ScheduledSyncs, StatsdListener, run_example_dags

# The windows the real scheduler catches up: six hours of the seeded day that also has delayed actuals arriving.
FIRST_WINDOW = SEED_PLAN.start + timedelta(hours=24)
SCHEDULED_WINDOWS: list[tuple[datetime, datetime]] = [
    (FIRST_WINDOW + timedelta(hours=h), FIRST_WINDOW + timedelta(hours=h + 1)) for h in range(6)
]
BACKFILLED = slice(2, 4)  # and a backfill re-runs two of them
_running_standalone: list[AirflowStandalone] = []
_last_standalone_test: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in SESSION_NOTES:
        terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
    users = [item.nodeid for item in items if "standalone" in getattr(item, "fixturenames", ())]
    _last_standalone_test[:] = users[-1:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """Stop airflow standalone as soon as the last test that uses it is done, not at the end of the session."""
    result = yield
    if _running_standalone and [item.nodeid] == _last_standalone_test:
        left = _running_standalone.pop().stop()
        assert left == [], f"airflow standalone left processes behind after SIGINT: {left}"
    return result


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # A cursor-result limit small enough for a test to reach (test_redshift_rules.py), far above any sync's window.
    settings = StackSettings.with_free_ports(cursor_limit_mb=16)
    local_stack = LocalStack(tmp_path_factory.mktemp("stack"), settings)
    try:
        local_stack.start()
        yield local_stack
    finally:
        local_stack.stop()


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    """A standalone master and one worker (1 core, 1 GB), whose executors run this virtualenv's Python."""
    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark-standalone"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def spark_standalone(spark_cluster: StandaloneCluster) -> str:
    """The standalone cluster's master URL, spark://127.0.0.1:<port>."""
    return spark_cluster.master_url


@pytest.fixture
def spark_standalone_conn(spark_cluster: StandaloneCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """The id of a `spark` connection to the standalone cluster, set for this test as AIRFLOW_CONN_*."""
    conn_id = "spark_standalone"
    for key, value in spark_cluster.airflow_env(conn_id).items():
        monkeypatch.setenv(key, value)
    return conn_id


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


@pytest.fixture(scope="session")
def statsd() -> Iterator[StatsdListener]:
    """A StatsD listener on loopback, where airflow standalone sends its metrics."""
    listener = StatsdListener()
    yield listener
    listener.close()


@pytest.fixture(scope="session")
def standalone(
    stack: LocalStack, statsd: StatsdListener, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowStandalone]:
    """The real Airflow components (airflow standalone, LocalExecutor, SQLite) on loopback, once per session.

    The example DAGs as users get them; a cluster policy in its private home bounds the sync DAG's catch-up
    to SCHEDULED_WINDOWS.
    """
    airflow = AirflowStandalone(
        tmp_path_factory.mktemp("standalone"),
        stack.airflow_env(),
        bounds={SYNC_DAG: (SCHEDULED_WINDOWS[0][0], SCHEDULED_WINDOWS[-1][0])},
        statsd_port=statsd.port,
    )
    session_note(f"airflow standalone: healthy after {airflow.start():.0f} s at {airflow.base_url}")
    _running_standalone.append(airflow)
    try:
        yield airflow
    finally:
        if airflow in _running_standalone:
            _running_standalone.remove(airflow)
            left = airflow.stop()
            assert left == [], f"airflow standalone left processes behind after SIGINT: {left}"


@pytest.fixture(scope="session")
def scheduled_syncs(
    standalone: AirflowStandalone, stack: LocalStack, statsd: StatsdListener, seeded: SeedPlan
) -> ScheduledSyncs:
    """aporia_setup, the sync DAG's catch-up of SCHEDULED_WINDOWS (a try failing and retried) and a backfill of
    BACKFILLED, by the scheduler; then a manual run of the next window that fails."""
    probe = AporiaProbe(stack)
    probe.reset()
    try:
        done = run_example_dags(standalone, probe, stack, statsd, SCHEDULED_WINDOWS, BACKFILLED)
    finally:
        probe.clear_faults()
    session_note(
        "airflow standalone: " + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in done.seconds.items())
    )
    return done
