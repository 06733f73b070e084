"""Bad input: every case fails with one sentence naming the field and the fix, and sends nothing early.

Each case asserts the exact message. Data cases sync small tables of their own, copied from the seeded
`model_predictions`; connection cases use variants of the stack's connections set as AIRFLOW_CONN_*.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import insurance_model as example
import pytest

from aporia_local.aws import REGION
from aporia_local.seed import SeedPlan
from aporia_local.stack import MASTER_USER, REJECTS_BUCKET, LocalStack
from aporia_provider.compat import AirflowException, AirflowFailException
from aporia_provider.datasources import JDBCDataSource
from aporia_provider.exceptions import AporiaError, DataSourceError, SyncFailed
from aporia_provider.operators.aporia import (
    AporiaConnectServingOperator,
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
)
from tests.helpers import (
    MODEL,
    NOTHING_SENT,
    PREDICTIONS_ONLY,
    SEED_START,
    AporiaProbe,
    invalid_rows,
    redshift_sql,
    row_id,
    sync_operator,
    sync_predictions,
    version_args,
)

pytestmark = pytest.mark.usefixtures("airflow_env", "seeded")
HOUR = timedelta(hours=1)
T0 = SEED_START
FIRST_HOUR = (T0, T0 + HOUR)
SEED_COLUMNS = (
    "prediction_id, prediction_timestamp, raw_text, amount, owner, is_new, embeddings, will_buy_insurance, proba, "
    "did_buy_insurance, actual_timestamp"
)


def sync(window: tuple[datetime, datetime] = FIRST_HOUR, **kwargs: Any) -> dict[str, Any]:
    return sync_predictions(window, **kwargs)


def hour(h: int) -> tuple[datetime, datetime]:
    return (T0 + h * HOUR, T0 + (h + 1) * HOUR)


def connection(stack: LocalStack, name: str, **changes: Any) -> str:
    """An AIRFLOW_CONN_* JSON: the stack's connection `name` with fields changed (None removes one)."""
    base = dict(stack.connections()[name])
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return json.dumps(base)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def model_predictions_rows(stack: LocalStack) -> int:
    """Rows in model_predictions; fails if the table is gone."""
    [[count]] = redshift_sql(stack, "SELECT count(*) FROM model_predictions")
    return int(count)


# ----------------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"features": {"amount": "money"}},
            "The feature 'amount' has unknown type 'money'; use one of numeric, categorical, string, boolean, "
            "datetime, vector, text, dict, tensor.",
            id="unknown-field-type",
        ),
        pytest.param(
            {"predictions": {"proba": "probability"}},
            "The prediction 'proba' has unknown type 'probability'; use one of numeric, categorical, string, "
            "boolean, datetime, vector, text, dict, tensor.",
            id="unknown-prediction-type",
        ),
        pytest.param(
            {"features": {}, "predictions": {}, "raw_inputs": {}},
            "The schema is empty; give at least one feature and one prediction, e.g. "
            'features={"amount": "numeric"}, predictions={"proba": "numeric"}.',
            id="empty-schema",
        ),
        pytest.param(
            {"predictions": {}},
            'The schema has no predictions; add one, e.g. predictions={"proba": "numeric"}.',
            id="features-without-predictions",
        ),
        pytest.param(
            {"model_type": "clustering"},
            "model_type 'clustering' is not supported; use one of regression, binary, multiclass, multi-label, "
            "ranking.",
            id="unknown-model-type",
        ),
        pytest.param(
            {"features": {"embeddings": {"type": "tensor"}}},
            "The feature 'embeddings' is a tensor without valid dimensions; declare it as "
            '{"type": "tensor", "dimensions": [768]} with positive integer sizes.',
            id="tensor-without-dimensions",
        ),
        pytest.param(
            {"features": {"embeddings": {"type": "tensor", "dimensions": [0]}}},
            "The feature 'embeddings' is a tensor without valid dimensions; declare it as "
            '{"type": "tensor", "dimensions": [768]} with positive integer sizes.',
            id="tensor-with-zero-dimension",
        ),
        pytest.param(
            {"features": {"embeddings": {"type": "tensor", "dimensions": [16, -2]}}},
            "The feature 'embeddings' is a tensor without valid dimensions; declare it as "
            '{"type": "tensor", "dimensions": [768]} with positive integer sizes.',
            id="tensor-with-negative-dimension",
        ),
    ],
)
def test_bad_schema_fails_and_creates_no_version(aporia: AporiaProbe, changes: dict[str, Any], message: str) -> None:
    AporiaCreateModelOperator(task_id="model", model_id=MODEL).execute({})
    with pytest.raises(AirflowFailException) as error:
        AporiaCreateModelVersionOperator(task_id="version", model_id=MODEL, **version_args(**changes)).execute({})
    assert str(error.value) == message
    assert aporia.get(f"/v1beta/models/{MODEL}/versions") == []


