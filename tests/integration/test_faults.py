"""Faults mid-sync, then a re-run as Airflow would do it: 0 rows lost, 0 duplicated, actuals on the right ids.

Every fault is real: the local Aporia server answers errors or is killed, the Redshift stand-in cuts the
session mid-result, credentials are expired, the task process is killed.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aporia_local.credentials import issue_password
from aporia_local.stack import LocalStack
from aporia_provider.extraction.options import SPARK_MIN_ROWS
from tests.helpers import MODEL, AirflowCli, AporiaProbe, assert_delivered_exactly, sync, sync_operator

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded", "version")
HOUR = timedelta(hours=1)


def day_two(hours: int = 12) -> tuple[datetime, datetime]:
    start = datetime(2026, 11, 21, tzinfo=timezone.utc)
    return start, start + hours * HOUR


@pytest.fixture
def aporia_fast(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Aporia connection that waits 1 s for an answer."""
    fast = stack.connections()["aporia_default"]
    monkeypatch.setenv("AIRFLOW_CONN_APORIA_FAST", json.dumps(fast | {"extra": fast["extra"] | {"timeout": 1}}))
    return "aporia_fast"


def test_aporia_errors_and_timeouts_on_some_batches_are_retried(
    stack: LocalStack, aporia: AporiaProbe, aporia_fast: str
) -> None:
    """Spark tasks post batches side by side, so the faults land on several batches."""
    aporia.fail_next(2, status=503, operation="logPredictions")
    aporia.fail_next(1, status=500, operation="logPredictions")
    aporia.fail_next(1, delay=3, operation="logPredictions")  # longer than the 1 s timeout
    summary = sync(day_two(), batch_size=10, aporia_conn_id=aporia_fast, spark_min_rows=0)
    assert summary["retries"] == 4
    assert_delivered_exactly(stack, aporia, *day_two())


def test_aporia_errors_and_a_timeout_on_a_batch_sent_by_the_task_are_retried(
    stack: LocalStack, aporia: AporiaProbe, aporia_fast: str
) -> None:
    """The task posts one batch at a time: three failed attempts on its first batch, the fourth (last) one lands."""
    aporia.fail_next(1, status=503, operation="logPredictions")
    aporia.fail_next(1, status=500, operation="logPredictions")
    aporia.fail_next(1, delay=3, operation="logPredictions")  # longer than the 1 s timeout
    summary = sync(day_two(), batch_size=10, aporia_conn_id=aporia_fast)
    assert summary["retries"] == 3
    assert_delivered_exactly(stack, aporia, *day_two())


def test_aporia_killed_mid_sync_then_restarted_and_rerun(stack: LocalStack, aporia: AporiaProbe) -> None:
    # Slow every batch so the kill lands mid-delivery.
    aporia.fail_next(10_000, delay=0.2, operation="logPredictions")
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(failure, lambda: sync(day_two(), batch_size=5)))
    thread.start()
    _wait_until(lambda: aporia.count(MODEL, "v1")["total"] > 0)
    stack.stop_service("aporia", signal.SIGKILL)
    thread.join(120)
    stack.start_service("aporia")
    [error] = failure
    assert str(error).startswith("Aporia logPredictions failed")
    assert str(error).endswith(f"(while delivering the window to Aporia for {MODEL} v1).")
    partial = aporia.count(MODEL, "v1")["total"]
    assert 0 < partial < 72
    sync(day_two(), batch_size=5)
    assert_delivered_exactly(stack, aporia, *day_two())


@pytest.mark.parametrize("spark_min_rows", [0, SPARK_MIN_ROWS], ids=["spark", "in-task"])
def test_redshift_drops_the_connection_mid_read_then_rerun(
    stack: LocalStack, aporia: AporiaProbe, spark_min_rows: int
) -> None:
    stack.processes["redshift"].send_signal(signal.SIGUSR2)  # cut the next large result part-way
    with pytest.raises(RuntimeError) as error:
        sync(day_two(), num_partitions=1, spark_min_rows=spark_min_rows)
    assert str(error.value).endswith(f" (while reading the window from Redshift for {MODEL} v1).")
    assert aporia.count(MODEL, "v1")["total"] == 0  # reads and checks come before any delivery
    sync(day_two(), num_partitions=1)
    assert_delivered_exactly(stack, aporia, *day_two())


def test_expired_credentials_fail_clearly_then_rerun(stack: LocalStack, aporia: AporiaProbe) -> None:
    operator = sync_operator(day_two(), num_partitions=None)
    valid = operator.redshift_hook.get_credentials()
    # Expired at AWS's side while the hook still believes it fresh: the worst case for a long sync.
    expired = issue_password(stack.settings.signing_key, valid.user, datetime.now(timezone.utc) - timedelta(seconds=1))
    operator.redshift_hook._credentials = type(valid)(**{**valid.__dict__, "password": expired})
    with pytest.raises(RuntimeError) as error:
        operator.execute({})
    assert str(error.value) == (
        f'password authentication failed for user "{valid.user}" (while reading the window from Redshift for '
        f"{MODEL} v1)."
    )
    assert valid.password not in str(error.value) and expired not in str(error.value)
    assert aporia.count(MODEL, "v1")["total"] == 0
    sync_operator(day_two(), num_partitions=None).execute({})
    assert_delivered_exactly(stack, aporia, *day_two())


def test_task_process_killed_mid_sync_then_retried(
    stack: LocalStack, aporia: AporiaProbe, airflow_cli: AirflowCli
) -> None:
    start, end = day_two(1)
    aporia.fail_next(10_000, delay=0.3, operation="logPredictions")
    # Spark in the task's own JVM, which dies with the task (a shared Connect server would carry on).
    local_spark = json.dumps({"spark_conn_id": ""})
    task = airflow_cli.start("dags", "test", "aporia_redshift_sync", end.isoformat(), "-c", local_spark)
    try:
        _wait_until(lambda: aporia.count(MODEL, "v1")["total"] > 0)
    finally:
        os.killpg(task.pid, signal.SIGKILL)
        task.wait(30)
    aporia.clear_faults()
    assert aporia.count(MODEL, "v1")["total"] < 12 + 3
    airflow_cli("dags", "test", "aporia_redshift_sync", end.isoformat())
    # The example DAG reads 15 minutes back: its run covers [start - 15 min, end).
    assert_delivered_exactly(stack, aporia, start - timedelta(minutes=15), end)


def test_backfill_over_synced_windows_and_overlapping_runs(stack: LocalStack, aporia: AporiaProbe) -> None:
    start = datetime(2026, 11, 21, 6, tzinfo=timezone.utc)
    sync((start, start + HOUR))
    sync((start + HOUR, start + 2 * HOUR))
    sync((start, start + 2 * HOUR))  # a backfill over both
    sync((start + HOUR / 2, start + 3 * HOUR / 2))  # a run overlapping both
    assert_delivered_exactly(stack, aporia, start, start + 2 * HOUR)


def _capture(failures: list[BaseException], action: Callable[[], Any]) -> None:
    try:
        action()
    except BaseException as exc:
        failures.append(exc)


def _wait_until(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the sync never started delivering")
        time.sleep(0.05)
