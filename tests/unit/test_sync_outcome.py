"""What a sync tells the person on call and the deployment's metrics: its failure (one ERROR line, the XCom the
sync view reads, what happens next) and its figures through Airflow's Stats. The sync itself is stubbed."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aporia_provider import metrics
from aporia_provider.compat import AirflowFailException
from aporia_provider.exceptions import AporiaError, InvalidRowsError, SyncFailed
from aporia_provider.sync.outcome import FAILURE_XCOM_KEY, SyncSummary, warnings_logged
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

UTC = timezone.utc
WINDOW_END = datetime(2026, 11, 20, 11, tzinfo=UTC)


class FakeTaskInstance:
    def __init__(self, try_number: int = 1, max_tries: int = 2, push_fails: bool = False) -> None:
        self.try_number, self.max_tries, self.push_fails = try_number, max_tries, push_fails
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        if self.push_fails:
            raise ConnectionError("the API server is down")
        self.pushed[key] = value


class StatsRecorder:
    """Stands in for Airflow's Stats: (kind, name, value, tags) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str] | None]] = []

    def incr(self, stat: str, count: int = 1, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("incr", stat, count, tags))

    def gauge(self, stat: str, value: float, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("gauge", stat, value, tags))

    def timing(self, stat: str, dt: timedelta, *, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("timing", stat, dt, tags))

    def named(self, stat: str) -> list[Any]:
        return [(kind, value, tags) for kind, name, value, tags in self.calls if name == stat]


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> StatsRecorder:
    recorder = StatsRecorder()
    monkeypatch.setattr(metrics, "Stats", recorder)
    return recorder


@pytest.fixture(autouse=True)
def task_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator's log through the standard library, where caplog reads it (the Task SDK's goes to structlog)."""
    monkeypatch.setattr(AporiaSyncOperator, "log", property(lambda self: logging.getLogger("sync-task")))


def operator(failure: Exception | None = None, **kwargs: Any) -> AporiaSyncOperator:
    """A sync whose run reads 125 predictions (one rejected) and 20 actuals, then fails with `failure` (if any)."""
    sync = AporiaSyncOperator(
        task_id="sync",
        model_id="fraud.detector",
        model_version="v1",
        query="SELECT 1",
        id_column="id",
        timestamp_column="ts",
        **kwargs,
    )

    def stubbed(context: Any, summary: SyncSummary) -> dict[str, Any]:
        summary.window_start, summary.window_end = (WINDOW_END - timedelta(hours=1)).isoformat(), WINDOW_END.isoformat()
        summary.rows_read, summary.actuals_read, summary.rows_rejected = 125, 20, 1
        summary.rejected_examples = ["predictions p7: amount: not a finite number"]
        if failure is not None:
            raise failure
        summary.fragments_sent, summary.actuals_sent = 124, 20
        return {"model_id": sync.model_id, "model_version": sync.model_version, **summary.to_dict()}

    sync._sync = stubbed  # type: ignore[method-assign]
    return sync


def failing(failure: Exception, ti: FakeTaskInstance | None, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run the sync to its failure; the ERROR lines it logged."""
    caplog.set_level(logging.INFO)
    with pytest.raises(type(failure)):
        operator(failure).run({"ti": ti} if ti else {})
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_transient_failure_says_airflow_retries_it_and_what_to_check(
    caplog: pytest.LogCaptureFixture, stats: StatsRecorder
) -> None:
    ti = FakeTaskInstance(try_number=1, max_tries=2)
    sentence = "Aporia unreachable at http://127.0.0.1:1: connection refused; delivering fraud.detector v1."
    errors = failing(SyncFailed(sentence), ti, caplog)
    next_step = (
        "Airflow will retry the task (try 1 of up to 3); if it keeps failing, check what the error names and the "
        "connections aporia_default, redshift_default, aws_default."
    )
    assert errors == [f"{sentence} {next_step}"]  # the sentence's own full stop ends it
    record = ti.pushed[FAILURE_XCOM_KEY]
    assert (record["error"], record["next_step"], record["try_number"]) == (sentence, next_step, 1)
    assert (record["model_id"], record["model_version"], record["window_end"]) == (
        "fraud.detector",
        "v1",
        WINDOW_END.isoformat(),
    )
    # The counts so far, for the view's row and header.
    assert (record["rows_read"], record["rows_rejected"], record["fragments_sent"]) == (125, 1, 0)
    assert record["rejected_examples"] == ["predictions p7: amount: not a finite number"]
    assert record["seconds"] >= 0


def test_the_last_try_says_so(caplog: pytest.LogCaptureFixture, stats: StatsRecorder) -> None:
    [error] = failing(AporiaError("Aporia logPredictions failed: HTTP 503"), FakeTaskInstance(3, 2), caplog)
    assert error == (
        "Aporia logPredictions failed: HTTP 503. That was the last try (try 3 of up to 3): check what the error names "
        "and the connections aporia_default, redshift_default, aws_default, then clear the task to run it again "
        "(delivery is idempotent: nothing is duplicated)."
    )