# ----------------------------------------------------------------------------------------- rows


@pytest.fixture(scope="module")
def bad_rows(stack: LocalStack, seeded: SeedPlan) -> Iterator[str]:
    """Seven seeded hours, one invalid row in each: the hour says which case it serves."""
    redshift_sql(stack, "DROP TABLE IF EXISTS bad_input_rows")
    redshift_sql(
        stack,
        "CREATE TABLE bad_input_rows AS SELECT * FROM model_predictions WHERE prediction_timestamp < %s",
        (T0 + 7 * HOUR,),
    )
    for statement, n in (
        # SUPER is jsonb in the stand-in: `- 767` drops the last of the 768 elements.
        ("UPDATE bad_input_rows SET embeddings = embeddings - 767 WHERE prediction_id = %s", 2),  # hour 0
        ("UPDATE bad_input_rows SET prediction_id = NULL WHERE prediction_id = %s", 8),  # hour 1
        (f"UPDATE bad_input_rows SET prediction_id = '{row_id(14)}' WHERE prediction_id = %s", 13),  # hour 2
        ("UPDATE bad_input_rows SET amount = 'NaN' WHERE prediction_id = %s", 19),  # hour 3
        ("UPDATE bad_input_rows SET proba = 'Infinity' WHERE prediction_id = %s", 25),  # hour 4
        ("UPDATE bad_input_rows SET amount = '-Infinity' WHERE prediction_id = %s", 31),  # hour 5
        # JSON has no NaN; 1e400 is a valid JSON number beyond any double (it parses to infinity).
        (
            "UPDATE bad_input_rows SET embeddings = jsonb_set(embeddings, '{4}', '1e400') WHERE prediction_id = %s",
            37,
        ),  # hour 6
    ):
        redshift_sql(stack, statement, (row_id(n),))
    yield "SELECT * FROM bad_input_rows"
    redshift_sql(stack, "DROP TABLE IF EXISTS bad_input_rows")


def _rejected(count: int, examples: str) -> str:
    return f"{invalid_rows(count)} of 6 (e.g. {examples}) in the window of {MODEL} v1{NOTHING_SENT}"


@pytest.mark.parametrize(
    ("h", "message"),
    [
        pytest.param(
            0,
            _rejected(1, f"predictions {row_id(2)}: embeddings: expected a tensor of shape [768]"),
            id="tensor-of-wrong-length",
        ),
        pytest.param(1, _rejected(1, "predictions (no id): prediction_id is null"), id="null-id"),
        pytest.param(
            2,
            _rejected(
                2,
                f"predictions {row_id(14)}: duplicate prediction_id {row_id(14)}; "
                f"predictions {row_id(14)}: duplicate prediction_id {row_id(14)}",
            ),
            id="duplicate-ids",
        ),
        pytest.param(3, _rejected(1, f"predictions {row_id(19)}: amount: not a finite number"), id="nan"),
        pytest.param(4, _rejected(1, f"predictions {row_id(25)}: proba: not a finite number"), id="plus-infinity"),
        pytest.param(5, _rejected(1, f"predictions {row_id(31)}: amount: not a finite number"), id="minus-infinity"),
        pytest.param(
            6,
            _rejected(1, f"predictions {row_id(37)}: embeddings: holds a null or non-finite element"),
            id="nan-in-tensor",
        ),
    ],
)
def test_invalid_rows_fail_the_window_and_send_nothing(
    version: str, aporia: AporiaProbe, bad_rows: str, h: int, message: str
) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync(hour(h), query=bad_rows)
    assert str(error.value) == message
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_the_valid_hours_of_the_same_table_do_sync(version: str, aporia: AporiaProbe, bad_rows: str) -> None:
    """Control: the table itself is fine outside the invalid rows, so the failures above are the rows'."""
    summary = sync(hour(0), query=bad_rows, on_invalid_rows="skip")
    assert (summary["rows_read"], summary["rows_rejected"], summary["fragments_sent"]) == (6, 1, 5)
    assert {f["id"] for f in aporia.fragments(MODEL, "v1")} == {row_id(n) for n in range(6)} - {row_id(2)}


# Every invalid row of the seven hours: (id, column at fault, reason), as the rejected-rows file keeps them.
KEPT = sorted(
    [
        (row_id(2), "embeddings", "embeddings: expected a tensor of shape [768]"),
        (None, "prediction_id", "prediction_id is null"),
        (row_id(14), "prediction_id", f"duplicate prediction_id {row_id(14)}"),
        (row_id(14), "prediction_id", f"duplicate prediction_id {row_id(14)}"),
        (row_id(19), "amount", "amount: not a finite number"),
        (row_id(25), "proba", "proba: not a finite number"),
        (row_id(31), "amount", "amount: not a finite number"),
        (row_id(37), "embeddings", "embeddings: holds a null or non-finite element"),
    ],
    key=str,
)


