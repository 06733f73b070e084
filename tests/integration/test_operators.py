"""The operators against the local stack: outcomes in the local Aporia server, messages in errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import insurance_model as example
import pytest

from aporia_local.seed import SeedPlan
from aporia_local.stack import LocalStack
from aporia_provider.compat import AirflowFailException
from aporia_provider.operators.aporia import (
    AporiaConnectServingOperator,
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
)
from aporia_provider.sensors.aporia import AporiaSyncStatusSensor
from tests.helpers import MODEL, NOTHING_SENT, AporiaProbe, redshift_sql, sync, version_args

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")
HOUR = timedelta(hours=1)


def seeded_ids(stack: LocalStack, column: str, start: datetime, end: datetime, table: str = "model_predictions") -> set:
    rows = redshift_sql(
        stack, f"SELECT prediction_id FROM {table} WHERE {column} >= %s AND {column} < %s", (start, end)
    )
    return {row[0] for row in rows}


def test_create_model_and_version_are_idempotent(aporia: AporiaProbe) -> None:
    assert AporiaCreateModelOperator(task_id="m", model_id=MODEL).execute({}) == {"model_id": MODEL, "created": True}
    assert AporiaCreateModelOperator(task_id="m", model_id=MODEL).execute({})["created"] is False
    create = AporiaCreateModelVersionOperator(task_id="v", model_id=MODEL, **version_args())
    assert create.execute({}) == {"model_id": MODEL, "model_version": "v1", "created": True}
    assert create.execute({}) == {"model_id": MODEL, "model_version": "v1", "created": False}
    changed = version_args(predictions={"will_buy_insurance": "boolean", "proba": "string"})
    with pytest.raises(AirflowFailException) as error:
        AporiaCreateModelVersionOperator(task_id="v", model_id=MODEL, **changed).execute({})
    assert str(error.value) == (
        f"Version 'v1' of '{MODEL}' already exists with another schema (predictions.proba changed from numeric "
        "to string); use a new version name or on_schema_change='new_version'."
    )
    renamed = AporiaCreateModelVersionOperator(task_id="v", model_id=MODEL, on_schema_change="new_version", **changed)
    assert renamed.execute({}) == {"model_id": MODEL, "model_version": "v1-2", "created": True}
    assert [v["name"] for v in aporia.get(f"/v1beta/models/{MODEL}/versions")] == ["v1", "v1-2"]


def test_connect_serving_checks_columns_then_connects_with_the_iam_url(
    version: str, aporia: AporiaProbe, stack: LocalStack
) -> None:
    common = {
        "task_id": "serving",
        "model_id": MODEL,
        "model_version": version,
        "query": example.QUERY,
        "id_column": example.ID_COLUMN,
        "timestamp_column": example.TIMESTAMP_COLUMN,
    }
    with pytest.raises(AirflowFailException) as error:
        AporiaConnectServingOperator(**common, features={"amount": "amount_usd"}, labels=example.ACTUALS).execute({})
    assert str(error.value).startswith(
        f"The serving query for {MODEL} v1 lacks column(s) amount_usd; add them to the query or map the fields"
    )
    assert aporia.get(f"/v1beta/models/{MODEL}/versions/v1/datasets") == []

    result = AporiaConnectServingOperator(**common, labels=example.ACTUALS).execute({})
    assert result["dataset"] == "serving" and "did_buy_insurance" in result["columns"]
    [dataset] = aporia.get(f"/v1beta/models/{MODEL}/versions/v1/datasets")
    url = dataset["data_source"]["config"]["url"]
    assert url.startswith(f"jdbc:redshift:iam://127.0.0.1:{stack.settings.redshift_port}/dev?AccessKeyID=")
    assert (dataset["id_column"], dataset["labels"]) == (example.ID_COLUMN, example.ACTUALS)
    assert AporiaSyncStatusSensor(task_id="s", model_id=MODEL, model_version="v1").poke({}) is True


def test_sync_delivers_the_window_and_a_second_run_duplicates_nothing(
    version: str, aporia: AporiaProbe, stack: LocalStack, seeded: SeedPlan
) -> None:
    start = seeded.start + timedelta(days=1)  # the first hour whose delayed actuals arrive
    window = (start, start + HOUR)
    first = sync(window)
    expected = seeded_ids(stack, example.TIMESTAMP_COLUMN, *window)
    actuals = seeded_ids(stack, example.ACTUALS_TIMESTAMP_COLUMN, *window)
    assert (first["rows_read"], first["fragments_sent"]) == (len(expected), len(expected)) == (6, 6)
    assert first["actuals_sent"] == len(actuals) > 0
    assert first["rows_rejected"] == 0 and first["retries"] == 0
    stored = aporia.fragments(MODEL, "v1")
    assert {f["id"] for f in stored if f["predictions"]} == expected
    assert {f["id"] for f in stored if f["actuals"]} == actuals
    second = sync(window)
    assert {k: second[k] for k in ("rows_read", "fragments_sent", "actuals_sent")} == {
        k: first[k] for k in ("rows_read", "fragments_sent", "actuals_sent")
    }
    assert aporia.fragments(MODEL, "v1") == stored


def test_lookback_picks_up_a_row_that_landed_late(version: str, aporia: AporiaProbe, stack: LocalStack) -> None:
    redshift_sql(stack, "DROP TABLE IF EXISTS late_predictions")
    redshift_sql(stack, "CREATE TABLE late_predictions AS SELECT * FROM model_predictions")
    start = datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    sync((start, start + HOUR), query="SELECT * FROM late_predictions")
    redshift_sql(
        stack,
        "INSERT INTO late_predictions SELECT 'late-1', %s, raw_text, amount, owner, is_new, embeddings, "
        "will_buy_insurance, proba, NULL, NULL FROM model_predictions LIMIT 1",
        (start + timedelta(minutes=55),),
    )
    sync((start + HOUR, start + 2 * HOUR), query="SELECT * FROM late_predictions")
    assert "late-1" not in {f["id"] for f in aporia.fragments(MODEL, "v1")}
    summary = sync(
        (start + HOUR, start + 2 * HOUR), query="SELECT * FROM late_predictions", lookback=timedelta(minutes=15)
    )
    assert summary["rows_read"] == 6 + 2  # the hour, the last 15 minutes of the one before (incl. the late row)
    assert "late-1" in {f["id"] for f in aporia.fragments(MODEL, "v1")}


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (
            "2026-11-20T01:00:00+00:00",
            "2026-11-20T01:00:00+00:00",
            "The sync window is empty (start == end == 2026-11-20T01:00:00+00:00): Airflow's default cron timetable "
            "gives zero-width data intervals; schedule the DAG with CronDataIntervalTimetable or a timedelta, or pass "
            "window_start and window_end explicitly.",
        ),
        (
            "2026-11-20T02:00:00+00:00",
            "2026-11-20T01:00:00+00:00",
            "window_end 2026-11-20T01:00:00+00:00 is before window_start 2026-11-20T02:00:00+00:00; swap them.",
        ),
    ],
)
def test_empty_and_reversed_windows_fail_with_the_fix(
    version: str, aporia: AporiaProbe, start: str, end: str, message: str
) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync((datetime.fromisoformat(start), datetime.fromisoformat(end)))
    assert str(error.value) == message
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_validate_only_reads_and_counts_but_sends_nothing(version: str, aporia: AporiaProbe, seeded: SeedPlan) -> None:
    summary = sync((seeded.start, seeded.start + 2 * HOUR), validate_only=True)
    assert (summary["rows_read"], summary["fragments_sent"], summary["dry_run"]) == (12, 0, True)
    assert aporia.count(MODEL, "v1")["total"] == 0


@pytest.fixture
def bad_rows(stack: LocalStack) -> str:
    """A copy of the first hour with four invalid rows: NaN amount, short tensor, null id, a repeated id."""
    redshift_sql(stack, "DROP TABLE IF EXISTS bad_predictions")
    redshift_sql(
        stack,
        "CREATE TABLE bad_predictions AS SELECT * FROM model_predictions "
        "WHERE prediction_timestamp < '2026-11-20 01:00:00+00'",
    )
    redshift_sql(stack, "ALTER TABLE bad_predictions ALTER COLUMN prediction_id DROP NOT NULL")
    redshift_sql(stack, "UPDATE bad_predictions SET amount = 'NaN' WHERE prediction_id = 'pred-0000000001'")
    redshift_sql(
        stack, "UPDATE bad_predictions SET embeddings = json_parse('[1.0]') WHERE prediction_id = 'pred-0000000002'"
    )
    redshift_sql(stack, "UPDATE bad_predictions SET prediction_id = NULL WHERE prediction_id = 'pred-0000000003'")
    redshift_sql(
        stack, "UPDATE bad_predictions SET prediction_id = 'pred-0000000005' WHERE prediction_id = 'pred-0000000004'"
    )
    return "SELECT * FROM bad_predictions"


def test_invalid_rows_fail_the_sync_before_anything_is_sent(version: str, aporia: AporiaProbe, bad_rows: str) -> None:
    window = (datetime(2026, 11, 20, tzinfo=timezone.utc), datetime(2026, 11, 20, 1, tzinfo=timezone.utc))
    with pytest.raises(AirflowFailException) as error:
        sync(window, query=bad_rows, actuals=None, actuals_timestamp_column=None)
    message = str(error.value)
    assert message.startswith("5 invalid rows of 6 (e.g. ")
    assert message.endswith(f") in the window of {MODEL} v1{NOTHING_SENT}")
    for fragment in (
        "pred-0000000001: amount: not a finite number",
        "pred-0000000002: embeddings: expected a tensor of shape [768]",
        "prediction_id is null",
        "duplicate prediction_id pred-0000000005",
    ):
        assert fragment in message
    assert message.endswith("; nothing was sent: fix the rows or the mapping, or pass on_invalid_rows='skip'.")
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_invalid_rows_are_skipped_and_counted_when_asked(version: str, aporia: AporiaProbe, bad_rows: str) -> None:
    window = (datetime(2026, 11, 20, tzinfo=timezone.utc), datetime(2026, 11, 20, 1, tzinfo=timezone.utc))
    summary = sync(window, query=bad_rows, actuals=None, actuals_timestamp_column=None, on_invalid_rows="skip")
    assert (summary["rows_read"], summary["rows_rejected"], summary["fragments_sent"]) == (6, 5, 1)
    assert len(summary["rejected_examples"]) == 5
    assert {f["id"] for f in aporia.fragments(MODEL, "v1")} == {"pred-0000000000"}


def test_a_missing_column_fails_before_any_data_moves(version: str, aporia: AporiaProbe, seeded: SeedPlan) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync((seeded.start, seeded.start + HOUR), features={"amount": "amount_usd"})
    assert str(error.value).startswith(
        f"The query for {MODEL} v1 has no column 'amount_usd' needed for features; it returns prediction_id, "
    )
    assert aporia.count(MODEL, "v1")["total"] == 0
