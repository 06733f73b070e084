"""Parity of the two ways a window is read: by the task itself (redshift_connector) and by Spark (local[*]).

Each case reads the same rows of a table of its own in the Redshift stand-in twice, once in the task (the
default `spark_min_rows`) and once with Spark (`spark_min_rows=0`), into two versions of one model, and
asserts that both give the same summary, the same rejected rows in the same words, the same fragments in
Aporia (compared as JSON values: 1 and 1.0 are equal, true and 1 are not), and the same refusals. Where a
value can be predicted it is asserted too. Every sync checks the task log for the way it was read, so a
comparison is never between two runs of the same path.

With `spark_min_rows=0` the task still probes the query's columns before handing the window to Spark, so
refusals are also compared with Spark reading through `select_expr="*"`, where Spark's own checks speak.
The last cases push values to the edges of their types (ids of every numeric type, REAL, unconstrained
NUMERIC, JSON numbers beyond 64 bits, dates around 1582, CHAR padding).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from aporia_local.stack import LocalStack
from aporia_provider.operators.aporia import AporiaCreateModelOperator, AporiaCreateModelVersionOperator
from tests.helpers import NOTHING_SENT, AporiaProbe, invalid_rows, redshift_sql, sync

pytestmark = pytest.mark.usefixtures("airflow_env")

MODEL_ID = "parity"
IN_TASK, SPARK, SPARK_SQL = "in-task", "spark", "spark-select-expr"
# How each path is asked for: the default threshold keeps these small windows in the task. With select_expr
# Spark reads the window without the task's own probe first, so its own checks of the columns are what speak.
PATHS: dict[str, dict[str, Any]] = {IN_TASK: {}, SPARK: {"spark_min_rows": 0}, SPARK_SQL: {"select_expr": "*"}}
UTC = timezone.utc
HOUR = timedelta(hours=1)
T0 = datetime(2027, 3, 1, tzinfo=UTC)
WINDOW = (T0, T0 + HOUR)
RUN_LOGGER = "aporia_provider.extraction.run"
REPO = Path(__file__).resolve().parents[2]

FEATURES: dict[str, Any] = {
    "amount": "numeric",  # DOUBLE PRECISION
    "price": "numeric",  # NUMERIC(12,4)
    "bucket": "categorical",  # INT
    "level": "categorical",  # SMALLINT
    "owner": "string",
    "is_new": "boolean",
    "signed_up": "datetime",  # TIMESTAMPTZ
    "seen_at": "datetime",  # TIMESTAMP (no zone: UTC)
    "born": "datetime",  # DATE
    "emb": {"type": "tensor", "dimensions": [4]},
    "grid": {"type": "tensor", "dimensions": [2, 3]},
    "vec": "vector",
    "counts": "dict",
}
RAW_INPUTS = {"note": "text"}
PREDICTIONS = {"will_buy": "boolean", "proba": "numeric"}
ACTUALS = {"will_buy": "did_buy", "proba": "actual_proba"}
SYNC_ARGS: dict[str, Any] = {
    "model_id": MODEL_ID,
    "id_column": "pid",
    "timestamp_column": "ts",
    "actuals": ACTUALS,
    "actuals_timestamp_column": "actual_ts",
    "num_partitions": 1,
}


class _JsonNull:
    """A SUPER or VARCHAR value holding the JSON text null (a missing value, not a bad one)."""

    def __repr__(self) -> str:
        return "JSON_NULL"


JSON_NULL = _JsonNull()


@dataclass(frozen=True)
class Column:
    name: str
    ddl: str
    value: str  # the SQL that turns the bound text into the column's value


def columns(json_type: str) -> list[Column]:
    """The table layout; the tensor and dict columns are SUPER or VARCHAR (JSON text), `vec` always SUPER."""
    json_value = "JSON_PARSE(%s)" if json_type == "SUPER" else "%s"
    return [
        Column("pid", "VARCHAR(64)", "%s"),
        Column("ts", "TIMESTAMPTZ", "%s::timestamptz"),
        Column("amount", "DOUBLE PRECISION", "%s::float8"),
        Column("price", "NUMERIC(12,4)", "%s::numeric(12,4)"),
        Column("bucket", "INT", "%s::int"),
        Column("level", "SMALLINT", "%s::smallint"),
        Column("owner", "VARCHAR(64)", "%s"),
        Column("is_new", "BOOLEAN", "%s::boolean"),
        Column("signed_up", "TIMESTAMPTZ", "%s::timestamptz"),
        Column("seen_at", "TIMESTAMP", "%s::timestamp"),
        Column("born", "DATE", "%s::date"),
        Column("woke_at", "TIMETZ", "%s::timetz"),
        Column("emb", json_type, json_value),
        Column("grid", json_type, json_value),
        Column("vec", "SUPER", "JSON_PARSE(%s)"),
        Column("counts", json_type, json_value),
        Column("note", "TEXT", "%s"),
        Column("will_buy", "BOOLEAN", "%s::boolean"),
        Column("proba", "DOUBLE PRECISION", "%s::float8"),
        Column("did_buy", "BOOLEAN", "%s::boolean"),
        Column("actual_proba", "DOUBLE PRECISION", "%s::float8"),
        Column("actual_ts", "TIMESTAMPTZ", "%s::timestamptz"),
    ]


def sql_text(value: Any) -> str | None:
    """A Python value as the text bound for its column (cast by Column.value)."""
    if value is None:
        return None
    if value is JSON_NULL:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def create_table(stack: LocalStack, name: str, layout: list[Column], rows: Iterable[Mapping[str, Any]]) -> str:
    redshift_sql(stack, f"DROP TABLE IF EXISTS {name}")
    redshift_sql(stack, f"CREATE TABLE {name} ({', '.join(f'{c.name} {c.ddl}' for c in layout)})")
    insert = f"INSERT INTO {name} ({', '.join(c.name for c in layout)}) VALUES ({', '.join(c.value for c in layout)})"
    with stack.master_connection() as connection:
        cursor = connection.cursor()
        for row in rows:
            cursor.execute(insert, tuple(sql_text(row.get(c.name)) for c in layout))
        connection.commit()
    return f"SELECT * FROM {name}"


# ------------------------------------------------------------------------------------------- the rows


def clean_row(i: int) -> dict[str, Any]:
    """Row i of the clean window: every type the schema has, some values missing (SQL NULL or JSON null)."""
    row: dict[str, Any] = {
        "pid": f"c-{i:02d}",
        "ts": T0 + i * timedelta(minutes=5, microseconds=1),
        "amount": i * 1.25 - 3,
        "price": Decimal(f"{i * 10}.1234"),
        "bucket": i % 3,
        "level": i % 2 - 7,
        "owner": f"owner-{i}",
        "is_new": i % 2 == 0,
        "signed_up": datetime(2027, 2, 1, 10, 11, 12, 345678, tzinfo=UTC) + timedelta(days=i),
        "seen_at": datetime(2027, 2, 2, 3, 4, 5, 1) + timedelta(hours=i),
        "born": date(1990, 5, 17) + timedelta(days=i),
        "woke_at": time(7, i, tzinfo=timezone(timedelta(hours=1))),
        "emb": [i, 0.5, -0.00125, 123456.789],
        "grid": [[1, 2, 3], [4.5, i, 6e-7]],
        "vec": [0.1 * (k + 1) for k in range(i + 1)],
        "counts": {"a": i, "b": 0.25, "ключ": -1e-5},
        "note": f"customer note {i}",
        "will_buy": i % 2 == 1,
        "proba": i / 16,
    }
    changes: dict[int, dict[str, Any]] = {
        0: {"did_buy": True, "actual_proba": 1.0, "actual_ts": T0 + timedelta(minutes=50)},
        2: {"is_new": None, "amount": 1e-300},
        3: {"amount": None, "did_buy": None, "actual_proba": 0.75, "actual_ts": T0 + timedelta(minutes=55)},
        # An offset other than UTC: the instant is what counts.
        4: {"signed_up": datetime(2027, 2, 5, 10, 11, 12, 345678, tzinfo=timezone(timedelta(hours=5, minutes=30)))},
        5: {"owner": 'Zoë "q"\n✓ \\', "note": "emoji 🎉 and tab\t"},
        # An actual that arrived with no value at all is no actual.
        6: {"signed_up": None, "did_buy": None, "actual_proba": None, "actual_ts": T0 + timedelta(minutes=30)},
        7: {"owner": None, "price": Decimal("-0.0001")},
        8: {"emb": JSON_NULL, "counts": JSON_NULL},
        9: {"emb": None, "grid": None, "vec": None, "counts": None, "note": None},
        10: {"vec": []},
        11: {"counts": {}, "amount": 12345678901.5},
    }
    return row | changes.get(i, {})


CLEAN_ROWS = [clean_row(i) for i in range(12)]
# Around the window: predictions just outside it, actuals of earlier predictions arriving in it.
CLEAN_OUTSIDE: list[dict[str, Any]] = [
    clean_row(0)
    | {"pid": "c-prev-1", "ts": T0 - timedelta(days=1), "did_buy": False, "actual_proba": 0.0}
    | {"actual_ts": T0 + timedelta(minutes=10)},
    clean_row(1) | {"pid": "c-prev-2", "ts": T0 - timedelta(microseconds=1)},
    clean_row(2) | {"pid": "c-next", "ts": T0 + HOUR, "did_buy": True, "actual_ts": T0 + HOUR},
    clean_row(3) | {"pid": "c-late", "ts": T0 - timedelta(days=2), "did_buy": True, "actual_ts": T0 + 2 * HOUR},
]
CLEAN_SUMMARY = {
    "rows_read": 12,
    "fragments_sent": 12,
    "actuals_read": 3,
    "actuals_sent": 3,
    "rows_rejected": 0,
    "warnings": 0,
    "examples": [],
}

# The bad windows: two good rows and at most five rejected ones each (examples are capped at five), with
# the problem each rejected row must be named for. A row without a problem is read and sent.
GOOD: dict[str, Any] = {
    "ts": None,
    "amount": 1.5,
    "price": Decimal("2.5"),
    "bucket": 1,
    "level": 1,
    "owner": "o",
    "is_new": True,
    "signed_up": datetime(2027, 2, 1, tzinfo=UTC),
    "seen_at": datetime(2027, 2, 1),
    "born": date(2000, 1, 1),
    "woke_at": time(8, 0, tzinfo=UTC),
    "emb": [1, 2, 3, 4],
    "grid": [[1, 2, 3], [4, 5, 6]],
    "vec": [0.5],
    "counts": {"a": 1},
    "note": "n",
    "will_buy": True,
    "proba": 0.5,
}


@dataclass(frozen=True)
class Bad:
    pid: str | None
    changes: dict[str, Any]
    problems: tuple[str, ...] = ()  # the examples it is rejected with, if any


def not_json(field: str) -> str:
    return f"{field}: not JSON holding a list of numbers"


BAD_WINDOWS: dict[str, list[Bad]] = {
    "json-text": [
        Bad("b-malformed", {"emb": "[0.1, 0.2"}, ("predictions b-malformed: " + not_json("emb"),)),
        Bad("b-short", {"emb": "[1, 2, 3]"}, ("predictions b-short: emb: expected a tensor of shape [4]",)),
        Bad("b-json-null", {"emb": "null", "vec": JSON_NULL}),
        Bad("b-json-null-spaced", {"emb": "  NULL ", "counts": "null"}),
        Bad("b-sql-null", {"emb": None, "vec": None}),
        Bad(
            "b-null-element",
            {"vec": [1, None]},
            ("predictions b-null-element: vec: holds a null or non-finite element",),
        ),
        Bad("b-nested", {"vec": [[1]]}, ("predictions b-nested: " + not_json("vec"),)),
    ],
    "non-finite": [
        Bad("b-nan", {"emb": "[NaN, 1, 2, 3]"}, ("predictions b-nan: emb: holds a null or non-finite element",)),
        Bad("b-1e400", {"emb": "[1e400, 1, 2, 3]"}, ("predictions b-1e400: emb: holds a null or non-finite element",)),
        # 1e400 in SUPER: jsonb keeps the number exactly and writes it out as 401 digits.
        Bad(
            "b-1e400-super", {"vec": "[1e400]"}, ("predictions b-1e400-super: vec: holds a null or non-finite element",)
        ),
        Bad("b-string", {"emb": '["a", 1, 2, 3]'}, ("predictions b-string: " + not_json("emb"),)),
        Bad("b-nan-numeric", {"amount": "NaN"}, ("predictions b-nan-numeric: amount: not a finite number",)),
    ],
    "rows": [
        Bad(
            None,
            {"did_buy": True, "actual_ts": "in-window"},
            ("predictions (no id): pid is null", "actuals (no id): pid is null"),
        ),
        Bad("b-dup", {}, ("predictions b-dup: duplicate pid b-dup",)),
        Bad("b-dup", {"amount": 7.0}, ("predictions b-dup: duplicate pid b-dup",)),
        Bad("b-no-timestamp", {"ts": "none"}),  # never in any window: not read at all
        Bad(
            "b-nan-actual",
            {"did_buy": False, "actual_proba": "NaN", "actual_ts": "in-window"},
            ("actuals b-nan-actual: proba: not a finite number",),
        ),
    ],
    "dicts-and-grids": [
        Bad(
            "b-dict-null",
            {"counts": '{"a": null}'},
            ("predictions b-dict-null: counts: holds a null or non-finite value",),
        ),
        Bad(
            "b-dict-list",
            {"counts": "[1]"},
            ("predictions b-dict-list: counts: not JSON holding an object of numbers",),
        ),
        Bad(
            "b-dict-text",
            {"counts": '{"a": "x"}'},
            ("predictions b-dict-text: counts: not JSON holding an object of numbers",),
        ),
        Bad(
            "b-ragged",
            {"grid": "[[1, 2, 3], [4, 5]]"},
            ("predictions b-ragged: grid: expected a tensor of shape [2, 3]",),
        ),
        Bad(
            "b-null-row",
            {"grid": "[[1, 2, 3], null]"},
            ("predictions b-null-row: grid: expected a tensor of shape [2, 3]",),
        ),
    ],
    "json-shapes": [
        Bad("b-quoted-number", {"vec": ["1.5"]}, ("predictions b-quoted-number: " + not_json("vec"),)),
        Bad("b-scalar", {"vec": 5}, ("predictions b-scalar: " + not_json("vec"),)),
        Bad("b-boolean", {"vec": [True]}, ("predictions b-boolean: " + not_json("vec"),)),
        Bad("b-quoted-nan", {"vec": ["NaN"]}, ("predictions b-quoted-nan: vec: holds a null or non-finite element",)),
        Bad("b-infinite-proba", {"proba": "-Infinity"}, ("predictions b-infinite-proba: proba: not a finite number",)),
    ],
    "more-dicts-and-grids": [
        Bad(
            "b-dict-nan",
            {"counts": '{"a": NaN}'},
            ("predictions b-dict-nan: counts: holds a null or non-finite value",),
        ),
        Bad(
            "b-dict-1e400",
            {"counts": '{"a": 1e400}'},
            ("predictions b-dict-1e400: counts: holds a null or non-finite value",),
        ),
        Bad(
            "b-dict-nested",
            {"counts": '{"a": [1]}'},
            ("predictions b-dict-nested: counts: not JSON holding an object of numbers",),
        ),
        Bad(
            "b-grid-nan",
            {"grid": "[[1, 2, 3], [4, 5, NaN]]"},
            ("predictions b-grid-nan: grid: holds a null or non-finite element",),
        ),
        Bad(
            "b-grid-flat",
            {"grid": "[1, 2, 3, 4, 5, 6]"},
            ("predictions b-grid-flat: grid: not JSON holding 2 levels of lists of numbers",),
        ),
    ],
}
BAD_START = T0 + timedelta(days=1)


def bad_window(name: str) -> tuple[datetime, datetime]:
    start = BAD_START + list(BAD_WINDOWS).index(name) * HOUR
    return (start, start + HOUR)


def bad_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, cases in BAD_WINDOWS.items():
        start = bad_window(name)[0]
        good = [GOOD | {"pid": f"{name}-good-{k}", "ts": start + timedelta(minutes=k)} for k in range(2)]
        rows += good
        for n, case in enumerate(cases):
            row = GOOD | {"pid": case.pid, "ts": start + timedelta(minutes=10 + n)} | case.changes
            if row.get("ts") == "none":
                row["ts"] = None
            if row.get("actual_ts") == "in-window":
                row["actual_ts"] = start + timedelta(minutes=40 + n)
            rows.append(row)
    return rows


def expected_bad_summary(name: str) -> dict[str, Any]:
    cases = BAD_WINDOWS[name]
    read = [c for c in cases if c.changes.get("ts") != "none"]
    actuals = [c for c in cases if c.changes.get("actual_ts") == "in-window"]
    examples = sorted(p for c in cases for p in c.problems)
    rejected = sum(len(c.problems) for c in cases)
    predictions_rejected = sum(1 for c in cases for p in c.problems if p.startswith("predictions"))
    actuals_rejected = rejected - predictions_rejected
    return {
        "rows_read": 2 + len(read),
        "fragments_sent": 2 + len(read) - predictions_rejected,
        "actuals_read": len(actuals),
        "actuals_sent": len(actuals) - actuals_rejected,
        "rows_rejected": rejected,
        "warnings": 0,
        "examples": examples,
    }


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clean(stack: LocalStack) -> Iterator[str]:
    yield create_table(stack, "parity_clean", columns("SUPER"), [*CLEAN_ROWS, *CLEAN_OUTSIDE])
    redshift_sql(stack, "DROP TABLE IF EXISTS parity_clean")


@pytest.fixture(scope="module")
def bad(stack: LocalStack) -> Iterator[str]:
    yield create_table(stack, "parity_bad", columns("VARCHAR(1000)"), bad_rows())
    redshift_sql(stack, "DROP TABLE IF EXISTS parity_bad")


def create_versions(aporia: AporiaProbe, *names: str, model_id: str = MODEL_ID, **schema: Any) -> None:
    """The model and the named versions of it, in an emptied Aporia."""
    schema = {"features": FEATURES, "raw_inputs": RAW_INPUTS, "predictions": PREDICTIONS} | schema
    AporiaCreateModelOperator(task_id="model", model_id=model_id).execute({})
    for name in names:
        AporiaCreateModelVersionOperator(
            task_id="version", model_id=model_id, model_version=name, model_type="binary", **schema
        ).execute({})


@pytest.fixture
def versions(aporia: AporiaProbe) -> AporiaProbe:
    create_versions(aporia, *PATHS)
    return aporia


# ----------------------------------------------------------------------------------------- syncing


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def run_log() -> Iterator[list[str]]:
    """The sync run's log lines while the block runs."""
    logger = logging.getLogger(RUN_LOGGER)
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def read_with_spark(lines: list[str]) -> set[str]:
    """The sources the log says Spark read."""
    return {m.group(1) for line in lines if (m := re.match(r"Reading (\w+) of .* with Spark: ", line))}