def kept_rows(file: str) -> list[tuple[str | None, str, str]]:
    with open(file.removeprefix("file://")) as lines:
        rows = [json.loads(line) for line in lines]
    assert {row["source"] for row in rows} == {"predictions"}
    return sorted(((row["id"], row["column"], row["reason"]) for row in rows), key=str)


@pytest.mark.parametrize("spark_min_rows", [0, None], ids=["spark", "in-task"])
def test_max_invalid_rows_leaves_them_out_up_to_the_limit_and_keeps_every_one_in_a_file(
    version: str, aporia: AporiaProbe, bad_rows: str, tmp_path: Path, spark_min_rows: int | None
) -> None:
    window = (T0, T0 + 7 * HOUR)
    arguments: dict[str, Any] = {"query": bad_rows, "spark_min_rows": spark_min_rows}
    arguments["rejected_rows_path"] = f"file://{tmp_path}"
    with pytest.raises(AirflowFailException) as error:
        sync(window, max_invalid_rows=7, **arguments)
    assert str(error.value).startswith("8 invalid rows of 42 (e.g. ")
    assert str(error.value).endswith(
        f"in the window of {MODEL} v1; nothing was sent: more than max_invalid_rows=7 allows (7): fix the rows or "
        "the mapping."
    )
    assert aporia.count(MODEL, "v1")["total"] == 0
    summary = sync(window, max_invalid_rows=0.2, **arguments)  # 8 of 42 is under a fifth
    assert (summary["rows_read"], summary["rows_rejected"], summary["fragments_sent"]) == (42, 8, 34)
    assert len(summary["rejected_examples"]) == 5
    span = f"{window[0].isoformat()}--{window[1].isoformat()}"
    assert summary["rejected_rows_file"] == f"file://{tmp_path}/{MODEL}/v1/{span}/try-1.jsonl"
    assert kept_rows(summary["rejected_rows_file"]) == KEPT
    assert aporia.count(MODEL, "v1")["total"] == 34


def test_a_fraction_of_max_invalid_rows_is_taken_of_the_windows_own_predictions_and_actuals_apart(
    version: str, aporia: AporiaProbe, stack: LocalStack
) -> None:
    """Four hours with a two-hour lookback: 24 own predictions (and 12 re-read), 2 own actuals (and 2 re-read)."""
    window, lookback = (T0 + 26 * HOUR, T0 + 30 * HOUR), timedelta(hours=2)
    redshift_sql(stack, "DROP TABLE IF EXISTS fraction_rows")
    redshift_sql(stack, "CREATE TABLE fraction_rows AS SELECT * FROM model_predictions")
    # Row 163 is predicted in the window; row 18 was predicted on the first day and its actual arrives in it.
    redshift_sql(stack, "UPDATE fraction_rows SET amount = 'NaN' WHERE prediction_id = %s", (row_id(163),))
    redshift_sql(stack, "UPDATE fraction_rows SET prediction_id = NULL WHERE prediction_id = %s", (row_id(18),))
    arguments: dict[str, Any] = {
        "query": "SELECT * FROM fraction_rows",
        "actuals": example.ACTUALS,
        "actuals_timestamp_column": example.ACTUALS_TIMESTAMP_COLUMN,
        "lookback": lookback,
    }
    examples = f"predictions {row_id(163)}: amount: not a finite number; actuals (no id): prediction_id is null"
    opening = f"2 invalid rows of 26 (e.g. {examples}) in the window of {MODEL} v1"
    # Of all 40 rows read, 5% would allow 2; of the 2 own actuals it allows none.
    with pytest.raises(AirflowFailException) as error:
        sync(window, max_invalid_rows=0.05, **arguments)
    assert str(error.value) == (
        f"{opening}; nothing was sent: more than max_invalid_rows=0.05 allows (1 of the 24 predictions, 0 of the 2 "
        "actuals): fix the rows or the mapping."
    )
    assert aporia.count(MODEL, "v1")["total"] == 0
    summary = sync(window, max_invalid_rows=0.5, **arguments)
    assert summary["logged_warnings"] == [
        f"{opening}; left out, within max_invalid_rows=0.5 (12 of the 24 predictions, 1 of the 2 actuals)."
    ]
    assert (summary["rows_rejected"], summary["fragments_sent"], summary["actuals_sent"]) == (2, 35, 3)
    assert (summary["predictions_in_window"], summary["actuals_in_window"]) == (23, 1)
    redshift_sql(stack, "DROP TABLE fraction_rows")


