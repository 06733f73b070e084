"""Tables as users keep them, on the local stack: one table for every model version (a version column), wide tables
mapped by column prefix, and the drift between a table and its schema noticed before any row is read."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from aporia_local.stack import LocalStack
from aporia_provider.compat import AirflowFailException
from aporia_provider.operators.aporia import AporiaCreateModelOperator, AporiaCreateModelVersionOperator
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator
from tests.helpers import AporiaProbe, redshift_sql

pytestmark = pytest.mark.usefixtures("airflow_env")
MODEL = "ab-propensity"
T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
WINDOW = (T0, T0 + timedelta(hours=1))
CHAMPION = {"amount": "numeric", "age": "numeric"}
CHALLENGER = CHAMPION | {"income": "numeric"}  # the challenger reads one feature more
PREDICTIONS = {"will_buy": "boolean"}
# Row n of the table: its version, its minute in the window (60 and later: after it), whether its actual arrived.
ROWS = [
    ("champion", 0, True),
    ("challenger", 5, True),
    ("champion", 10, False),
    ("champion", 20, True),
    ("challenger", 30, False),
    ("challenger", 40, True),
    ("champion", 50, False),
    ("champion", 70, True),  # after the window
    ("challenger", 80, False),  # after the window
]


@pytest.fixture
def ab_table(stack: LocalStack, aporia: AporiaProbe) -> Iterator[str]:
    """The model with its champion and challenger in Aporia, and one table of both versions' predictions."""
    AporiaCreateModelOperator(task_id="model", model_id=MODEL).execute({})
    for version, features in (("champion", CHAMPION), ("challenger", CHALLENGER)):
        AporiaCreateModelVersionOperator(
            task_id=version,
            model_id=MODEL,
            model_version=version,
            model_type="binary",
            features=features,
            predictions=PREDICTIONS,
        ).execute({})
    redshift_sql(stack, "DROP TABLE IF EXISTS ab_predictions")
    redshift_sql(
        stack,
        "CREATE TABLE ab_predictions (prediction_id VARCHAR(32), predicted_at TIMESTAMPTZ, model_version "
        "VARCHAR(32), f_amount FLOAT8, f_age FLOAT8, f_income FLOAT8, p_will_buy BOOLEAN, bought BOOLEAN, "
        "bought_at TIMESTAMPTZ)",
    )
    for n, (version, minute, arrived) in enumerate(ROWS):
        insert_row(stack, f"ab-{n}", version, minute, arrived)
    yield "ab_predictions"
    redshift_sql(stack, "DROP TABLE IF EXISTS ab_predictions")


def insert_row(stack: LocalStack, prediction_id: str, version: str, minute: int, arrived: bool) -> None:
    moment = T0 + timedelta(minutes=minute)
    redshift_sql(
        stack,
        "INSERT INTO ab_predictions VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            prediction_id,
            moment,
            version,
            100.0 + minute,
            30.0,
            5000.0,
            minute % 20 == 0,
            True if arrived else None,
            moment + timedelta(minutes=5) if arrived else None,
        ),
    )


def ab_sync(table: str, **kwargs: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "task_id": "sync",
        "model_id": MODEL,
        "table": table,
        "id_column": "prediction_id",
        "timestamp_column": "predicted_at",
        "model_version_column": "model_version",
        "model_versions": ["champion", "challenger"],
        "features_prefix": "f_",
        "predictions_prefix": "p_",
        "actuals": {"will_buy": "bought"},
        "actuals_timestamp_column": "bought_at",
        "window_start": WINDOW[0].isoformat(),
        "window_end": WINDOW[1].isoformat(),
    }
    result: dict[str, Any] = AporiaSyncOperator(**(arguments | kwargs)).execute({})
    return result


def expected(version: str) -> tuple[set[str], set[str]]:
    """The ids of the version's predictions in the window, and of its actuals that arrived in it."""
    predicted = {f"ab-{n}" for n, (v, minute, _) in enumerate(ROWS) if v == version and minute < 60}
    arrived = {f"ab-{n}" for n, (v, minute, a) in enumerate(ROWS) if v == version and a and minute + 5 < 60}
    return predicted, arrived


READERS = pytest.mark.parametrize("spark_min_rows", [None, 0], ids=["in-task", "spark"])


