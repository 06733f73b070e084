"""The sync engine as Airflow runs it: a quiet task log with progress, on_kill, reads longer than credentials."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aporia_local.credentials import issue_password
from aporia_local.seed import SeedPlan
from aporia_local.stack import LocalStack
from aporia_provider.extraction import in_spark, run
from aporia_provider.hooks import redshift
from aporia_provider.hooks.redshift import RedshiftCredentials, RedshiftIAMHook
from tests.helpers import (
    LOUD,
    MODEL,
    AirflowCli,
    AporiaProbe,
    assert_delivered_exactly,
    redshift_sql,
    sync,
    sync_operator,
)

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def test_a_successful_sync_logs_no_warning_or_error_and_shows_progress(
    airflow_cli: AirflowCli, aporia: AporiaProbe, seeded: SeedPlan
) -> None:
    airflow_cli("dags", "test", "aporia_setup")
    end = seeded.start + timedelta(hours=5)
    output = airflow_cli.dags_test("aporia_redshift_sync", end)
    # The task's own part: what `airflow dags test` prints around it (its CLI's own notices) is not task log.
    started = output.index("[DAG TEST] starting task_id=sync_predictions_and_actuals")
    log = output[started : output.index("[DAG TEST] end task task_id=sync_predictions_and_actuals")]
    assert "Sync summary for insurance-propensity v1" in log
    # `airflow dags test` serves the task's execution API in-process through starlette's test client, which
    # warns about its own httpx use; the real task runner has no such client.
    loud = [line for line in log.splitlines() if LOUD.search(line) and "starlette.testclient" not in line]
    assert loud == []
    reading = (
        r"Reading predictions of insurance-propensity v1 in this task: [\d,]+ rows?, as every window "
        r"\(spark_min_rows is not set\)\."
    )
    assert re.search(reading, log)
    assert re.search(r"Checked predictions of insurance-propensity v1: [\d,]+ rows?, 0 rejected\.", log)
    assert re.search(r"Sent [\d,]+ predictions? of insurance-propensity v1 in [\d,]+ batch(es)?\.", log)


@pytest.mark.parametrize("spark_min_rows", [0, None], ids=["spark", "in-task"])
def test_on_kill_stops_the_sync_posting_to_aporia(
    version: str, aporia: AporiaProbe, spark_min_rows: int | None
) -> None:
    """Spark's jobs are cancelled; the task's own delivery stops before its next batch."""
    aporia.fail_next(10_000, delay=0.3, operation="logPredictions")  # every batch takes a while
    operator = sync_operator(
        (T0, T0 + timedelta(hours=24)), batch_size=2, num_partitions=2, spark_min_rows=spark_min_rows
    )
    failure: list[BaseException] = []

    def execute() -> None:
        try:
            operator.execute({})
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=execute)
    thread.start()
    deadline = time.monotonic() + 120
    while aporia.count(MODEL, "v1")["total"] == 0:
        assert time.monotonic() < deadline, "the sync never started delivering"
        time.sleep(0.1)
    operator.on_kill()
    thread.join(60)
    assert not thread.is_alive()
    assert failure, "the killed sync must not report success"
    # Batches already on the wire when the jobs stopped are still stored; then the count must settle, well
    # short of the window (the jobs would have posted all of it).
    settled, previous = None, -1
    while settled is None:
        assert time.monotonic() < deadline + 60, "fragments kept arriving after on_kill"
        time.sleep(1)
        current = aporia.count(MODEL, "v1")["total"]
        settled, previous = (current if current == previous else None), current
    assert settled < 24 * 6


def test_a_read_longer_than_the_credentials_completes(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials live 4 s, each part of the read takes over 1 s: later parts need credentials of their own."""
    fetched: list[RedshiftCredentials] = []
    original = RedshiftIAMHook._fetch_credentials

    def short_lived(hook: RedshiftIAMHook) -> RedshiftCredentials:
        issued = original(hook)
        expires = datetime.now(timezone.utc) + timedelta(seconds=4)
        password = issue_password(stack.settings.signing_key, issued.user, expires)
        fetched.append(RedshiftCredentials(**{**issued.__dict__, "password": password, "expires_at": expires}))
        return fetched[-1]

    monkeypatch.setattr(RedshiftIAMHook, "_fetch_credentials", short_lived)
    monkeypatch.setattr(redshift, "REFRESH_MARGIN", timedelta(seconds=2))
    monkeypatch.setattr(in_spark, "ROWS_PER_READ", 12)  # 36 rows: three parts
    slow = "SELECT p.* FROM model_predictions AS p CROSS JOIN (SELECT pg_sleep(1.2)) AS pause"
    window = (T0, T0 + timedelta(hours=6))
    summary: dict[str, Any] = sync(window, query=slow, actuals=None, actuals_timestamp_column=None, spark_min_rows=0)
    assert (summary["rows_read"], summary["fragments_sent"]) == (36, 36)
    assert len(fetched) >= 3
    expected = redshift_sql(
        stack,
        "SELECT prediction_id FROM model_predictions WHERE prediction_timestamp >= %s AND prediction_timestamp < %s",
        window,
    )
    assert sorted(f["id"] for f in aporia.fragments(MODEL, "v1")) == sorted(row[0] for row in expected)


def test_the_task_streams_a_window_in_chunks_with_batches_in_flight_and_a_rerun_delivers_it_once(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real driver: the window comes from a server-side cursor a few rows at a time, batches go several
    at once, a 5xx on one of them is retried, and a re-run of the window adds nothing."""
    monkeypatch.setattr(run, "FETCH_ROWS", 7)
    window = (T0, T0 + timedelta(hours=24))
    aporia.fail_next(1, status=503, operation="logPredictions")
    first = sync(window, batch_size=5)
    assert first["retries"] == 1
    assert first["batches"] == -(-first["fragments_sent"] // 5) + -(-first["actuals_sent"] // 5)
    assert_delivered_exactly(stack, aporia, *window)
    again = sync(window, batch_size=5)
    assert (again["fragments_sent"], again["actuals_sent"]) == (first["fragments_sent"], first["actuals_sent"])
    assert_delivered_exactly(stack, aporia, *window)