def test_rejected_rows_go_to_s3_through_the_aws_connection(
    version: str, aporia: AporiaProbe, bad_rows: str, stack: LocalStack
) -> None:
    import boto3

    settings = stack.settings
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.aws_url,
        region_name=REGION,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
    )
    summary = sync(
        hour(3),
        query=bad_rows,
        on_invalid_rows="fail",
        max_invalid_rows=1,
        rejected_rows_path=f"s3://{REJECTS_BUCKET}/syncs",
    )
    key = f"syncs/{MODEL}/v1/{hour(3)[0].isoformat()}--{hour(3)[1].isoformat()}/try-1.jsonl"
    assert summary["rejected_rows_file"] == f"s3://{REJECTS_BUCKET}/{key}"
    [line] = s3.get_object(Bucket=REJECTS_BUCKET, Key=key)["Body"].read().decode().splitlines()
    assert json.loads(line) == {
        "source": "predictions",
        "id": row_id(19),
        "column": "amount",
        "reason": "amount: not a finite number",
        "value": "nan",
    }


def test_a_window_below_min_rows_fails_in_one_sentence_or_warns(
    version: str, aporia: AporiaProbe, caplog: pytest.LogCaptureFixture
) -> None:
    empty = (T0 - 5 * HOUR, T0 - 4 * HOUR)  # before the seeded days: the upstream job wrote nothing
    with pytest.raises(SyncFailed) as error:
        sync(empty, min_rows=1)
    assert str(error.value) == (
        f"No predictions in the window [{empty[0].isoformat()}, {empty[1].isoformat()}) of {MODEL} v1, fewer than "
        "min_rows=1: check that the upstream job wrote this window's predictions; nothing was sent "
        "(on_low_volume='warn' would send what there is)."
    )
    summary = sync(hour(0), min_rows=7, on_low_volume="warn")  # the hour holds 6
    assert (summary["fragments_sent"], summary["min_rows"], summary["low_volume"]) == (6, 7, True)
    assert f"Only 6 in the window [{hour(0)[0].isoformat()}, {hour(0)[1].isoformat()}) of {MODEL} v1" in caplog.text
    # The warning travels with the summary, to the sync view.
    assert summary["logged_warnings"] == [
        f"Only 6 in the window [{hour(0)[0].isoformat()}, {hour(0)[1].isoformat()}) of {MODEL} v1, fewer than "
        "min_rows=7: check that the upstream job wrote this window's predictions; sending what there is, as "
        "on_low_volume='warn' asks."
    ]
    assert sync(hour(1), min_rows=6)["low_volume"] is False


# ----------------------------------------------------------------------------------------- columns and mappings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"id_column": "pred_id"},
            f"The query for {MODEL} v1 has no column 'pred_id' named by id_column; it returns {SEED_COLUMNS}; "
            "add the column to the query or select_expr, or set id_column to an existing column.",
            id="missing-id-column",
        ),
        pytest.param(
            {"timestamp_column": "pred_ts"},
            f"The query for {MODEL} v1 has no column 'pred_ts' named by timestamp_column; it returns {SEED_COLUMNS}; "
            "add the column to the query or select_expr, or set timestamp_column to an existing column.",
            id="missing-timestamp-column",
        ),
        pytest.param(
            {"features": {"amount": "amount_usd"}},
            f"The query for {MODEL} v1 has no column 'amount_usd' needed for features; it returns {SEED_COLUMNS}; "
            "add the column to the query or select_expr, or map the field to an existing column.",
            id="mapping-to-missing-column",
        ),
        pytest.param(
            {"features": {"amount_usd": "amount"}},
            f"features mapping names 'amount_usd', which is not a feature of {MODEL} v1; "
            "map only fields of the version schema.",
            id="mapping-of-unknown-field",
        ),
        pytest.param(
            {"features": {"amount": "owner"}},
            "Column 'owner' for feature 'amount' is string, but the field is numeric; cast it in the query or with "
            "select_expr to a number.",
            id="mapping-to-column-of-wrong-type",
        ),
    ],
)
def test_columns_are_checked_before_any_data_moves(
    version: str, aporia: AporiaProbe, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync(**kwargs)
    assert str(error.value) == message
    assert aporia.count(MODEL, "v1")["total"] == 0


# ----------------------------------------------------------------------------------------- windows and timestamps


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        pytest.param(
            "2026-11-20T00:00:00",
            "2026-11-20T01:00:00+00:00",
            "window_start 2026-11-20T00:00:00 has no time zone; give a timezone-aware timestamp, "
            "e.g. 2026-11-20T00:00:00+00:00.",
            id="naive-window-start",
        ),
        pytest.param(
            "2026-11-20T00:00:00+00:00",
            "2026-11-20T01:00:00",
            "window_end 2026-11-20T01:00:00 has no time zone; give a timezone-aware timestamp, "
            "e.g. 2026-11-20T00:00:00+00:00.",
            id="naive-window-end",
        ),
        pytest.param(
            "yesterday",
            "2026-11-20T01:00:00+00:00",
            "window_start 'yesterday' is not an ISO-8601 timestamp; use e.g. 2026-11-20T00:00:00+00:00.",
            id="window-start-not-a-timestamp",
        ),
        pytest.param(
            "2026-11-20T02:00:00+00:00",
            "2026-11-20T01:00:00+00:00",
            "window_end 2026-11-20T01:00:00+00:00 is before window_start 2026-11-20T02:00:00+00:00; swap them.",
            id="end-before-start",
        ),
        pytest.param(
            "2026-11-20T01:00:00+00:00",
            "2026-11-20T01:00:00+00:00",
            "The sync window is empty (start == end == 2026-11-20T01:00:00+00:00): Airflow's default cron timetable "
            "gives zero-width data intervals; schedule the DAG with CronDataIntervalTimetable or a timedelta, or pass "
            "window_start and window_end explicitly.",
            id="zero-width-window",
        ),
    ],
)
def test_bad_windows_fail_with_the_fix(version: str, aporia: AporiaProbe, start: str, end: str, message: str) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync_operator(None, window_start=start, window_end=end, **PREDICTIONS_ONLY).execute({})
    assert str(error.value) == message
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_no_window_and_no_data_interval(version: str, aporia: AporiaProbe) -> None:
    operator = sync_operator(None, **PREDICTIONS_ONLY)
    with pytest.raises(AirflowFailException) as error:
        operator.execute({})
    assert str(error.value) == ("window_start is not set; pass it, or run the task in a DAG run with a data interval.")
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_an_aware_window_in_another_zone_is_the_same_utc_window(version: str, aporia: AporiaProbe) -> None:
    """Control for the naive case: +01:00 bounds select the same UTC hour as the +00:00 ones."""
    plus_one = timezone(timedelta(hours=1))
    summary = sync((T0.astimezone(plus_one), (T0 + HOUR).astimezone(plus_one)))
    assert (summary["window_start"], summary["window_end"]) == (T0.isoformat(), (T0 + HOUR).isoformat())
    assert {f["id"] for f in aporia.fragments(MODEL, "v1")} == {row_id(n) for n in range(6)}