@pytest.mark.parametrize(
    "failure",
    [
        InvalidRowsError("1 invalid row of 125 (p7 amount: not a finite number); nothing was sent."),
        AirflowFailException("Model 'fraud.detector' has no version 'v1' in Aporia; create it first."),
    ],
)
def test_bad_input_is_logged_as_it_is_said(
    failure: Exception, caplog: pytest.LogCaptureFixture, stats: StatsRecorder
) -> None:
    ti = FakeTaskInstance()
    assert failing(failure, ti, caplog) == [str(failure)]  # Airflow does not retry it: no retry to announce
    assert ti.pushed[FAILURE_XCOM_KEY]["error"] == str(failure)
    assert ti.pushed[FAILURE_XCOM_KEY]["next_step"] == ""


def test_a_failure_that_cannot_be_recorded_is_raised_all_the_same(
    caplog: pytest.LogCaptureFixture, stats: StatsRecorder
) -> None:
    failing(SyncFailed("Redshift closed the connection"), FakeTaskInstance(push_fails=True), caplog)
    assert "Could not record the failure for the sync view: the API server is down" in caplog.text


def test_outside_a_task_instance_the_failure_is_logged(caplog: pytest.LogCaptureFixture, stats: StatsRecorder) -> None:
    [error] = failing(SyncFailed("Redshift closed the connection"), None, caplog)
    assert error.startswith("Redshift closed the connection. A later try can succeed; if it keeps failing, check")


def test_a_sync_reports_its_figures_per_model_version(stats: StatsRecorder) -> None:
    result = operator().run({})
    assert result["fragments_sent"] == 124
    tags = {"model_id": "fraud.detector", "model_version": "v1"}
    for metric, count in (("rows_read", 125), ("fragments_sent", 124), ("rows_rejected", 1), ("actuals_sent", 20)):
        assert stats.named(f"aporia.sync.{metric}") == [("incr", count, tags)]
        # Plain StatsD has no tags: the model version is in the name, its dot written as Airflow writes one.
        assert stats.named(f"aporia.sync.fraud__detector.v1.{metric}") == [("incr", count, None)]
    [(kind, lag, lag_tags)] = stats.named("aporia.sync.lag_seconds")
    assert kind == "gauge" and lag_tags == tags
    assert lag == pytest.approx((datetime.now(UTC) - WINDOW_END).total_seconds(), abs=60)
    assert [kind for kind, _, _ in stats.named("aporia.sync.duration")] == ["timing"]
    assert stats.named("aporia.sync.failed") == []


def test_a_failed_sync_is_counted_with_its_counts_so_far(
    caplog: pytest.LogCaptureFixture, stats: StatsRecorder
) -> None:
    failing(SyncFailed("Redshift closed the connection"), FakeTaskInstance(), caplog)
    tags = {"model_id": "fraud.detector", "model_version": "v1"}
    assert stats.named("aporia.sync.failed") == [("incr", 1, tags)]
    assert stats.named("aporia.sync.rows_rejected") == [("incr", 1, tags)]
    assert stats.named("aporia.sync.fragments_sent") == [("incr", 0, tags)]
    assert stats.named("aporia.sync.lag_seconds") == []  # nothing was delivered


def test_a_model_id_becomes_one_part_of_a_metric_name() -> None:
    assert metrics.name_part("fraud.detector v2/eu") == "fraud__detector_v2_eu"


def test_summary_to_dict() -> None:
    summary = SyncSummary("2026-11-20T00:00:00+00:00", "2026-11-20T01:00:00+00:00", rows_read=3)
    summary.rejected_examples.append("row 7: amount: expected a number")
    assert summary.to_dict() == {
        "window_start": "2026-11-20T00:00:00+00:00",
        "window_end": "2026-11-20T01:00:00+00:00",
        "read_start": "",
        "rows_read": 3,
        "predictions_in_window": 0,
        "predictions_reread": 0,
        "fragments_sent": 0,
        "actuals_read": 0,
        "actuals_sent": 0,
        "actuals_in_window": 0,
        "actuals_reread": 0,
        "rows_rejected": 0,
        "rejected_examples": ["row 7: amount: expected a number"],
        "other_version_rows": 0,
        "min_rows": None,
        "low_volume": False,
        "batches": 0,
        "retries": 0,
        "warnings": 0,
        "seconds": 0.0,
        "unloaded_to": None,
        "unload_seconds": 0.0,
        "dry_run": False,
        "logged_warnings": [],
    }


def test_the_summary_keeps_the_warnings_the_engine_logged() -> None:
    summary = SyncSummary()
    with warnings_logged(summary):
        logging.getLogger("aporia_provider.extraction.run").warning("%s; left out.", "2 invalid rows of 200")
        logging.getLogger("aporia_provider.extraction.run").info("Read 200 predictions.")
        logging.getLogger("elsewhere").warning("not the sync's")
    logging.getLogger("aporia_provider.extraction.run").warning("after the sync")
    assert summary.logged_warnings == ["2 invalid rows of 200; left out."]