def run_sync(path: str, window: tuple[datetime, datetime], **kwargs: Any) -> dict[str, Any]:
    """One sync by `path` (IN_TASK or SPARK) into the version named after it; asserts the path it took."""
    arguments = SYNC_ARGS | {"model_version": path} | PATHS[path] | kwargs
    with run_log() as lines:
        summary = sync(window, **arguments)
    sources = {"predictions", "actuals"} if arguments.get("actuals") else {"predictions"}
    assert read_with_spark(lines) == (sources if path == SPARK else set()), lines
    return summary


def failure(path: str, window: tuple[datetime, datetime], **kwargs: Any) -> tuple[str, str]:
    """The type and message a sync by `path` fails with, its model version written as {subject}."""
    with pytest.raises(Exception) as error:
        sync(window, **(SYNC_ARGS | {"model_version": path} | PATHS[path] | kwargs))
    return type(error.value).__name__, str(error.value).replace(f"{MODEL_ID} {path}", "{subject}")


def counts(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("rows_read", "fragments_sent", "actuals_read", "actuals_sent", "rows_rejected", "warnings")
    return {key: summary[key] for key in keys} | {"examples": sorted(summary["rejected_examples"])}


def canonical(value: Any) -> Any:
    """A JSON value compared by meaning: numbers as floats (1 == 1.0), booleans apart from numbers."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {key: canonical(v) for key, v in value.items()}
    return value


FRAGMENT_PARTS = ("features", "raw_inputs", "predictions", "actuals", "occurred_at")


def stored(aporia: AporiaProbe, version: str, model_id: str = MODEL_ID) -> dict[str, dict[str, Any]]:
    """What Aporia holds for the version, by id; each id once."""
    fragments = aporia.fragments(model_id, version)
    by_id = {f["id"]: {part: canonical(f[part]) for part in FRAGMENT_PARTS} for f in fragments}
    assert len(by_id) == len(fragments), "an id is stored twice"
    return by_id


def sent_datetime(value: datetime | date) -> str:
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT00:00:00.000000Z")


def expected_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return sent_datetime(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def expected_fragments(rows: Iterable[Mapping[str, Any]], window: tuple[datetime, datetime]) -> dict[str, Any]:
    """What Aporia must hold after a sync of the window: predictions in it, actuals that arrived in it."""
    found: dict[str, Any] = {}
    for row in rows:
        predicted = window[0] <= row["ts"] < window[1]
        arrived = row.get("actual_ts") is not None and window[0] <= row["actual_ts"] < window[1]
        actuals = {name: row.get(column) for name, column in ACTUALS.items() if row.get(column) is not None}
        if not predicted and not (arrived and actuals):
            continue
        fragment: dict[str, Any] = dict.fromkeys(FRAGMENT_PARTS)
        if predicted:
            for group, fields in (("features", FEATURES), ("raw_inputs", RAW_INPUTS), ("predictions", PREDICTIONS)):
                fragment[group] = {
                    name: expected_value(row[name]) for name in fields if row.get(name) not in (None, JSON_NULL)
                }
            fragment["occurred_at"] = row["ts"].astimezone(UTC).isoformat(timespec="microseconds")
        if arrived and actuals:
            fragment["actuals"] = actuals
        found[row["pid"]] = canonical(fragment)
    return found


# ------------------------------------------------------------------------------------- 1. clean window


def test_a_clean_window_gives_the_same_summary_and_fragments(versions: AporiaProbe, clean: str) -> None:
    in_task = run_sync(IN_TASK, WINDOW, query=clean)
    spark = run_sync(SPARK, WINDOW, query=clean)
    assert counts(in_task) == counts(spark) == CLEAN_SUMMARY
    expected = expected_fragments([*CLEAN_ROWS, *CLEAN_OUTSIDE], WINDOW)
    assert sorted(expected) == [*(f"c-{i:02d}" for i in range(12)), "c-prev-1"]
    by_task, by_spark = stored(versions, IN_TASK), stored(versions, SPARK)
    for pid in sorted(expected):
        assert by_task.get(pid) == by_spark.get(pid), pid
    assert by_task == by_spark == expected


def test_a_lookback_counts_the_rows_it_reread_apart_alike(versions: AporiaProbe, clean: str) -> None:
    lookback = timedelta(days=1)
    in_task = run_sync(IN_TASK, WINDOW, query=clean, lookback=lookback)
    spark = run_sync(SPARK, WINDOW, query=clean, lookback=lookback)
    keys = ("read_start", "predictions_in_window", "predictions_reread", "actuals_in_window", "actuals_reread")
    # c-prev-1 (a day early: the read's start) and c-prev-2 (a microsecond early) are re-read; the window itself
    # holds what it holds without a lookback; no actual arrived in the day before it.
    expected = ((T0 - lookback).isoformat(), 12, 2, 3, 0)
    assert tuple(in_task[key] for key in keys) == tuple(spark[key] for key in keys) == expected
    assert in_task["fragments_sent"] == spark["fragments_sent"] == 14


def test_spark_min_rows_sends_a_source_at_the_threshold_to_spark_and_delivers_once(
    aporia: AporiaProbe, clean: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_versions(aporia, IN_TASK, "mixed")
    caplog.set_level(logging.INFO, logger=RUN_LOGGER)
    in_task = run_sync(IN_TASK, WINDOW, query=clean)
    caplog.clear()
    # 12 predictions reach the threshold of 5; the 4 actual rows of the window (one with no value) do not.
    mixed = sync(WINDOW, **(SYNC_ARGS | {"model_version": "mixed", "query": clean, "spark_min_rows": 5}))
    run_lines = [r.getMessage() for r in caplog.records if r.name == RUN_LOGGER]
    assert "Reading predictions of parity mixed with Spark: 12 rows, at least 5." in run_lines
    assert read_with_spark(run_lines) == {"predictions"}
    assert "Checked actuals of parity mixed: 3 rows, 0 rejected." in run_lines
    assert counts(mixed) == counts(in_task) == CLEAN_SUMMARY
    assert aporia.count(MODEL_ID, "mixed") == {"total": 13, "with_predictions": 12, "with_actuals": 3}
    assert (
        stored(aporia, "mixed") == stored(aporia, IN_TASK) == expected_fragments([*CLEAN_ROWS, *CLEAN_OUTSIDE], WINDOW)
    )


# ---------------------------------------------------------------------------------------- 2. bad rows


@pytest.mark.parametrize("name", list(BAD_WINDOWS))
def test_bad_rows_are_rejected_alike(versions: AporiaProbe, bad: str, name: str) -> None:
    window = bad_window(name)
    expected = expected_bad_summary(name)
    # on_invalid_rows="fail": nothing sent ...
    failed = {path: failure(path, window, query=bad) for path in (IN_TASK, SPARK)}
    assert versions.count(MODEL_ID, IN_TASK)["total"] == versions.count(MODEL_ID, SPARK)["total"] == 0
    # ... and "skip": the same counts, the same rejected rows in the same words, the same rows sent.
    in_task = run_sync(IN_TASK, window, query=bad, on_invalid_rows="skip")
    spark = run_sync(SPARK, window, query=bad, on_invalid_rows="skip")
    assert counts(in_task) == counts(spark)
    assert counts(in_task) == expected
    assert stored(versions, IN_TASK) == stored(versions, SPARK)
    # The failure is the same sentence (its examples in any order), listing every rejected row.
    assert split_examples(*failed[IN_TASK]) == split_examples(*failed[SPARK])
    rows = expected["rows_read"] + expected["actuals_read"]
    assert split_examples(*failed[IN_TASK]) == (
        "AirflowFailException",
        f"{invalid_rows(expected['rows_rejected'])} of {rows}",
        frozenset(expected["examples"]),
        " in the window of {subject}" + NOTHING_SENT,
    )


def split_examples(kind: str, message: str) -> tuple[str, str, frozenset[str], str]:
    """A rejection message as (type, head, examples as a set, tail): the examples' order is Spark's to choose."""
    match = re.fullmatch(r"(.*?) \(e\.g\. (.*)\)( in the window of .*)", message, re.DOTALL)
    assert match, message
    return kind, match.group(1), frozenset(match.group(2).split("; ")), match.group(3)


# ------------------------------------------------------------------------------ 3. refused configurations


def column_refused(column: str, field: str, column_type: str, field_type: str, fix: str, group: str = "feature") -> str:
    return f"Column {column!r} for {group} {field!r} is {column_type}, but the field is {field_type}; {fix}."


CAST = "cast it in the query or with select_expr to"
REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "varchar-for-numeric": (
        {"features": {"amount": "owner"}},
        column_refused("owner", "amount", "string", "numeric", f"{CAST} a number"),
    ),
    "double-for-categorical": (
        {"features": {"bucket": "amount"}},
        column_refused("amount", "bucket", "double", "categorical", f"{CAST} an integer"),
    ),
    "decimal-for-categorical": (
        {"features": {"bucket": "price"}},
        column_refused("price", "bucket", "decimal", "categorical", f"{CAST} an integer"),
    ),
    "smallint-for-boolean": (
        {"features": {"is_new": "level"}},
        column_refused("level", "is_new", "smallint", "boolean", f"{CAST} a boolean"),
    ),
    "timestamp-for-string": (
        {"features": {"owner": "signed_up"}},
        column_refused("signed_up", "owner", "timestamp", "string", f"{CAST} a string"),
    ),
    "date-for-boolean-prediction": (
        {"predictions": {"will_buy": "born"}},
        column_refused("born", "will_buy", "date", "boolean", f"{CAST} a boolean", group="prediction"),
    ),
    "int-for-tensor": (
        {"features": {"emb": "bucket"}},
        column_refused(
            "bucket",
            "emb",
            "int",
            "tensor",
            "select an array of 1 level(s) of numbers, or JSON text (SUPER or VARCHAR)",
        ),
    ),
    "double-for-boolean-actual": (
        {"actuals": {"will_buy": "actual_proba"}},
        column_refused("actual_proba", "will_buy", "double", "boolean", f"{CAST} a boolean", group="actual"),
    ),
    # Spark reads a TIME as a timestamp on 1970-01-01 (it sent 1970-01-01T08:00:00Z): a time of day is refused.
    "timetz-for-datetime": (
        {"features": {"signed_up": "woke_at"}},
        column_refused("woke_at", "signed_up", "time", "datetime", f"{CAST} a timestamp"),
    ),
    "timetz-timestamp": (
        {"timestamp_column": "woke_at"},
        "timestamp_column 'woke_at' is a time of day without a date, which no window can be compared with; name a "
        "TIMESTAMP column, or build one in the query (e.g. day + woke_at AS moment).",
    ),
    "missing-mapped-column": (
        {"features": {"amount": "no_such_column"}},
        "The query for {subject} has no column 'no_such_column' needed for features; it returns "
        + ", ".join(c.name for c in columns("SUPER"))
        + "; add the column to the query or select_expr, or map the field to an existing column.",
    ),
    "missing-id-column": (
        {"id_column": "no_id"},
        "The query for {subject} has no column 'no_id' named by id_column; it returns "
        + ", ".join(c.name for c in columns("SUPER"))
        + "; add the column to the query or select_expr, or set id_column to an existing column.",
    ),
    "varchar-timestamp": (
        {"timestamp_column": "owner"},
        "timestamp_column 'owner' is string, but the window is compared as time; select it as a TIMESTAMP, "
        "e.g. CAST(owner AS TIMESTAMP) AS owner in the query.",
    ),
    "varchar-actuals-timestamp": (
        {"actuals_timestamp_column": "note"},
        "actuals_timestamp_column 'note' is string, but the window is compared as time; select it as a TIMESTAMP, "
        "e.g. CAST(note AS TIMESTAMP) AS note in the query.",
    ),
    "date-timestamp-hourly": (
        {"timestamp_column": "born"},
        "timestamp_column 'born' is a DATE, which only serves windows that start and end at midnight UTC; schedule "
        "the sync daily (e.g. CronDataIntervalTimetable('0 0 * * *', timezone='UTC')) or name a TIMESTAMP column.",
    ),
    "sql-syntax-error": (
        {"query": "SELECT * FROM parity_clean WHERE"},
        'Redshift refused the query: syntax error at or near ")"; fix query (syncing {subject}).',
    ),
    "missing-table": (
        {"query": "SELECT * FROM parity_no_such_table"},
        'Redshift refused the query: relation "parity_no_such_table" does not exist; fix query (syncing {subject}).',
    ),
}


@pytest.mark.parametrize("spark_path", [SPARK, SPARK_SQL])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_configurations_fail_alike(versions: AporiaProbe, clean: str, case: str, spark_path: str) -> None:
    changes, message = REFUSALS[case]
    arguments = {"query": clean} | changes
    in_task, spark = failure(IN_TASK, WINDOW, **arguments), failure(spark_path, WINDOW, **arguments)
    assert in_task == spark
    assert in_task == ("AirflowFailException", message)
    assert versions.count(MODEL_ID, IN_TASK)["total"] == versions.count(MODEL_ID, spark_path)["total"] == 0


# ---------------------------------------------------------------------------- 4. no Spark in the task


def test_the_in_task_path_starts_no_spark(versions: AporiaProbe, clean: str) -> None:
    """A fresh interpreter runs a small sync; pyspark (and so a JVM) is never imported."""
    script = (
        "import json, sys\n"
        "from datetime import datetime\n"
        "from tests.helpers import sync\n"
        "arguments = json.loads(sys.argv[1])\n"
        "window = tuple(datetime.fromisoformat(t) for t in arguments.pop('window'))\n"
        "summary = sync(window, **arguments)\n"
        "loaded = sorted(m for m in ('pyspark', 'py4j') if m in sys.modules)\n"
        "print(json.dumps({'summary': summary, 'modules': loaded}))\n"
    )
    arguments = SYNC_ARGS | {"model_version": IN_TASK, "query": clean, "window": [t.isoformat() for t in WINDOW]}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(arguments)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    assert counts(report["summary"]) == CLEAN_SUMMARY
    assert stored(versions, IN_TASK) == expected_fragments([*CLEAN_ROWS, *CLEAN_OUTSIDE], WINDOW)


# ------------------------------------------------------------------------- 6. values at the types' edges

CORNERS_MODEL = "parity-corners"
CORNER_FEATURES = {"x": "numeric", "v": "vector", "d": "datetime", "s": "string"}
CORNER_LAYOUT = [
    Column("pid", "VARCHAR(64)", "%s"),
    Column("ts", "TIMESTAMPTZ", "%s::timestamptz"),
    Column("id_big", "BIGINT", "%s::bigint"),
    Column("id_float", "DOUBLE PRECISION", "%s::float8"),
    Column("id_num", "NUMERIC", "%s::numeric"),
    Column("id_dec", "NUMERIC(10,2)", "%s::numeric(10,2)"),
    Column("id_char", "CHAR(6)", "%s"),
    Column("x_double", "DOUBLE PRECISION", "%s::float8"),
    Column("x_real", "REAL", "%s::real"),
    Column("x_num", "NUMERIC", "%s::numeric"),
    Column("v_small", "SUPER", "JSON_PARSE(%s)"),
    Column("v_big", "SUPER", "JSON_PARSE(%s)"),
    Column("d_plain", "TIMESTAMPTZ", "%s::timestamptz"),
    Column("d_old_date", "DATE", "%s::date"),
    Column("d_old_ts", "TIMESTAMP", "%s::timestamp"),
    Column("s_plain", "VARCHAR(16)", "%s"),
    Column("s_char", "CHAR(6)", "%s"),
    Column("will_buy", "BOOLEAN", "%s::boolean"),
    Column("proba", "DOUBLE PRECISION", "%s::float8"),
]
CORNER_VALUES = [
    # id_big, id_float, id_num, id_dec, id_char, x_real, x_num, v_big, d_old_date, d_old_ts, s_char
    (1, 3.0, "3", "3.00", "k1", "0.1", "0.1", "[12345678901234567890]", "1000-01-01", "1000-01-01 00:00:00", "a"),
    (-2, 1.5, "1.50", "1.50", "k2 ", "1.1", "1.5", "[1e300]", "1582-10-10", "1582-10-10 12:00:00", "ab "),
    (
        9007199254740993,
        1e7,
        "42.125",
        "-7.25",
        " k3",
        "3.4028235e38",
        "12345678901234.123456789",
        "[0.1]",
        "1582-10-15",
        "1800-01-01 00:00:00.000001",
        " b",
    ),
    (
        3,
        0.0001,
        "-7",
        "0.10",
        "k4",
        "-2.5",
        "-0.000001",
        "[9223372036854775807]",
        "0001-01-01",
        "0001-01-01 00:00:00",
        "c",
    ),
    (
        4,
        1e20,
        "0.5",
        "100.00",
        "k5",
        "16777217",
        "1e-20",
        "[-9223372036854775809]",
        "1900-01-01",
        "1900-01-01 00:00:00",
        "d",
    ),
    (
        5,
        12345678.9,
        "100",
        "0.01",
        "k6",
        "1e-45",
        "7",
        "[1.7976931348623157e308]",
        "2100-12-31",
        "9999-12-31 23:59:59.999999",
        "e",
    ),
]
CORNER_ROWS: list[dict[str, Any]] = [
    {
        "pid": f"k-{n}",
        "ts": T0 + timedelta(minutes=n),
        "id_big": id_big,
        "id_float": id_float,
        "id_num": id_num,
        "id_dec": id_dec,
        "id_char": id_char,
        "x_double": 0.25 * n,
        "x_real": x_real,
        "x_num": x_num,
        "v_small": [0.1, n],
        "v_big": v_big,
        "d_plain": T0 - timedelta(days=n),
        "d_old_date": d_old_date,
        "d_old_ts": d_old_ts,
        "s_plain": f"s{n}",
        "s_char": s_char,
        "will_buy": True,
        "proba": 0.5,
    }
    for n, (id_big, id_float, id_num, id_dec, id_char, x_real, x_num, v_big, d_old_date, d_old_ts, s_char) in enumerate(
        CORNER_VALUES
    )
]
CORNER_MAPPING = {"x": "x_double", "v": "v_small", "d": "d_plain", "s": "s_plain"}
CORNERS: dict[str, dict[str, Any]] = {
    "bigint-ids": {"id_column": "id_big"},
    "double-ids": {"id_column": "id_float"},
    "numeric-10-2-ids": {"id_column": "id_dec"},
    "char-ids": {"id_column": "id_char"},
    "real-feature": {"features": CORNER_MAPPING | {"x": "x_real"}},
    "json-numbers-beyond-64-bits": {"features": CORNER_MAPPING | {"v": "v_big"}},
    "char-string": {"features": CORNER_MAPPING | {"s": "s_char"}},
}


@pytest.fixture(scope="module")
def corners(stack: LocalStack) -> Iterator[str]:
    yield create_table(stack, "parity_corners", CORNER_LAYOUT, CORNER_ROWS)
    redshift_sql(stack, "DROP TABLE IF EXISTS parity_corners")


@pytest.mark.parametrize("case", list(CORNERS))
def test_values_at_the_edges_of_their_types_are_sent_alike(aporia: AporiaProbe, corners: str, case: str) -> None:
    create_versions(aporia, IN_TASK, SPARK, model_id=CORNERS_MODEL, features=CORNER_FEATURES, raw_inputs={})
    arguments = {
        "model_id": CORNERS_MODEL,
        "query": corners,
        "actuals": None,
        "actuals_timestamp_column": None,
        "features": CORNER_MAPPING,
    } | CORNERS[case]
    in_task = run_sync(IN_TASK, WINDOW, **arguments)
    spark = run_sync(SPARK, WINDOW, **arguments)
    assert counts(in_task) == counts(spark)
    assert (in_task["rows_read"], in_task["fragments_sent"], in_task["rows_rejected"]) == (6, 6, 0)
    by_task, by_spark = stored(aporia, IN_TASK, CORNERS_MODEL), stored(aporia, SPARK, CORNERS_MODEL)
    assert sorted(by_task) == sorted(by_spark)
    assert by_task == by_spark


def test_a_date_timestamp_column_on_a_daily_window_is_read_alike(versions: AporiaProbe, clean: str) -> None:
    """A DATE window column (a daily schedule): c-00 and its copy c-prev-1 are born on 1990-05-17; no actual
    arrives that day."""
    day = (datetime(1990, 5, 17, tzinfo=UTC), datetime(1990, 5, 18, tzinfo=UTC))
    in_task = run_sync(IN_TASK, day, query=clean, timestamp_column="born")
    spark = run_sync(SPARK, day, query=clean, timestamp_column="born")
    assert counts(in_task) == counts(spark)
    assert counts(in_task) == CLEAN_SUMMARY | {
        "rows_read": 2,
        "fragments_sent": 2,
        "actuals_read": 0,
        "actuals_sent": 0,
    }
    by_task = stored(versions, IN_TASK)
    assert by_task == stored(versions, SPARK)
    assert sorted(by_task) == ["c-00", "c-prev-1"]
    assert {f["occurred_at"] for f in by_task.values()} == {"1990-05-17T00:00:00.000000+00:00"}


# Where Spark's JDBC read changes the value, the task sends it as Redshift holds it. PostgreSQL's NUMERIC
# without a precision (Redshift has none: there it means NUMERIC(18,0)) reaches Spark as decimal(38,18), so
# ids gain 18 zeros and 1e-20 becomes 0; dates before the Gregorian switch (1582-10-15) are rebased by Spark's
# hybrid Julian calendar. The task's values are asserted exactly.
FAITHFUL: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], Any], list[Any]]] = {
    "numeric-ids": ({"id_column": "id_num"}, lambda f: f["id"], ["3", "1.50", "42.125", "-7", "0.5", "100"]),
    "numeric-feature": (
        {"features": CORNER_MAPPING | {"x": "x_num"}},
        lambda f: f["features"]["x"],
        [0.1, 1.5, 12345678901234.123, -0.000001, 1e-20, 7.0],
    ),
    "old-dates": (
        {"features": CORNER_MAPPING | {"d": "d_old_date"}},
        lambda f: f["features"]["d"],
        [f"{day}T00:00:00.000000Z" for day in ("1000-01-01", "1582-10-10", "1582-10-15", "0001-01-01", "1900-01-01")]
        + ["2100-12-31T00:00:00.000000Z"],
    ),
    "old-timestamps": (
        {"features": CORNER_MAPPING | {"d": "d_old_ts"}},
        lambda f: f["features"]["d"],
        [
            "1000-01-01T00:00:00.000000Z",
            "1582-10-10T12:00:00.000000Z",
            "1800-01-01T00:00:00.000001Z",
            "0001-01-01T00:00:00.000000Z",
            "1900-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:59.999999Z",
        ],
    ),
}


@pytest.mark.parametrize("case", list(FAITHFUL))
def test_values_spark_rebases_are_sent_as_redshift_holds_them(aporia: AporiaProbe, corners: str, case: str) -> None:
    create_versions(aporia, IN_TASK, SPARK, model_id=CORNERS_MODEL, features=CORNER_FEATURES, raw_inputs={})
    mapping, value_of, expected = FAITHFUL[case]
    arguments = {
        "model_id": CORNERS_MODEL,
        "query": corners,
        "actuals": None,
        "actuals_timestamp_column": None,
        "features": CORNER_MAPPING,
    } | mapping
    summary = run_sync(IN_TASK, WINDOW, **arguments)
    assert (summary["rows_read"], summary["fragments_sent"], summary["rows_rejected"]) == (6, 6, 0)
    fragments = sorted(aporia.fragments(CORNERS_MODEL, IN_TASK), key=lambda f: f["occurred_at"])
    assert [value_of(f) for f in fragments] == expected