def test_a_naive_timestamp_column_is_read_as_utc(version: str, aporia: AporiaProbe, stack: LocalStack) -> None:
    redshift_sql(stack, "DROP TABLE IF EXISTS naive_predictions")
    redshift_sql(
        stack,
        "CREATE TABLE naive_predictions AS SELECT * FROM model_predictions WHERE prediction_timestamp < %s",
        (T0 + 2 * HOUR,),
    )
    redshift_sql(
        stack,
        "ALTER TABLE naive_predictions ALTER COLUMN prediction_timestamp TYPE timestamp without time zone "
        "USING prediction_timestamp AT TIME ZONE 'UTC'",
    )
    summary = sync(hour(1), query="SELECT * FROM naive_predictions")
    assert (summary["rows_read"], summary["fragments_sent"], summary["rows_rejected"]) == (6, 6, 0)
    delivered = {f["id"]: datetime.fromisoformat(f["occurred_at"]) for f in aporia.fragments(MODEL, "v1")}
    assert delivered == {row_id(n): T0 + timedelta(minutes=10 * n) for n in range(6, 12)}
    redshift_sql(stack, "DROP TABLE naive_predictions")


def test_an_empty_window_is_a_summary_of_zeros(version: str, aporia: AporiaProbe) -> None:
    empty = (datetime(2027, 1, 1, tzinfo=timezone.utc), datetime(2027, 1, 1, 1, tzinfo=timezone.utc))
    summary = sync(empty, actuals=example.ACTUALS, actuals_timestamp_column=example.ACTUALS_TIMESTAMP_COLUMN)
    counts = ("rows_read", "fragments_sent", "actuals_read", "actuals_sent", "rows_rejected", "batches", "retries")
    assert {k: summary[k] for k in counts} == dict.fromkeys(counts, 0)
    assert summary["rejected_examples"] == [] and summary["warnings"] == 0
    assert (summary["window_start"], summary["window_end"]) == (empty[0].isoformat(), empty[1].isoformat())
    assert aporia.count(MODEL, "v1")["total"] == 0


# ----------------------------------------------------------------------------------------- SQL injection