@READERS
def test_two_versions_from_one_table_in_one_read(
    ab_table: str, aporia: AporiaProbe, caplog: pytest.LogCaptureFixture, spark_min_rows: int | None
) -> None:
    with caplog.at_level(logging.INFO):
        result = ab_sync(ab_table, spark_min_rows=spark_min_rows)
    for version, features in (("champion", CHAMPION), ("challenger", CHALLENGER)):
        stored = aporia.fragments(MODEL, version)
        ids = [f["id"] for f in stored]
        assert len(ids) == len(set(ids)), "a prediction is stored twice"
        predicted, arrived = expected(version)
        assert {f["id"] for f in stored if f["predictions"]} == predicted, f"{version}: predictions lost or extra"
        assert {f["id"] for f in stored if f["actuals"]} == arrived, f"{version}: actuals lost or extra"
        for fragment in stored:
            if fragment["features"]:  # each version's own schema: only the challenger reads income
                assert set(fragment["features"]) == set(features)
        counts = result["versions"][version]
        assert (counts["rows_read"], counts["fragments_sent"], counts["actuals_sent"]) == (
            len(predicted),
            len(predicted),
            len(arrived),
        )
        assert counts["other_version_rows"] == 0 and counts["logged_warnings"] == []
    assert result["model_versions"] == ["champion", "challenger"]
    messages = [r.getMessage() for r in caplog.records]
    # Each source is read once for both versions.
    how = (
        "in this task: 7 rows"
        if spark_min_rows is None
        else "with Spark: 7 rows, spark_min_rows=0 sends every window to Spark"
    )
    assert (
        messages.count(f"Reading predictions of {MODEL} champion, challenger {how}, one read for the 2 versions.") == 1
    )
    assert len([m for m in messages if m.startswith("Reading actuals of ")]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@READERS
def test_an_unknown_versions_rows_are_rejected_and_kept(
    ab_table: str, stack: LocalStack, aporia: AporiaProbe, tmp_path: Path, spark_min_rows: int | None
) -> None:
    insert_row(stack, "ab-shadow-1", "shadow", 15, False)
    insert_row(stack, "ab-shadow-2", "shadow", 25, False)
    with pytest.raises(AirflowFailException) as raised:
        ab_sync(ab_table, spark_min_rows=spark_min_rows)
    assert str(raised.value) == (
        f"2 rows of the window of {MODEL} champion, challenger name a version this sync does not serve (e.g. "
        "predictions ab-shadow-1: model_version names 'shadow', which model_versions does not list; predictions "
        "ab-shadow-2: model_version names 'shadow', which model_versions does not list); nothing was sent: add the "
        "version to model_versions, or pass on_unknown_version='ignore'."
    )
    assert aporia.count(MODEL, "champion")["total"] == aporia.count(MODEL, "challenger")["total"] == 0
    result = ab_sync(
        ab_table, on_invalid_rows="skip", rejected_rows_path=f"file://{tmp_path}", spark_min_rows=spark_min_rows
    )
    assert [result["versions"][v]["other_version_rows"] for v in ("champion", "challenger")] == [2, 2]
    span = f"{WINDOW[0].isoformat()}--{WINDOW[1].isoformat()}"
    kept = tmp_path / MODEL / "other-versions" / span / "try-1.jsonl"
    assert result["other_versions_rejected_rows_file"] == f"file://{kept}"
    assert sorted((json.loads(line) for line in kept.read_text().splitlines()), key=lambda row: row["id"]) == [
        {
            "source": "predictions",
            "id": f"ab-shadow-{n}",
            "column": "model_version",
            "reason": "model_version names 'shadow', which model_versions does not list",
            "value": "shadow",
        }
        for n in (1, 2)
    ]
    assert {f["id"] for f in aporia.fragments(MODEL, "champion") if f["predictions"]} == expected("champion")[0]
    warning = result["versions"]["champion"]["logged_warnings"]
    assert warning == result["versions"]["challenger"]["logged_warnings"]  # the sync's, so each version's
    assert warning[0].endswith("; skipping them as on_invalid_rows='skip' asks.")
    # Left out and counted, not kept, when the sync is told to ignore them: no warning, no file.
    result = ab_sync(
        ab_table,
        on_unknown_version="ignore",
        rejected_rows_path=f"file://{tmp_path}/ignored",
        spark_min_rows=spark_min_rows,
    )
    assert result["versions"]["challenger"]["other_version_rows"] == 2
    assert result["versions"]["challenger"]["logged_warnings"] == []
    assert "other_versions_rejected_rows_file" not in result


def test_a_failing_version_is_named_and_nothing_is_sent(ab_table: str, stack: LocalStack, aporia: AporiaProbe) -> None:
    redshift_sql(stack, "UPDATE ab_predictions SET f_income = 'NaN' WHERE prediction_id = 'ab-1'")
    with pytest.raises(AirflowFailException) as raised:
        ab_sync(ab_table)
    assert str(raised.value) == (
        f"1 invalid row of 5 (e.g. predictions ab-1: income: not a finite number) in the window of {MODEL} "
        "challenger; nothing was sent: fix the rows or the mapping, or pass on_invalid_rows='skip'."
    )
    assert aporia.count(MODEL, "champion")["total"] == 0


def test_drift_is_a_warning_before_any_row_is_read(
    ab_table: str, stack: LocalStack, aporia: AporiaProbe, caplog: pytest.LogCaptureFixture
) -> None:
    redshift_sql(stack, "ALTER TABLE ab_predictions ADD COLUMN f_tenure FLOAT8")
    with caplog.at_level(logging.INFO):
        result = ab_sync(ab_table)
    messages = [r.getMessage() for r in caplog.records]
    drift = (
        f"Schema drift in the query for {MODEL} champion, challenger: columns no field of the version schema reads: "
        "f_tenure; a new model version may be due (or a mapping is stale)."
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [drift]
    reading = next(i for i, m in enumerate(messages) if m.startswith("Reading predictions"))
    assert messages.index(drift) < reading
    assert result["versions"]["champion"]["logged_warnings"] == [drift]
    assert aporia.count(MODEL, "champion")["total"] == len(expected("champion")[0])


@pytest.mark.parametrize("spark_min_rows", [None, 0], ids=["in-task", "spark"])
def test_a_200_column_table_is_mapped_by_its_prefix(
    stack: LocalStack, aporia: AporiaProbe, spark_min_rows: int | None
) -> None:
    features = {f"x{i:03d}": "numeric" for i in range(200)}
    AporiaCreateModelOperator(task_id="model", model_id="wide").execute({})
    AporiaCreateModelVersionOperator(
        task_id="v",
        model_id="wide",
        model_version="v1",
        model_type="binary",
        features=features,
        predictions={"score": "numeric"},
    ).execute({})
    columns = ", ".join(f"feat_{name} FLOAT8" for name in features)
    redshift_sql(stack, "DROP TABLE IF EXISTS wide_predictions")
    redshift_sql(stack, f"CREATE TABLE wide_predictions (id VARCHAR(16), at TIMESTAMPTZ, score FLOAT8, {columns})")
    values = ", ".join(["%s"] * 203)
    for n in range(3):
        row = (f"w-{n}", T0 + timedelta(minutes=n), 0.5, *(float(n * 1000 + i) for i in range(200)))
        redshift_sql(stack, f"INSERT INTO wide_predictions VALUES ({values})", row)
    summary = AporiaSyncOperator(
        task_id="sync",
        model_id="wide",
        model_version="v1",
        table="wide_predictions",
        id_column="id",
        timestamp_column="at",
        features_prefix="feat_",
        spark_min_rows=spark_min_rows,
        num_partitions=1,
        window_start=WINDOW[0].isoformat(),
        window_end=WINDOW[1].isoformat(),
    ).execute({})
    assert (summary["fragments_sent"], summary["logged_warnings"]) == (3, [])
    stored = {f["id"]: f for f in aporia.fragments("wide", "v1")}
    assert set(stored) == {"w-0", "w-1", "w-2"}
    for n in range(3):
        assert stored[f"w-{n}"]["features"] == {f"x{i:03d}": float(n * 1000 + i) for i in range(200)}
    redshift_sql(stack, "DROP TABLE wide_predictions")


def test_a_prefix_matching_nothing_is_refused_before_reading(ab_table: str) -> None:
    with pytest.raises(AirflowFailException) as raised:
        ab_sync(ab_table, raw_inputs_prefix="raw_")
    assert re.fullmatch(
        rf"raw_inputs_prefix 'raw_' matches no column of the query for {MODEL} champion; it returns prediction_id, "
        r".*, bought_at; give the prefix the columns start with, or leave raw_inputs_prefix unset\.",
        str(raised.value),
    )


def test_actuals_from_their_own_query_follow_the_version_it_names(ab_table: str, aporia: AporiaProbe) -> None:
    actuals_query = f"SELECT prediction_id, model_version, bought, bought_at FROM {ab_table}"
    result = ab_sync(ab_table, actuals_query=actuals_query)
    for version in ("champion", "challenger"):
        arrived = {f["id"] for f in aporia.fragments(MODEL, version) if f["actuals"]}
        assert arrived == expected(version)[1]
        assert result["versions"][version]["actuals_sent"] == len(arrived)
    with pytest.raises(AirflowFailException) as raised:
        ab_sync(ab_table, actuals_query=f"SELECT prediction_id, bought, bought_at FROM {ab_table}")
    assert str(raised.value) == (
        f"The query for {MODEL} champion, challenger has no column 'model_version' named by model_version_column; "
        "it returns prediction_id, bought, bought_at; add the column to the query or select_expr, or set "
        "model_version_column to an existing column."
    )


def test_validate_only_counts_each_version_and_sends_nothing(ab_table: str, aporia: AporiaProbe) -> None:
    result = ab_sync(ab_table, validate_only=True)
    assert [result["versions"][v]["predictions_in_window"] for v in ("champion", "challenger")] == [4, 3]
    assert [result["versions"][v]["fragments_sent"] for v in ("champion", "challenger")] == [0, 0]
    assert aporia.count(MODEL, "champion")["total"] == aporia.count(MODEL, "challenger")["total"] == 0
