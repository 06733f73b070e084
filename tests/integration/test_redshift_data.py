"""Redshift data as users have it: JSON-text vectors, timestamp types, SQL as people write it, failure classes.

Each case syncs a small table of its own, copied from the seeded `model_predictions`, and asserts either the
rows Aporia holds afterwards or the exact one-sentence failure (and whether Airflow would retry it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from aporia_local.seed import SeedPlan
from aporia_local.stack import DATABASE, LocalStack
from aporia_provider.exceptions import SyncFailed
from aporia_provider.extraction.options import SPARK_MIN_ROWS
from tests.helpers import (
    MODEL,
    NOTHING_SENT,
    SEED_START,
    AporiaProbe,
    assert_delivered_exactly,
    redshift_sql,
    row_id,
    sync_predictions,
)
from tests.helpers import sync as sync_both

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")
HOUR = timedelta(hours=1)
T0 = SEED_START
FIRST_HOUR = (T0, T0 + HOUR)


def sync(window: tuple[datetime, datetime] = FIRST_HOUR, **kwargs: Any) -> dict[str, Any]:
    return sync_predictions(window, **kwargs)


@pytest.fixture(scope="module")
def json_rows(stack: LocalStack, seeded: SeedPlan) -> Iterator[str]:
    """The first day with embeddings as JSON text (what SUPER and JSON-holding VARCHAR give over JDBC)."""
    redshift_sql(stack, "DROP TABLE IF EXISTS json_rows")
    redshift_sql(
        stack,
        "CREATE TABLE json_rows AS SELECT prediction_id, prediction_timestamp, raw_text, amount, owner, is_new, "
        "to_jsonb(embeddings)::text AS embeddings, will_buy_insurance, proba FROM model_predictions "
        "WHERE prediction_timestamp < %s",
        (T0 + 24 * HOUR,),
    )
    for value, n in (
        ("[0.1, 0.2", 1),  # hour 0: malformed
        ("[0.5, 0.25]", 7),  # hour 1: valid JSON, too short
        ('["a"' + ", 0.5" * 767 + "]", 13),  # hour 2: a non-number
        ("[1e400" + ", 0.5" * 767 + "]", 19),  # hour 3: parses to infinity
        ("null", 25),  # hour 4: JSON null is a missing value
    ):
        redshift_sql(stack, "UPDATE json_rows SET embeddings = %s WHERE prediction_id = %s", (value, row_id(n)))
    redshift_sql(stack, "UPDATE json_rows SET embeddings = NULL WHERE prediction_id = %s", (row_id(26),))
    yield "SELECT * FROM json_rows"
    redshift_sql(stack, "DROP TABLE IF EXISTS json_rows")


def hour(h: int) -> tuple[datetime, datetime]:
    return (T0 + h * HOUR, T0 + (h + 1) * HOUR)


def _rejected(n: int, problem: str) -> str:
    return (
        f"1 invalid row of 6 (e.g. predictions {row_id(n)}: embeddings: {problem}) in the window of {MODEL} v1"
        f"{NOTHING_SENT}"
    )


@pytest.mark.parametrize(
    ("h", "message"),
    [
        pytest.param(0, _rejected(1, "not JSON holding a list of numbers"), id="malformed"),
        pytest.param(1, _rejected(7, "expected a tensor of shape [768]"), id="short"),
        pytest.param(2, _rejected(13, "not JSON holding a list of numbers"), id="non-numeric"),
        pytest.param(3, _rejected(19, "holds a null or non-finite element"), id="non-finite"),
    ],
)
def test_json_text_that_does_not_fit_is_an_invalid_row(
    version: str, aporia: AporiaProbe, json_rows: str, h: int, message: str
) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync(hour(h), query=json_rows)
    assert str(error.value) == message
    assert aporia.count(MODEL, "v1")["total"] == 0
    # validate_only agrees with the real run.
    with pytest.raises(AirflowFailException) as checked:
        sync(hour(h), query=json_rows, validate_only=True)
    assert str(checked.value) == message


def test_json_text_is_delivered_as_numbers_and_null_stays_missing(
    version: str, aporia: AporiaProbe, json_rows: str, stack: LocalStack
) -> None:
    summary = sync(hour(4), query=json_rows)
    assert (summary["rows_read"], summary["rows_rejected"], summary["fragments_sent"]) == (6, 0, 6)
    delivered = {f["id"]: f for f in aporia.fragments(MODEL, "v1")}
    seeded = redshift_sql(
        stack,
        "SELECT prediction_id, to_jsonb(embeddings)::text FROM model_predictions WHERE prediction_id IN (%s, %s)",
        (row_id(24), row_id(27)),
    )
    for prediction_id, embeddings in seeded:
        assert delivered[prediction_id]["features"]["embeddings"] == pytest.approx(json.loads(embeddings))
    assert "embeddings" not in delivered[row_id(25)]["features"]  # JSON null
    assert "embeddings" not in delivered[row_id(26)]["features"]  # SQL NULL


def test_select_expr_redefining_a_column_replaces_it(
    version: str, aporia: AporiaProbe, json_rows: str, stack: LocalStack
) -> None:
    summary = sync(
        hour(5),
        query=json_rows,
        select_expr=["*", "from_json(embeddings, 'array<double>') AS embeddings", "amount * 2 AS amount"],
    )
    assert (summary["rows_read"], summary["fragments_sent"]) == (6, 6)
    [doubled] = [f for f in aporia.fragments(MODEL, "v1") if f["id"] == row_id(30)]
    [[amount]] = redshift_sql(stack, "SELECT amount FROM json_rows WHERE prediction_id = %s", (row_id(30),))
    assert doubled["features"]["amount"] == pytest.approx(amount * 2)


def test_select_expr_as_a_string_is_one_expression(version: str, aporia: AporiaProbe) -> None:
    summary = sync(select_expr="*")
    assert summary["fragments_sent"] == 6


def test_a_date_column_serves_daily_windows_only(version: str, aporia: AporiaProbe) -> None:
    by_day = "SELECT *, prediction_timestamp::date AS day FROM model_predictions"
    with pytest.raises(AirflowFailException) as error:
        sync(hour(0), query=by_day, timestamp_column="day")
    assert str(error.value) == (
        "timestamp_column 'day' is a DATE, which only serves windows that start and end at midnight UTC; schedule "
        "the sync daily (e.g. CronDataIntervalTimetable('0 0 * * *', timezone='UTC')) or name a TIMESTAMP column."
    )
    # A whole day is fine: every row of the day, once.
    summary = sync((T0, T0 + 24 * HOUR), query=by_day, timestamp_column="day")
    assert (summary["rows_read"], summary["fragments_sent"]) == (24 * 6, 24 * 6)


def test_a_varchar_timestamp_is_refused_with_the_cast(version: str, aporia: AporiaProbe) -> None:
    as_text = "SELECT *, to_char(prediction_timestamp, 'YYYY-MM-DD HH24:MI:SS') AS stamp_text FROM model_predictions"
    with pytest.raises(AirflowFailException) as error:
        sync(query=as_text, timestamp_column="stamp_text")
    assert str(error.value) == (
        "timestamp_column 'stamp_text' is string, but the window is compared as time; select it as a TIMESTAMP, "
        "e.g. CAST(stamp_text AS TIMESTAMP) AS stamp_text in the query."
    )
    # ... and the cast it names works.
    cast = f"SELECT *, CAST(stamp_text AS TIMESTAMP) AS stamped FROM ({as_text}) AS t"
    assert sync(query=cast, timestamp_column="stamped")["rows_read"] == 6


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("SELECT * FROM model_predictions -- the serving table", id="trailing-line-comment"),
        pytest.param("/* serving */ SELECT * FROM model_predictions /* all of it */;", id="block-comments"),
        pytest.param("SELECT * FROM model_predictions WHERE raw_text <> 'a;b';", id="semicolon-in-literal"),
        pytest.param("SELECT * FROM model_predictions; -- done", id="semicolon-then-comment"),
    ],
)
def test_query_text_as_people_write_it(version: str, aporia: AporiaProbe, query: str) -> None:
    assert sync(query=query)["fragments_sent"] == 6


def test_a_sql_error_is_not_retried_and_names_the_query(version: str, aporia: AporiaProbe) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync(query="SELECT * FROM model_predictions WHERE")
    assert str(error.value).startswith("Redshift refused the query: syntax error")
    assert str(error.value).endswith(f"; fix query (syncing {MODEL} v1).")


def test_a_missing_jdbc_driver_is_not_retried(version: str, aporia: AporiaProbe) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync(jdbc_driver="redshift", spark_min_rows=0)
    assert str(error.value) == (
        "The JDBC driver com.amazon.redshift.jdbc42.Driver is not on Spark's class path (while reading the window "
        f"from Redshift for {MODEL} v1); add its jar with spark_conf {{'spark.jars': '/path/driver.jar'}} or "
        "spark.jars.packages, or install it on the cluster."
    )


def test_a_bad_spark_setting_is_not_retried(version: str, aporia: AporiaProbe) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync(spark_conf={"spark.sql.shuffle.partitions": "many"}, spark_min_rows=0)
    assert str(error.value).startswith("Spark did not start on Spark master local[*]: ")
    assert str(error.value).endswith("; check spark_conf and the Spark connection (spark_conn_id).")


@pytest.mark.parametrize("spark_min_rows", [0, SPARK_MIN_ROWS], ids=["spark", "in-task"])
def test_a_connection_cut_is_retried(version: str, aporia: AporiaProbe, stack: LocalStack, spark_min_rows: int) -> None:
    import signal

    stack.processes["redshift"].send_signal(signal.SIGUSR2)  # cut the next large result part-way
    with pytest.raises(SyncFailed):
        sync((T0, T0 + 24 * HOUR), spark_min_rows=spark_min_rows)
    assert aporia.count(MODEL, "v1")["total"] == 0


@pytest.mark.parametrize("spark_min_rows", [0, SPARK_MIN_ROWS], ids=["spark", "in-task"])
def test_windows_are_compared_in_utc_whatever_the_session_time_zone(
    version: str, aporia: AporiaProbe, stack: LocalStack, spark_min_rows: int
) -> None:
    """A database (or user) whose sessions default to another zone must not shift the window's bounds."""
    window = (T0 + 30 * HOUR, T0 + 33 * HOUR)
    redshift_sql(stack, f"ALTER DATABASE {DATABASE} SET timezone TO 'America/New_York'")
    try:
        sync_both(window, spark_min_rows=spark_min_rows)
    finally:
        redshift_sql(stack, f"ALTER DATABASE {DATABASE} RESET timezone")
    assert_delivered_exactly(stack, aporia, *window)