PLAIN_COLUMN_FIX = (
    "is not a plain column name; use letters, digits and underscores (rename the column in the query "
    "with AS if needed)."
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"query": None, "table": "model_predictions; DROP TABLE x"},
            "table 'model_predictions; DROP TABLE x' is not a plain table name; use letters, digits and "
            "underscores, or pass a query instead.",
            id="table",
        ),
        pytest.param(
            {"query": None, "table": 'model_predictions" ; DROP TABLE model_predictions; --'},
            "table 'model_predictions\" ; DROP TABLE model_predictions; --' is not a plain table name; use letters, "
            "digits and underscores, or pass a query instead.",
            id="table-with-quote",
        ),
        pytest.param(
            {"query": None, "table": "public.model_predictions.x"},
            "table 'public.model_predictions.x' is not a table name; use table or schema.table.",
            id="table-with-three-parts",
        ),
        pytest.param(
            {"query": "SELECT * FROM model_predictions; DROP TABLE model_predictions"},
            "query holds more than one statement; give a single SELECT (a ';' may only end it).",
            id="query-with-second-statement",
        ),
        pytest.param(
            {
                "actuals": example.ACTUALS,
                "actuals_timestamp_column": example.ACTUALS_TIMESTAMP_COLUMN,
                "actuals_query": "SELECT * FROM model_predictions; DROP TABLE model_predictions",
            },
            "actuals_query holds more than one statement; give a single SELECT (a ';' may only end it).",
            id="actuals-query-with-second-statement",
        ),
        pytest.param(
            {"id_column": "prediction_id; DROP TABLE model_predictions"},
            f"id_column 'prediction_id; DROP TABLE model_predictions' {PLAIN_COLUMN_FIX}",
            id="id-column",
        ),
        pytest.param(
            {"timestamp_column": 'prediction_timestamp" >= now() OR 1=1; DROP TABLE model_predictions; --'},
            "timestamp_column 'prediction_timestamp\" >= now() OR 1=1; DROP TABLE model_predictions; --' "
            f"{PLAIN_COLUMN_FIX}",
            id="timestamp-column",
        ),
        pytest.param(
            {"features": {"amount": 'amount"; DROP TABLE model_predictions; --'}},
            f"features mapping for 'amount' 'amount\"; DROP TABLE model_predictions; --' {PLAIN_COLUMN_FIX}",
            id="features-mapping",
        ),
        pytest.param(
            {
                "actuals": {"will_buy_insurance": "did_buy_insurance FROM x; DROP TABLE model_predictions"},
                "actuals_timestamp_column": example.ACTUALS_TIMESTAMP_COLUMN,
            },
            "actuals mapping for 'will_buy_insurance' 'did_buy_insurance FROM x; DROP TABLE model_predictions' "
            f"{PLAIN_COLUMN_FIX}",
            id="actuals-mapping",
        ),
        pytest.param(
            {"actuals": example.ACTUALS, "actuals_timestamp_column": "actual_timestamp; DROP TABLE model_predictions"},
            f"actuals_timestamp_column 'actual_timestamp; DROP TABLE model_predictions' {PLAIN_COLUMN_FIX}",
            id="actuals-timestamp-column",
        ),
    ],
)
def test_sql_injection_is_refused_and_the_table_survives(
    version: str, aporia: AporiaProbe, stack: LocalStack, kwargs: dict[str, Any], message: str
) -> None:
    rows = model_predictions_rows(stack)
    with pytest.raises(AirflowFailException) as error:
        sync(**kwargs)
    assert str(error.value) == message
    assert aporia.count(MODEL, "v1")["total"] == 0
    assert model_predictions_rows(stack) == rows > 0  # the table is still there, untouched


def test_unicode_ids_are_delivered_intact(version: str, aporia: AporiaProbe, stack: LocalStack) -> None:
    ids = {0: "прогноз-1", 1: "予測-2", 2: "🦄-3 ✓", 3: "quote-\"-'-\\-4"}
    redshift_sql(stack, "DROP TABLE IF EXISTS unicode_predictions")
    redshift_sql(
        stack,
        "CREATE TABLE unicode_predictions AS SELECT * FROM model_predictions WHERE prediction_timestamp < %s",
        (T0 + timedelta(minutes=40),),
    )
    for n, new_id in ids.items():
        redshift_sql(
            stack, "UPDATE unicode_predictions SET prediction_id = %s WHERE prediction_id = %s", (new_id, row_id(n))
        )
    expected = {
        new_id: proba for new_id, proba in redshift_sql(stack, "SELECT prediction_id, proba FROM unicode_predictions")
    }
    summary = sync(query="SELECT * FROM unicode_predictions")
    assert (summary["rows_read"], summary["fragments_sent"]) == (4, 4)
    delivered = {f["id"]: f["predictions"]["proba"] for f in aporia.fragments(MODEL, "v1")}
    assert delivered == expected and set(delivered) == set(ids.values())
    redshift_sql(stack, "DROP TABLE unicode_predictions")


# ----------------------------------------------------------------------------------------- operator arguments


def test_on_invalid_rows_must_be_fail_or_skip(version: str, aporia: AporiaProbe) -> None:
    with pytest.raises((ValueError, AirflowFailException)) as error:
        sync(on_invalid_rows="drop")
    assert str(error.value) == "on_invalid_rows 'drop' is not supported; use 'fail' or 'skip'."
    assert aporia.count(MODEL, "v1")["total"] == 0


@pytest.mark.parametrize(
    "sources", [{"table": "model_predictions"}, {"query": None}], ids=["table-and-query", "neither"]
)
def test_exactly_one_of_table_and_query(sources: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as error:
        sync(**sources)
    assert str(error.value) == "Pass exactly one of query and table to AporiaSyncOperator."


def test_a_version_that_does_not_exist(version: str, aporia: AporiaProbe) -> None:
    with pytest.raises(AirflowFailException) as error:
        sync(model_version="v9")
    assert str(error.value) == (
        f"Model '{MODEL}' has no version 'v9' in Aporia; create it first with AporiaCreateModelVersionOperator."
    )
    assert aporia.count(MODEL, "v9")["total"] == 0


# ----------------------------------------------------------------------------------------- connections


@pytest.mark.parametrize(("argument", "kind"), [("aporia_conn_id", "Aporia"), ("redshift_conn_id", "Redshift")])
def test_missing_connection(version: str, aporia: AporiaProbe, argument: str, kind: str) -> None:
    conn_id = f"{kind.lower()}_nowhere"
    with pytest.raises(AirflowFailException) as error:
        sync(**{argument: conn_id})
    assert str(error.value) == (
        f"The {kind} connection '{conn_id}' is not defined; create it in Airflow "
        f"(UI, CLI or an AIRFLOW_CONN_{conn_id.upper()} variable)."
    )
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_aporia_connection_without_token(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_APORIA_NOTOKEN", connection(stack, "aporia_default", password=None))
    with pytest.raises(AirflowFailException) as error:
        sync(aporia_conn_id="aporia_notoken")
    assert str(error.value) == ("Connection 'aporia_notoken' has no API token; store the Aporia token as its password.")
    assert aporia.count(MODEL, "v1")["total"] == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"host": None},
            "Connection 'redshift_incomplete' needs a host and a database (schema field); set both.",
            id="without-host",
        ),
        pytest.param(
            {"extra": {"ssl": False}},
            "Connection 'redshift_incomplete' has neither iam: true nor a login and password; set extra iam to "
            "true (recommended) or give a user and password.",
            id="neither-iam-nor-password",
        ),
    ],
)
def test_incomplete_redshift_connection(
    version: str,
    aporia: AporiaProbe,
    stack: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    changes: dict[str, Any],
    message: str,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_INCOMPLETE", connection(stack, "redshift_default", **changes))
    with pytest.raises(AirflowFailException) as error:
        sync(redshift_conn_id="redshift_incomplete")
    assert str(error.value) == message
    assert aporia.count(MODEL, "v1")["total"] == 0


@pytest.fixture
def four_times_the_seed(stack: LocalStack, seeded: SeedPlan) -> Iterator[str]:
    """The seeded rows four times over, each copy with ids of its own: 1,152 rows of 768-dim embeddings (~9 MB)."""
    redshift_sql(stack, "DROP TABLE IF EXISTS four_times_the_seed")
    redshift_sql(
        stack,
        "CREATE TABLE four_times_the_seed AS SELECT m.*, m.prediction_id || '-' || copy AS copy_id "
        "FROM model_predictions m, generate_series(1, 4) AS copy",
    )
    yield "SELECT * FROM four_times_the_seed"
    redshift_sql(stack, "DROP TABLE four_times_the_seed")


def test_a_window_over_the_cursor_limit_without_unload_fails_before_reading_it(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch, four_times_the_seed: str
) -> None:
    extra = {**stack.connections()["redshift_default"]["extra"], "cursor_result_limit_mb": 1}
    del extra["unload_s3_prefix"], extra["unload_iam_role"]
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_SMALL", connection(stack, "redshift_default", extra=extra))
    window = (T0, T0 + 48 * HOUR)
    with pytest.raises(AirflowFailException) as error:
        sync(window, query=four_times_the_seed, id_column="copy_id", redshift_conn_id="redshift_small")
    # 1,152 rows of about 5.3 kB of text each (768 elements of 5 or 6 characters).
    assert str(error.value) == (
        f"The window of predictions of {MODEL} v1 would be about 6 MB as a cursor's result, over the 1 MB Redshift's "
        "leader node holds for cursors (cursor_result_limit_mb): set unload_s3_prefix and unload_iam_role to unload "
        "it to S3 instead, or sync shorter windows."
    )
    assert aporia.count(MODEL, "v1")["total"] == 0


@pytest.fixture
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS keys outside the connection: no environment keys, no credentials files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_aws_connection_without_keys_for_the_iam_jdbc_url(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch, no_ambient_aws: None
) -> None:
    """The column check reads Redshift with a password; building Aporia's IAM URL then needs the AWS keys."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_NOKEYS", connection(stack, "aws_default", login=None, password=None))
    monkeypatch.setenv(
        "AIRFLOW_CONN_REDSHIFT_PASSWORD",
        connection(
            stack, "redshift_default", login=MASTER_USER, password=stack.settings.master_password, extra={"ssl": False}
        ),
    )
    with pytest.raises(AirflowFailException) as error:
        AporiaConnectServingOperator(
            task_id="serving",
            model_id=MODEL,
            model_version="v1",
            query=example.QUERY,
            id_column=example.ID_COLUMN,
            timestamp_column=example.TIMESTAMP_COLUMN,
            redshift_conn_id="redshift_password",
            aws_conn_id="aws_nokeys",
        ).execute({})
    assert str(error.value) == (
        "AWS connection 'aws_nokeys' yields no access key; Aporia's IAM JDBC URL needs an access key id (login) "
        "and secret key (password)."
    )
    assert aporia.get(f"/v1beta/models/{MODEL}/versions/v1/datasets") == []


def test_aws_connection_without_keys_for_iam_credentials(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch, no_ambient_aws: None
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_NOKEYS", connection(stack, "aws_default", login=None, password=None))
    with pytest.raises(AirflowFailException) as error:
        sync(aws_conn_id="aws_nokeys")
    assert str(error.value) == (
        "AWS connection 'aws_nokeys' yields no access key; GetClusterCredentials for Redshift connection "
        "'redshift_default' needs an access key id (login) and secret key (password)."
    )
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_wrong_aporia_token(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_APORIA_WRONG", connection(stack, "aporia_default", password="wrong-token-77c1"))
    with pytest.raises(AporiaError) as error:
        sync(aporia_conn_id="aporia_wrong")
    assert str(error.value) == (
        "Aporia modelVersionSchema failed: HTTP 401: Invalid or missing API token; "
        "check the API token stored as the password of the Aporia connection."
    )
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_unreachable_aporia_host(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_APORIA_DOWN", connection(stack, "aporia_default", host="127.0.0.1", port=port))
    with pytest.raises(AporiaError) as error:
        sync(aporia_conn_id="aporia_down")
    assert str(error.value) == (
        f"Aporia modelVersionSchema failed after 4 attempts: cannot reach http://127.0.0.1:{port}; "
        f"check that Aporia is up and reachable at http://127.0.0.1:{port}."
    )
    assert aporia.count(MODEL, "v1")["total"] == 0


@pytest.mark.parametrize(
    "url",
    ["jdbc:redshift:iam:///dev", "jdbc:postgresql://:5439/dev", "jdbc:redshift:dev"],
    ids=["empty-authority", "port-only", "no-authority"],
)
def test_jdbc_url_without_host(version: str, aporia: AporiaProbe, url: str) -> None:
    with pytest.raises(DataSourceError) as error:
        JDBCDataSource(url=url, query=example.QUERY)
    assert str(error.value) == (
        "The data source url has no host; use jdbc:<driver>://<host>:<port>/<database>, e.g. "
        "jdbc:redshift:iam://examplecluster.abc123.us-west-2.redshift.amazonaws.com:5439/dev."
    )
    assert aporia.get(f"/v1beta/models/{MODEL}/versions/v1/datasets") == []


def _redshift_down_message(port: int) -> str:
    return (
        f"Cannot reach Redshift at 127.0.0.1:{port} (connection 'redshift_down'); check that Redshift is up "
        "and that the connection's host and port are right."
    )


def test_redshift_down_fails_the_sync_with_one_sentence(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_DOWN", connection(stack, "redshift_default", host="127.0.0.1", port=port))
    with pytest.raises((AirflowException, RuntimeError)) as error:
        sync(redshift_conn_id="redshift_down")
    assert not isinstance(error.value, AirflowFailException)  # Redshift may come back: Airflow should retry
    assert str(error.value) == _redshift_down_message(port)
    assert aporia.count(MODEL, "v1")["total"] == 0


def test_redshift_down_fails_the_connect_with_one_sentence(
    version: str, aporia: AporiaProbe, stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("AIRFLOW_CONN_REDSHIFT_DOWN", connection(stack, "redshift_default", host="127.0.0.1", port=port))
    with pytest.raises((AirflowException, RuntimeError)) as error:
        AporiaConnectServingOperator(
            task_id="serving",
            model_id=MODEL,
            model_version="v1",
            query=example.QUERY,
            id_column=example.ID_COLUMN,
            timestamp_column=example.TIMESTAMP_COLUMN,
            redshift_conn_id="redshift_down",
        ).execute({})
    assert not isinstance(error.value, AirflowFailException)
    assert str(error.value) == _redshift_down_message(port)
    assert aporia.get(f"/v1beta/models/{MODEL}/versions/v1/datasets") == []
