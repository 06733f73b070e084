"""A small window read, judged and sent by the task itself: the same rules and words as Spark's path, no Spark.

The rows come from a fake DB-API cursor (execute records the SQL, a FETCH hands out the next rows), the fragments go
to a fake client; every expectation is what Spark's path (`extraction.columns`: from_json, to_json, date_format,
cast to string) gives for the same values.
"""

from __future__ import annotations

import builtins
import gc
import json
import os
import re
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

import msgspec
import pyarrow as pa
import pytest

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import InvalidRowsError, SyncFailed, SyncInputError
from aporia_provider.extraction import in_task
from aporia_provider.extraction import layout as layout_module
from aporia_provider.extraction.columnar import JUDGED, id_texts
from aporia_provider.extraction.in_task import Spool, TaskRows, deliver_in_task, read_in_task, select_columns
from aporia_provider.extraction.layout import SourceLayout, layout_of
from aporia_provider.extraction.plan import SyncPlan
from aporia_provider.extraction.rulebook import UTC_MICROS, ColumnType, datetime_texts
from aporia_provider.extraction.sql import Window, windowed
from aporia_provider.redshift import RedshiftWarehouse, column_types, identifier
from aporia_provider.schema import VersionSchema

UTC = timezone.utc
PLUS_TWO = timezone(timedelta(hours=2))
WINDOW = Window(datetime(2026, 11, 20, 10, tzinfo=UTC), datetime(2026, 11, 20, 11, tzinfo=UTC))
QUERY = "SELECT * FROM ml.predictions"
ACTUALS_QUERY = "SELECT * FROM ml.actuals"
MODEL = ("fraud", "v1")
WAREHOUSE = RedshiftWarehouse(open_connection=object, spark_options=dict, namespace=str)
SUBJECT = "fraud v1"

SCHEMA = VersionSchema.parse(
    {
        "amount": "numeric",
        "segment": "categorical",
        "owner": "string",
        "active": "boolean",
        "seen_at": "datetime",
        "embedding": "vector",
        "grid": {"type": "tensor", "dimensions": [2, 3]},
        "scores": "dict",
    },
    {"proba": "numeric", "logits": {"type": "tensor", "dimensions": [4]}},
    {"note": "text"},
)
PLAN = SyncPlan(
    model_id="fraud",
    model_version="v1",
    schema=SCHEMA,
    query=QUERY,
    id_column="prediction_id",
    timestamp_column="predicted_at",
    features={"amount": "amount_usd"},
    actuals={"proba": "true_proba", "logits": "true_logits"},
    actuals_timestamp_column="actual_at",
    actuals_query=ACTUALS_QUERY,
)

# What the predictions query returns, as Redshift type codes; `unused` (a TIME) is never selected.
PREDICTION_TYPES = {
    "prediction_id": 1043,
    "predicted_at": 1114,
    "unused": 1083,
    "amount_usd": 1700,
    "segment": 23,
    "owner": 1043,
    "active": 16,
    "seen_at": 1184,
    "embedding": 4000,
    "grid": 4000,
    "scores": 3802,
    "proba": 701,
    "logits": 4000,
    "note": 25,
}
# The columns the task selects, in the order it selects them: id, timestamp, then each group's fields.
SELECTED = [
    "prediction_id",
    "predicted_at",
    "amount_usd",
    "segment",
    "owner",
    "active",
    "seen_at",
    "embedding",
    "grid",
    "scores",
    "proba",
    "logits",
    "note",
]
CLEAN: dict[str, Any] = {
    "prediction_id": "p1",
    "predicted_at": datetime(2026, 11, 20, 10, 30),
    "amount_usd": Decimal("12.50"),
    "segment": 3,
    "owner": "ana",
    "active": True,
    "seen_at": datetime(2026, 11, 20, 12, 15, tzinfo=PLUS_TWO),
    "embedding": "[0.1, 0.2]",
    "grid": "[[1, 2, 3], [4, 5, 6]]",
    "scores": '{"a": 1, "b": 0.5}',
    "proba": 0.75,
    "logits": "[1, 2, 3, 4]",
    "note": "hello",
}
CLEAN_FRAGMENT = {
    "id": "p1",
    "features": {
        "amount": 12.5,
        "segment": 3,
        "owner": "ana",
        "active": True,
        "seen_at": "2026-11-20T10:15:00.000000Z",
        "embedding": [0.1, 0.2],
        "grid": [[1, 2, 3], [4, 5, 6]],
        "scores": {"a": 1, "b": 0.5},
    },
    "predictions": {"proba": 0.75, "logits": [1, 2, 3, 4]},
    "rawInputs": {"note": "hello"},
    "occurredAt": "2026-11-20T10:30:00.000000Z",
}
ACTUAL_TYPES = {"prediction_id": 20, "comment": 1043, "actual_at": 1114, "true_proba": 1700, "true_logits": 4000}
ACTUAL_AT = datetime(2026, 11, 20, 10, 45)

VECTOR_NOT_JSON = "embedding: not JSON holding a list of numbers"
VECTOR_BAD = "embedding: holds a null or non-finite element"
GRID_NOT_JSON = "grid: not JSON holding 2 levels of lists of numbers"
GRID_SHAPE = "grid: expected a tensor of shape [2, 3]"
GRID_BAD = "grid: holds a null or non-finite element"
LOGITS_SHAPE = "logits: expected a tensor of shape [4]"
LOGITS_BAD = "logits: holds a null or non-finite element"
SCORES_NOT_JSON = "scores: not JSON holding an object of numbers"
SCORES_BAD = "scores: holds a null or non-finite value"


class FakeCursor:
    """A DB-API cursor: execute records the SQL; after `FETCH FORWARD n`, fetchall hands out up to n rows."""

    def __init__(self, rows: Sequence[Sequence[Any]]) -> None:
        self.rows = [tuple(row) for row in rows]
        self.executed: list[str] = []
        self.fetch_sizes: list[int] = []
        self.fetched: list[tuple[Any, ...]] = []
        self.names: set[str] = set()  # of the server-side cursors declared

    def execute(self, sql: str) -> None:
        if name := re.search(r"aporia_sync_rows_\d+", sql):
            self.names.add(name.group(0))
        self.executed.append(re.sub(r"aporia_sync_rows_\d+", "aporia_sync_rows", sql))
        if fetch := re.match(r"FETCH FORWARD (\d+) FROM ", sql):
            size = int(fetch.group(1))
            self.fetch_sizes.append(size)
            self.fetched, self.rows = self.rows[:size], self.rows[size:]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.fetched


@dataclass
class Judged:
    """What the task's reader made of a window: counts, examples, and the fragments it would send."""

    rows: int = 0
    rejected: int = 0
    examples: list[str] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)
    reread: int = 0  # of the rows that pass, those read only for the lookback


def spooled(fragments: list[str]) -> TaskRows:
    """Rows that passed, spooled as the reader spools them."""
    spool = Spool()
    ids = [json.loads(fragment)["id"] for fragment in fragments]
    nothing = [None] * len(fragments)
    columns = [ids, fragments, nothing, nothing, nothing, [False] * len(fragments)]
    spool.add(
        pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(columns, JUDGED, strict=True)], schema=JUDGED)
    )
    return TaskRows(rows=len(fragments), spool=spool)


class FakeClient:
    """Records each batch; `on_call` runs after a batch is recorded (e.g. to ask for a stop)."""

    def __init__(self, retries: int = 0, warnings: Sequence[str] = ()) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        self.retries = retries
        self.warnings = list(warnings)
        self.on_call: Any = None

    def log_batches(
        self, model_id: str, model_version: str, batches: Iterable[tuple[str, int]], in_flight: int = 1
    ) -> LogResult:
        result = LogResult()
        for joined, count in batches:
            fragments = [json.dumps(f, separators=(",", ":")) for f in json.loads(f"[{joined}]")]
            assert len(fragments) == count
            result.add(self.log_fragment_json(model_id, model_version, fragments))
        return result

    def log_fragment_json(self, model_id: str, model_version: str, fragments: list[str]) -> LogResult:
        self.calls.append((model_id, model_version, list(fragments)))
        if self.on_call is not None:
            self.on_call(len(self.calls))
        return LogResult(len(fragments), 1, self.retries, list(self.warnings))


def description(types: dict[str, int]) -> list[tuple[Any, ...]]:
    """A cursor description as redshift_connector gives it: (name, type_code, None, ...)."""
    return [(name, code, None, None, None, None, None) for name, code in types.items()]


def prediction(**changes: Any) -> tuple[Any, ...]:
    """A row of the task's SELECT: the clean row with some columns changed."""
    values = CLEAN | changes
    return tuple(values[column] for column in SELECTED)


def read(
    rows: Sequence[Sequence[Any]],
    kind: str = "predictions",
    types: dict[str, int] | None = None,
    plan: SyncPlan = PLAN,
) -> tuple[Judged, FakeCursor]:
    cursor = FakeCursor(rows)
    codes = types or (PREDICTION_TYPES if kind == "predictions" else ACTUAL_TYPES)
    return judged(cursor, layout(plan, kind), column_types(description(codes))), cursor


def judged(cursor: FakeCursor, source: SourceLayout, types: dict[str, ColumnType | None]) -> Judged:
    """The source's window read as the sync reads it: the columns selected, streamed from a server-side cursor."""
    columns, select = select_columns(source, types, WINDOW)
    result = read_in_task(WAREHOUSE.stream(cursor, select, in_task.FETCH_ROWS), source, columns, types, WINDOW.start)
    try:
        fragments = [fragment for batch in result.fragments() for fragment in batch.to_pylist()]
        return Judged(result.rows, result.rejected, result.examples, fragments, result.reread)
    finally:
        result.release()


def streamed(select: str) -> list[str]:
    """The statements that stream one query's rows, once they ran out."""
    return ["BEGIN", f"DECLARE aporia_sync_rows CURSOR FOR {select}"]


def layout(plan: SyncPlan, kind: str) -> SourceLayout:
    """The layout of the plan's source of this kind, as the sync derives it."""
    return next(source for source in layout_of(plan, identifier) if source.kind == kind)


def verdict(**changes: Any) -> TaskRows:
    """One prediction row, judged."""
    result, _ = read([prediction(**changes)])
    return result


def fragment_of(**changes: Any) -> dict[str, Any]:
    """The fragment of one prediction row that must pass."""
    result = verdict(**changes)
    assert (result.rows, result.rejected, result.examples) == (1, 0, [])
    parsed: dict[str, Any] = json.loads(result.fragments[0])
    return parsed


def refusal_of(kind: str = "predictions", **types: int) -> str:
    codes = (PREDICTION_TYPES if kind == "predictions" else ACTUAL_TYPES) | types
    with pytest.raises(SyncInputError) as raised:
        read([], kind, codes)
    return str(raised.value)


# column_types: a DB-API description as the shared checks see it


def test_column_types_name_the_types_as_spark_does() -> None:
    types = column_types(
        description(
            {
                "b": 16,
                "big": 20,
                "small": 21,
                "i": 23,
                "real": 700,
                "double": 701,
                "numeric": 1700,
                "text": 25,
                "varchar": 1043,
                "char": 1042,
                "jsonb": 3802,
                "super": 4000,
                "day": 1082,
                "ts": 1114,
                "tstz": 1184,
            }
        )
    )
    assert types == {
        "b": ColumnType("boolean", "boolean"),
        "big": ColumnType("integral", "bigint"),
        "small": ColumnType("integral", "smallint"),
        "i": ColumnType("integral", "int"),
        "real": ColumnType("fractional", "float"),
        "double": ColumnType("fractional", "double"),
        "numeric": ColumnType("decimal", "decimal"),
        "text": ColumnType("string", "string"),
        "varchar": ColumnType("string", "string"),
        "char": ColumnType("string", "string"),
        "jsonb": ColumnType("string", "string"),
        "super": ColumnType("string", "string"),
        "day": ColumnType("date", "date"),
        "ts": ColumnType("timestamp", "timestamp"),
        "tstz": ColumnType("timestamp", "timestamp"),
    }


@pytest.mark.parametrize("code", [1022, 17, 0])
def test_column_types_leave_other_types_to_spark(code: int) -> None:
    assert column_types(description({"id": 23, "x": code})) == {"id": ColumnType("integral", "int"), "x": None}


@pytest.mark.parametrize("code", [1083, 1266])
def test_a_time_of_day_is_named_so_no_datetime_field_takes_it(code: int) -> None:
    # Spark reads TIME and TIMETZ as a timestamp on 1970-01-01; both readers refuse it for a datetime field.
    assert column_types(description({"x": code})) == {"x": ColumnType("time", "time")}
    assert refusal_of(seen_at=code) == (
        "Column 'seen_at' for feature 'seen_at' is time, but the field is datetime; "
        "cast it in the query or with select_expr to a timestamp."
    )


def test_column_types_keep_the_query_order() -> None:
    assert list(column_types(description(PREDICTION_TYPES))) == list(PREDICTION_TYPES)


# The query: only the mapped columns, quoted, from the windowed query


def test_the_read_selects_only_the_mapped_columns_from_the_window() -> None:
    _, cursor = read([prediction()])
    quoted = ", ".join(f'"{column}"' for column in SELECTED)
    assert cursor.executed[:2] == streamed(f"SELECT {quoted} FROM {windowed(QUERY, 'predicted_at', WINDOW)}")
    assert '"unused"' not in cursor.executed[1]
    assert '"amount"' not in cursor.executed[1]  # read through its mapping, amount_usd


def test_the_actuals_read_selects_the_id_arrival_and_actual_columns() -> None:
    _, cursor = read([], "actuals")
    columns = '"prediction_id", "actual_at", "true_proba", "true_logits"'
    assert cursor.executed[:2] == streamed(f"SELECT {columns} FROM {windowed(ACTUALS_QUERY, 'actual_at', WINDOW)}")


def test_rows_are_fetched_until_the_cursor_runs_dry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(in_task, "FETCH_ROWS", 2)
    result, cursor = read([prediction(prediction_id=f"p{n}") for n in range(5)])
    assert cursor.fetch_sizes == [2, 2, 2, 2]
    assert cursor.executed[-2:] == ["CLOSE aporia_sync_rows", "COMMIT"]
    assert (result.rows, result.rejected, len(result.fragments)) == (5, 0, 5)
    assert [json.loads(f)["id"] for f in result.fragments] == ["p0", "p1", "p2", "p3", "p4"]


def test_each_stream_declares_a_cursor_of_its_own_name() -> None:
    # The driver caches a statement's result columns by its text: a second query fetched FROM the same name would be
    # read with the first one's columns.
    cursor = FakeCursor([])
    judged(cursor, layout(PLAN, "predictions"), column_types(description(PREDICTION_TYPES)))
    judged(cursor, layout(PLAN, "actuals"), column_types(description(ACTUAL_TYPES)))
    assert len(cursor.names) == 2


def test_an_empty_window_has_nothing_to_send() -> None:
    result, cursor = read([])
    assert result == Judged()
    assert cursor.fetch_sizes == [in_task.FETCH_ROWS]


# Clean rows: the fragment Spark's to_json would write


def test_a_clean_row_becomes_its_fragment() -> None:
    result = verdict()
    assert (result.rows, result.rejected, result.examples) == (1, 0, [])
    parsed = json.loads(result.fragments[0])
    assert parsed == CLEAN_FRAGMENT
    assert list(parsed) == ["id", "features", "predictions", "rawInputs", "occurredAt"]  # Spark's struct order
    assert list(parsed["features"]) == list(CLEAN_FRAGMENT["features"])


def test_json_text_of_vectors_tensors_and_dicts_is_sent_as_it_is() -> None:
    text = verdict(
        embedding=" [0.1,   2e-3, 1E2] ", grid="[[1,2,3],\n[4,5,6]]", scores='{"a" : 1}', logits="[1, 2.50, 3, 4]"
    ).fragments[0]
    assert '"embedding": [0.1,   2e-3, 1E2] ' in text
    assert '"grid":[[1,2,3],\n[4,5,6]]' in text
    assert '"scores":{"a" : 1}' in text
    assert '"logits":[1, 2.50, 3, 4]' in text
    assert json.loads(text)["features"]["embedding"] == [0.1, 0.002, 100.0]


def test_empty_lists_and_objects_are_values() -> None:
    parsed = fragment_of(embedding="[]", scores="{}")
    assert (parsed["features"]["embedding"], parsed["features"]["scores"]) == ([], {})


@pytest.mark.parametrize(
    ("value", "sent"),
    [(12, "12.0"), (Decimal("1.50"), "1.5"), (Decimal("-0.125"), "-0.125"), (7.25, "7.25"), (0, "0.0")],
)
def test_numeric_values_are_sent_as_doubles(value: Any, sent: str) -> None:
    text = verdict(amount_usd=value).fragments[0]
    assert f'"amount":{sent},' in text
    assert isinstance(json.loads(text)["features"]["amount"], float)


def test_categorical_values_stay_integers() -> None:
    text = verdict(segment=12).fragments[0]
    assert '"segment":12,' in text


@pytest.mark.parametrize(
    ("moment", "written"),
    [
        (datetime(2026, 11, 20, 10, 30, 1, 5), "2026-11-20T10:30:01.000005Z"),
        (datetime(2026, 11, 20, 1, 30, tzinfo=PLUS_TWO), "2026-11-19T23:30:00.000000Z"),
        (datetime(2026, 11, 20, 10, 30, 0, 123456, tzinfo=UTC), "2026-11-20T10:30:00.123456Z"),
        (date(2026, 11, 20), "2026-11-20T00:00:00.000000Z"),
    ],
)
def test_timestamps_and_datetime_fields_are_written_as_date_format_does(moment: datetime | date, written: str) -> None:
    parsed = fragment_of(predicted_at=moment, seen_at=moment)
    assert parsed["occurredAt"] == written
    assert parsed["features"]["seen_at"] == written


def test_a_date_timestamp_column_serves_whole_days() -> None:
    result, _ = read([prediction(predicted_at=date(2026, 11, 20))], types=PREDICTION_TYPES | {"predicted_at": 1082})
    assert json.loads(result.fragments[0])["occurredAt"] == "2026-11-20T00:00:00.000000Z"


def test_null_values_are_left_out() -> None:
    parsed = fragment_of(
        amount_usd=None, segment=None, owner=None, active=None, seen_at=None, embedding=None, proba=None, note=None
    )
    assert parsed["features"] == {
        "grid": [[1, 2, 3], [4, 5, 6]],
        "scores": {"a": 1, "b": 0.5},
    }
    assert parsed["predictions"] == {"logits": [1, 2, 3, 4]}
    assert parsed["rawInputs"] == {}  # a group whose values are all null stays, empty, as Spark's struct does


@pytest.mark.parametrize("text", ["null", " NULL ", "Null"])
def test_json_null_is_missing_not_a_problem(text: str) -> None:
    parsed = fragment_of(embedding=text, grid=text, scores=text, logits=text)
    assert set(parsed["features"]) == {"amount", "segment", "owner", "active", "seen_at"}
    assert parsed["predictions"] == {"proba": 0.75}


def test_sql_null_is_missing_not_a_problem() -> None:
    parsed = fragment_of(embedding=None, grid=None, scores=None, logits=None)
    assert set(parsed["features"]) == {"amount", "segment", "owner", "active", "seen_at"}
    assert parsed["predictions"] == {"proba": 0.75}


def test_a_false_boolean_and_empty_string_are_values() -> None:
    parsed = fragment_of(active=False, owner="", note="")
    assert (parsed["features"]["active"], parsed["features"]["owner"], parsed["rawInputs"]) == (False, "", {"note": ""})


# Problems: the words Spark's path uses, for the first problem of the row


PROBLEMS: list[tuple[str, Any, str]] = [
    # Not JSON holding the field's shape: from_json gives null.
    ("embedding", "[0.1, 0.2", VECTOR_NOT_JSON),
    ("embedding", "", VECTOR_NOT_JSON),
    ("embedding", "   ", VECTOR_NOT_JSON),
    ("embedding", '["a"]', VECTOR_NOT_JSON),
    ("embedding", '["1.5"]', VECTOR_NOT_JSON),
    ("embedding", "[[1]]", VECTOR_NOT_JSON),
    ("embedding", "[1, [2]]", VECTOR_NOT_JSON),
    ("embedding", '[{"a": 1}]', VECTOR_NOT_JSON),
    ("embedding", '{"a": 1}', VECTOR_NOT_JSON),
    ("embedding", "[true]", VECTOR_NOT_JSON),
    ("embedding", "1.5", VECTOR_NOT_JSON),
    ("embedding", '"[1]"', VECTOR_NOT_JSON),
    # Spark reads only NaN, Infinity, +Infinity, -Infinity, +INF and -INF strings as doubles; "INF" fails.
    ("embedding", '["INF"]', VECTOR_NOT_JSON),
    # A null or non-finite element.
    ("embedding", "[1, null]", VECTOR_BAD),
    ("embedding", "[NaN]", VECTOR_BAD),
    ("embedding", "[Infinity, 1]", VECTOR_BAD),
    ("embedding", "[-Infinity]", VECTOR_BAD),
    ("embedding", "[1e400]", VECTOR_BAD),
    ("embedding", "[-1e400]", VECTOR_BAD),
    ("embedding", "[1" + "0" * 400 + "]", VECTOR_BAD),
    ("embedding", '["NaN"]', VECTOR_BAD),
    ("embedding", '[1, "Infinity"]', VECTOR_BAD),
    ("embedding", '["+INF"]', VECTOR_BAD),
    ("embedding", '["-Infinity"]', VECTOR_BAD),
    # Tensors: the shape is judged before the elements.
    ("grid", "[[1, 2, 3]]", GRID_SHAPE),
    ("grid", "[[1, 2, 3], [4, 5]]", GRID_SHAPE),
    ("grid", "[[1, 2], [3, 4, 5]]", GRID_SHAPE),
    ("grid", "[[1, 2, 3], [4, 5, 6], [7, 8, 9]]", GRID_SHAPE),
    ("grid", "[[1, 2, 3], null]", GRID_SHAPE),
    ("grid", "[[1, 2], [NaN]]", GRID_SHAPE),
    ("grid", "[[], []]", GRID_SHAPE),
    ("grid", "[[1, 2, 3], [4, 5, NaN]]", GRID_BAD),
    ("grid", "[[1, 2, 3], [4, null, 6]]", GRID_BAD),
    ("grid", '[["NaN", 2, 3], [4, 5, 6]]', GRID_BAD),
    ("grid", "[1, 2, 3, 4, 5, 6]", GRID_NOT_JSON),
    ("grid", "[[1, 2, 3], 4]", GRID_NOT_JSON),
    ("grid", "[[1, 2, 3], [4, 5, [6]]]", GRID_NOT_JSON),
    ("grid", '[[1, 2, 3], [4, 5, "x"]]', GRID_NOT_JSON),
    ("grid", "[[1, 2, 3], [4, 5, 6]", GRID_NOT_JSON),
    ("logits", "[1, 2, 3]", LOGITS_SHAPE),
    ("logits", "[1, 2, 3, 4, 5]", LOGITS_SHAPE),
    ("logits", "[1, null]", LOGITS_SHAPE),
    ("logits", "[1, 2, 3, null]", LOGITS_BAD),
    ("logits", "[1, 2, 3, 1e400]", LOGITS_BAD),
    ("logits", "[[1, 2, 3, 4]]", "logits: not JSON holding a list of numbers"),
    # Dicts.
    ("scores", '{"a": 1, "b": null}', SCORES_BAD),
    ("scores", '{"a": NaN}', SCORES_BAD),
    ("scores", '{"a": "NaN"}', SCORES_BAD),
    ("scores", '{"a": 1e400}', SCORES_BAD),
    ("scores", '{"a": {"b": 1}}', SCORES_NOT_JSON),
    ("scores", '{"a": [1]}', SCORES_NOT_JSON),
    ("scores", '{"a": "1"}', SCORES_NOT_JSON),
    ("scores", '{"a": true}', SCORES_NOT_JSON),
    ("scores", "[1]", SCORES_NOT_JSON),
    ("scores", '{"a": 1', SCORES_NOT_JSON),
    ("scores", "", SCORES_NOT_JSON),
    # Numbers.
    ("amount_usd", float("nan"), "amount: not a finite number"),
    ("amount_usd", float("inf"), "amount: not a finite number"),
    ("proba", float("-inf"), "proba: not a finite number"),
    ("proba", float("nan"), "proba: not a finite number"),
]


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [pytest.param(column, value, problem, id=f"{column}={value!r}"[:70]) for column, value, problem in PROBLEMS],
)
def test_a_value_problem_rejects_its_row_in_sparks_words(column: str, value: Any, problem: str) -> None:
    result = verdict(**{column: value})
    assert (result.rows, result.rejected, result.fragments) == (1, 1, [])
    assert result.examples == [f"predictions p1: {problem}"]


def test_the_first_problem_in_field_order_wins() -> None:
    bad = {"amount_usd": float("nan"), "embedding": "[NaN]", "scores": "[1]", "proba": float("nan"), "logits": "[1]"}
    assert verdict(**bad).examples == ["predictions p1: amount: not a finite number"]
    assert verdict(**(bad | {"amount_usd": 1})).examples == [f"predictions p1: {VECTOR_BAD}"]
    assert verdict(**(bad | {"amount_usd": 1, "embedding": None})).examples == [f"predictions p1: {SCORES_NOT_JSON}"]
    only_predictions = bad | {"amount_usd": 1, "embedding": None, "scores": None}
    assert verdict(**only_predictions).examples == ["predictions p1: proba: not a finite number"]


def test_a_null_timestamp_comes_before_the_fields_problems() -> None:
    assert verdict(predicted_at=None).examples == ["predictions p1: predicted_at is null"]
    assert verdict(predicted_at=None, embedding="[NaN]").examples == ["predictions p1: predicted_at is null"]


def test_a_null_id_overrides_every_other_problem() -> None:
    result = verdict(prediction_id=None, predicted_at=None, amount_usd=float("nan"))
    assert (result.rows, result.rejected, result.fragments) == (1, 1, [])
    assert result.examples == ["predictions (no id): prediction_id is null"]
    assert verdict(prediction_id=None).examples == ["predictions (no id): prediction_id is null"]


def test_every_row_of_a_repeated_id_is_rejected() -> None:
    rows = [
        prediction(prediction_id="p1"),
        prediction(prediction_id="p2"),
        prediction(prediction_id="p1", amount_usd=float("nan")),
        prediction(prediction_id="p3", embedding="[NaN]"),
        prediction(prediction_id="p3"),
        prediction(prediction_id="p4"),
    ]
    result, _ = read(rows)
    assert (result.rows, result.rejected) == (6, 4)
    assert [json.loads(f)["id"] for f in result.fragments] == ["p2", "p4"]
    assert result.examples == [
        "predictions p1: duplicate prediction_id p1",
        "predictions p1: duplicate prediction_id p1",
        "predictions p3: duplicate prediction_id p3",
        "predictions p3: duplicate prediction_id p3",
    ]


def test_ids_whose_kept_hash_bits_collide_are_told_apart_by_the_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    # p1 and p2 share the 38 bits of hash the spool keeps (and its bucket); only p3 repeats.
    colliding = {"p1": 5, "p2": 5 + (1 << in_task.ID_HASH_BITS)}
    monkeypatch.setattr(in_task, "hash", lambda value: colliding.get(value, builtins.hash(value)), raising=False)
    rows = [prediction(prediction_id=i) for i in ("p1", "p2", "p3", "p4", "p3")]
    result, _ = read(rows)
    assert (result.rows, result.rejected) == (5, 2)
    assert [json.loads(f)["id"] for f in result.fragments] == ["p1", "p2", "p4"]


def test_null_ids_are_not_duplicates_of_each_other() -> None:
    result, _ = read([prediction(prediction_id=None), prediction(prediction_id=None), prediction()])
    assert (result.rows, result.rejected, len(result.fragments)) == (3, 2, 1)
    assert result.examples == ["predictions (no id): prediction_id is null"] * 2


def test_integer_ids_are_named_as_their_strings() -> None:
    rows = [prediction(prediction_id=7), prediction(prediction_id=8), prediction(prediction_id=7)]
    result, _ = read(rows, types=PREDICTION_TYPES | {"prediction_id": 20})
    assert (result.rows, result.rejected) == (3, 2)
    assert json.loads(result.fragments[0])["id"] == "8"
    assert result.examples == ["predictions 7: duplicate prediction_id 7"] * 2


def test_examples_are_capped_and_counts_are_not() -> None:
    rows = [prediction(prediction_id=f"p{n}", amount_usd=float("nan")) for n in range(8)]
    result, _ = read([*rows, prediction(prediction_id="ok")])
    assert (result.rows, result.rejected) == (9, 8)
    assert result.examples == [f"predictions p{n}: amount: not a finite number" for n in range(5)]
    assert [json.loads(f)["id"] for f in result.fragments] == ["ok"]


def test_too_many_repeated_ids_call_the_query_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout_module, "MAX_DUPLICATES_LISTED", 2)
    twice = [prediction(prediction_id=f"p{n}") for n in (1, 1, 2, 2)]
    result, _ = read(twice)
    assert result.rejected == 4
    with pytest.raises(InvalidRowsError) as raised:
        read([*twice, prediction(prediction_id="p3"), prediction(prediction_id="p3")])
    assert str(raised.value) == (
        "More than 2 prediction_id values repeat within the window; the query probably joins rows it should not; "
        "make it return one row per prediction."
    )
    assert isinstance(raised.value, SyncInputError)


# Actuals


def test_actuals_are_sent_by_id_and_rows_without_any_are_not_counted() -> None:
    rows = [
        (41, ACTUAL_AT, Decimal("0.5"), None),
        (42, ACTUAL_AT, None, None),  # no actual has arrived
        (43, ACTUAL_AT, 1, "[1, 2, 3, 4]"),
        (44, ACTUAL_AT, None, "null"),  # JSON null: an actual row, with no value to send (as in Spark)
        (None, ACTUAL_AT, None, None),
    ]
    result, _ = read(rows, "actuals")
    assert (result.rows, result.rejected, result.examples) == (3, 0, [])
    assert [json.loads(f) for f in result.fragments] == [
        {"id": "41", "actuals": {"proba": 0.5}},
        {"id": "43", "actuals": {"proba": 1.0, "logits": [1, 2, 3, 4]}},
        {"id": "44", "actuals": {}},
    ]
    assert result.fragments[1] == '{"id":"43","actuals":{"proba":1.0,"logits":[1, 2, 3, 4]}}'


def test_actuals_problems_in_sparks_words() -> None:
    rows = [
        (41, ACTUAL_AT, float("nan"), "[1, 2, 3]"),
        (42, ACTUAL_AT, None, "[1, 2, 3]"),
        (43, ACTUAL_AT, None, "[1, 2, 3, null]"),
        (None, ACTUAL_AT, 1, None),
        (None, ACTUAL_AT, None, None),  # no actual, no id: not a row at all
        (45, ACTUAL_AT, 0.25, None),
    ]
    result, _ = read(rows, "actuals")
    assert (result.rows, result.rejected) == (5, 4)
    assert result.examples == [
        "actuals 41: proba: not a finite number",
        f"actuals 42: {LOGITS_SHAPE}",
        f"actuals 43: {LOGITS_BAD}",
        "actuals (no id): prediction_id is null",
    ]
    assert result.fragments == ['{"id":"45","actuals":{"proba":0.25}}']


def test_rows_that_pass_from_before_the_runs_window_are_counted_as_reread() -> None:
    before, inside = datetime(2026, 11, 20, 9, 50), datetime(2026, 11, 20, 10, 5)
    clean, _ = read([prediction(predicted_at=before), prediction(prediction_id="p2", predicted_at=WINDOW.start)])
    assert (clean.rows, clean.rejected, clean.reread) == (2, 0, 1)  # the window's start is in the window
    rows = [
        prediction(prediction_id="p1", predicted_at=before),
        prediction(prediction_id="p2", predicted_at=before),
        prediction(prediction_id="p2", predicted_at=inside),  # a repeated id rejects both rows
        prediction(prediction_id="p3", predicted_at=before, amount_usd=float("nan")),
        prediction(prediction_id="p4", predicted_at=inside),
        # With a zone (TIMESTAMPTZ): 11:55+02:00 is 09:55 UTC, before the window.
        prediction(prediction_id="p5", predicted_at=datetime(2026, 11, 20, 11, 55, tzinfo=PLUS_TWO)),
    ]
    result, _ = read(rows)
    assert (result.rows, result.rejected, result.reread) == (6, 3, 2)


def test_actuals_are_reread_by_their_arrival() -> None:
    rows = [(41, datetime(2026, 11, 20, 9, 59), 0.5, None), (42, ACTUAL_AT, 1, None), (43, None, None, None)]
    result, _ = read(rows, "actuals")
    assert (result.rows, result.rejected, result.reread) == (2, 0, 1)


def test_only_rows_with_actuals_count_as_repeats() -> None:
    rows = [(41, ACTUAL_AT, None, None), (41, ACTUAL_AT, 0.5, None), (42, ACTUAL_AT, 1, None), (42, ACTUAL_AT, 0, None)]
    result, _ = read(rows, "actuals")
    assert (result.rows, result.rejected) == (3, 2)
    assert result.fragments == ['{"id":"41","actuals":{"proba":0.5}}']
    assert result.examples == ["actuals 42: duplicate prediction_id 42"] * 2


# Refusals: the window cannot be read as asked, before any row is


@pytest.mark.parametrize(
    ("types", "message"),
    [
        (
            {"amount_usd": 1043},
            "Column 'amount_usd' for feature 'amount' is string, but the field is numeric; "
            "cast it in the query or with select_expr to a number.",
        ),
        (
            {"segment": 701},
            "Column 'segment' for feature 'segment' is double, but the field is categorical; "
            "cast it in the query or with select_expr to an integer.",
        ),
        (
            {"owner": 23},
            "Column 'owner' for feature 'owner' is int, but the field is string; "
            "cast it in the query or with select_expr to a string.",
        ),
        (
            {"active": 21},
            "Column 'active' for feature 'active' is smallint, but the field is boolean; "
            "cast it in the query or with select_expr to a boolean.",
        ),
        (
            {"seen_at": 1043},
            "Column 'seen_at' for feature 'seen_at' is string, but the field is datetime; "
            "cast it in the query or with select_expr to a timestamp.",
        ),
        (
            {"embedding": 16},
            "Column 'embedding' for feature 'embedding' is boolean, but the field is vector; "
            "select an array of 1 level(s) of numbers, or JSON text (SUPER or VARCHAR).",
        ),
        (
            {"grid": 1700},
            "Column 'grid' for feature 'grid' is decimal, but the field is tensor; "
            "select an array of 2 level(s) of numbers, or JSON text (SUPER or VARCHAR).",
        ),
        (
            {"scores": 20},
            "Column 'scores' for feature 'scores' is bigint, but the field is dict; "
            "select a map of string to number, or JSON text (SUPER or VARCHAR).",
        ),
        (
            {"proba": 1114},
            "Column 'proba' for prediction 'proba' is timestamp, but the field is numeric; "
            "cast it in the query or with select_expr to a number.",
        ),
        (
            {"note": 1082},
            "Column 'note' for raw input 'note' is date, but the field is text; "
            "cast it in the query or with select_expr to a string.",
        ),
    ],
)
def test_a_column_of_the_wrong_type_is_refused(types: dict[str, int], message: str) -> None:
    cursor = FakeCursor([prediction()])
    with pytest.raises(SyncInputError) as raised:
        judged(cursor, layout(PLAN, "predictions"), column_types(description(PREDICTION_TYPES | types)))
    assert str(raised.value) == message
    assert cursor.executed == []  # refused before anything is read


def test_an_actual_column_of_the_wrong_type_is_refused() -> None:
    assert refusal_of("actuals", true_proba=1043) == (
        "Column 'true_proba' for actual 'proba' is string, but the field is numeric; "
        "cast it in the query or with select_expr to a number."
    )


MAP_FIX = "map the field to an existing column"


@pytest.mark.parametrize(
    ("missing", "role", "fix"),
    [
        ("prediction_id", "named by id_column", "set id_column to an existing column"),
        ("predicted_at", "named by timestamp_column", "set timestamp_column to an existing column"),
        ("amount_usd", "needed for features", MAP_FIX),
        ("logits", "needed for predictions", MAP_FIX),
        ("note", "needed for raw_inputs", MAP_FIX),
    ],
)
def test_a_missing_column_is_refused_naming_the_argument(missing: str, role: str, fix: str) -> None:
    types = {name: code for name, code in PREDICTION_TYPES.items() if name != missing}
    cursor = FakeCursor([])
    with pytest.raises(SyncInputError) as raised:
        judged(cursor, layout(PLAN, "predictions"), column_types(description(types)))
    assert str(raised.value) == (
        f"The query for fraud v1 has no column {missing!r} {role}; it returns {', '.join(types)}; "
        f"add the column to the query or select_expr, or {fix}."
    )
    assert cursor.executed == []


def test_missing_actual_columns_are_refused_together() -> None:
    types = {"prediction_id": 20, "actual_at": 1114}
    with pytest.raises(SyncInputError) as raised:
        read([], "actuals", types)
    assert str(raised.value) == (
        "The query for fraud v1 has no column 'true_proba', 'true_logits' needed for actuals; it returns "
        "prediction_id, actual_at; add the column to the query or select_expr, or map the field to an existing column."
    )


def test_a_missing_actuals_timestamp_is_refused() -> None:
    with pytest.raises(SyncInputError) as raised:
        read([], "actuals", {"prediction_id": 20, "true_proba": 1700, "true_logits": 4000})
    assert str(raised.value) == (
        "The query for fraud v1 has no column 'actual_at' named by actuals_timestamp_column; it returns "
        "prediction_id, true_proba, true_logits; add the column to the query or select_expr, or set "
        "actuals_timestamp_column to an existing column."
    )


# ids and timestamps: as Spark's cast to string and date_format write them


def row_id(value: Any) -> str | None:
    text: str | None = id_texts(pa.array([value]))[0].as_py()
    return text


def occurred_at(moment: datetime | date) -> str:
    values = pa.array([moment], UTC_MICROS if isinstance(moment, datetime) else pa.date32())
    text: str = datetime_texts(values)[0].as_py()
    return text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        ("p-1", "p-1"),
        ("", ""),
        (7, "7"),
        (-12345678901234, "-12345678901234"),
        (True, "true"),
        (False, "false"),
        (3.0, "3.0"),
        (-2.0, "-2.0"),
        (0.0, "0.0"),
        (1.5, "1.5"),
        (1234567.0, "1234567.0"),
        (Decimal("1.50"), "1.50"),
        (Decimal("42"), "42"),
    ],
)
def test_row_id_is_the_id_as_spark_casts_it_to_string(value: Any, text: str | None) -> None:
    assert row_id(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e7, "1.0E7"), (12345678.0, "1.2345678E7"), (1e20, "1.0E20"), (1.5e20, "1.5E20"), (0.0001, "1.0E-4")],
)
def test_row_id_of_a_large_or_tiny_double_is_in_javas_notation(value: float, text: str) -> None:
    """Spark casts a double to string with Java's Double.toString: scientific outside [1e-3, 1e7)."""
    assert row_id(value) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 20, 10, 30), "2026-11-20T10:30:00.000000Z"),
        (datetime(2026, 11, 20, 10, 30, 0, 7), "2026-11-20T10:30:00.000007Z"),
        (datetime(2026, 11, 20, 10, 30, tzinfo=UTC), "2026-11-20T10:30:00.000000Z"),
        (datetime(2026, 11, 20, 1, 30, 5, 250000, tzinfo=PLUS_TWO), "2026-11-19T23:30:05.250000Z"),
        (datetime(2026, 11, 20, 23, 0, tzinfo=timezone(timedelta(hours=-5))), "2026-11-21T04:00:00.000000Z"),
        (date(2026, 11, 20), "2026-11-20T00:00:00.000000Z"),
        (date(2024, 2, 29), "2024-02-29T00:00:00.000000Z"),
    ],
)
def test_occurred_at_is_utc_with_microseconds_and_z(moment: datetime | date, text: str) -> None:
    assert occurred_at(moment) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(1, 1, 1), "0001-01-01T00:00:00.000000Z"),
        (date(1, 1, 1), "0001-01-01T00:00:00.000000Z"),
        (datetime(999, 12, 31, 23, 59, 59), "0999-12-31T23:59:59.000000Z"),
    ],
)
def test_occurred_at_pads_the_year_to_four_digits(moment: datetime | date, text: str) -> None:
    """date_format's yyyy pads years before 1000 (0001-01-01 is a common placeholder date)."""
    assert occurred_at(moment) == text


# Delivery


def test_fragments_are_delivered_in_batches() -> None:
    client = FakeClient(retries=1, warnings=["slow"])
    fragments = [f'{{"id":"p{n}"}}' for n in range(5)]
    result = deliver_in_task(spooled(fragments), cast(AporiaClient, client), SUBJECT, MODEL, 2)
    assert client.calls == [
        ("fraud", "v1", fragments[0:2]),
        ("fraud", "v1", fragments[2:4]),
        ("fraud", "v1", fragments[4:5]),
    ]
    assert (result.fragments, result.batches, result.retries, result.warnings) == (5, 3, 3, ["slow"] * 3)


def test_nothing_to_deliver_posts_nothing() -> None:
    client = FakeClient()
    result = deliver_in_task(spooled([]), cast(AporiaClient, client), SUBJECT, MODEL, 2, threading.Event())
    assert client.calls == []
    assert (result.fragments, result.batches) == (0, 0)


STOPPED = (
    "Stopped after {} fragments of fraud v1: the task was killed (a person marked or cleared it, or Airflow stopped "
    "it: a timeout, a shutdown); a re-run sends the window again, nothing twice (delivery is idempotent)."
)


def test_a_stop_before_delivery_sends_nothing() -> None:
    client, stop = FakeClient(), threading.Event()
    stop.set()
    with pytest.raises(SyncFailed) as raised:
        deliver_in_task(spooled(['{"id":"p1"}']), cast(AporiaClient, client), SUBJECT, MODEL, 2, stop)
    assert str(raised.value) == STOPPED.format(0)
    assert client.calls == []


def test_a_stop_ends_delivery_before_the_next_batch() -> None:
    client, stop = FakeClient(), threading.Event()
    client.on_call = lambda calls: stop.set() if calls == 2 else None
    fragments = [f'{{"id":"p{n}"}}' for n in range(7)]
    with pytest.raises(SyncFailed) as raised:
        deliver_in_task(spooled(fragments), cast(AporiaClient, client), SUBJECT, MODEL, 2, stop)
    assert str(raised.value) == STOPPED.format(4)
    assert [batch for _, _, batch in client.calls] == [fragments[0:2], fragments[2:4]]


def test_a_stop_after_the_last_batch_is_not_a_failure() -> None:
    client, stop = FakeClient(), threading.Event()
    client.on_call = lambda calls: stop.set()
    result = deliver_in_task(
        spooled(['{"id":"p1"}', '{"id":"p2"}']), cast(AporiaClient, client), SUBJECT, MODEL, 2, stop
    )
    assert (result.fragments, result.batches) == (2, 1)


# The task's path never loads Spark


def test_the_task_path_does_not_load_spark() -> None:
    """Reading, judging and delivering in the task imports no pyspark (the unit tier runs without Java)."""
    script = (
        "import sys\n"
        "import tests.unit.test_in_task as t\n"
        "t.test_a_clean_row_becomes_its_fragment()\n"
        "t.test_every_row_of_a_repeated_id_is_rejected()\n"
        "t.test_actuals_are_sent_by_id_and_rows_without_any_are_not_counted()\n"
        "t.test_fragments_are_delivered_in_batches()\n"
        "t.test_a_stop_ends_delivery_before_the_next_batch()\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j'))\n"
        "assert not leaked, leaked\n"
        "print('clean')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("clean")


@pytest.mark.parametrize(
    ("number", "noun", "words"),
    [
        (1, "row", "1 row"),
        (12, "row", "12 rows"),
        (1, "batch", "1 batch"),
        (3, "batch", "3 batches"),
        (1_000_000, "prediction", "1,000,000 predictions"),
        (1, "actual", "1 actual"),
        (0, "actual", "0 actuals"),
    ],
)
def test_the_log_counts_in_words(number: int, noun: str, words: str) -> None:
    from aporia_provider.extraction.progress import counted

    assert counted(number, noun) == words


# Streaming: memory does not grow with the window


class Row(list):  # type: ignore[type-arg]
    """A row the reader can be watched letting go of (tuples cannot be weakly referenced)."""


def test_the_reader_holds_no_row_past_its_chunk_and_spools_the_fragments_to_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chunks are judged together up to JUDGE_ROWS rows: here each chunk is a batch of its own.
    monkeypatch.setattr(in_task, "JUDGE_ROWS", 50)
    source = layout(PLAN, "predictions")
    types = column_types(description(PREDICTION_TYPES))
    columns, _ = select_columns(source, types, WINDOW)
    held: list[list[weakref.ref[Row]]] = []

    def chunks() -> Iterator[list[Row]]:
        for number in range(20):
            gc.collect()
            # The reader's loop still names the chunk it just finished while it asks for the next: one chunk back
            # may be alive, none before it.
            alive = [ref for refs in held[:-1] for ref in refs if ref() is not None]
            assert not alive, f"rows of chunks before the last alive at chunk {number}"
            chunk = [Row(prediction(prediction_id=f"p{number}-{n}")) for n in range(50)]
            held.append([weakref.ref(row) for row in chunk])
            yield chunk

    result = read_in_task(chunks(), source, columns, types, WINDOW.start)
    try:
        assert (result.rows, result.rejected) == (1000, 0)
        assert result.spool is not None and result.spool.size() > 1000 * len(json.dumps(CLEAN_FRAGMENT)) // 2
        assert sum(len(batch) for batch in result.fragments()) == 1000
    finally:
        result.release()


def test_every_rejected_row_is_handed_on_with_its_column_reason_and_value() -> None:
    kept: list[dict[str, Any]] = []
    rows = [
        prediction(prediction_id="p1", amount_usd=float("nan")),
        prediction(prediction_id="p2"),
        prediction(prediction_id="p3", embedding="[" + "1, " * 300 + "1"),
        prediction(prediction_id=None),
        prediction(prediction_id="p5", predicted_at=None),
        prediction(prediction_id="p6"),
        prediction(prediction_id="p6"),
    ]
    source = layout(PLAN, "predictions")
    types = column_types(description(PREDICTION_TYPES))
    columns, select = select_columns(source, types, WINDOW)
    stream = WAREHOUSE.stream(FakeCursor(rows), select, 10)
    result = read_in_task(stream, source, columns, types, WINDOW.start, kept.append)
    result.release()
    assert result.rejected == len(kept) == 6
    assert kept[0] == {
        "source": "predictions",
        "id": "p1",
        "column": "amount_usd",
        "reason": "amount: not a finite number",
        "value": "nan",
    }
    assert kept[1]["column"] == "embedding" and kept[1]["reason"] == VECTOR_NOT_JSON
    assert kept[1]["value"] == ("[" + "1, " * 300)[:200] + "…"
    assert kept[2] == {
        "source": "predictions",
        "id": None,
        "column": "prediction_id",
        "reason": "prediction_id is null",
        "value": None,
    }
    assert kept[3]["column"] == "predicted_at" and kept[3]["reason"] == "predicted_at is null"
    assert (
        kept[4:]
        == [
            {
                "source": "predictions",
                "id": "p6",
                "column": "prediction_id",
                "reason": "duplicate prediction_id p6",
                "value": "p6",
            }
        ]
        * 2
    )


# Byte for byte: the fragments Arrow assembles are what msgspec writes for the same object (as the task path did
# before the columnar engine, and as the official SDK's JSON would hold the same values).

AWKWARD_TEXTS = ["ana", 'say "hi"', "back\\slash", "tab\tnew\nline\x01", "héllo ✓ \u2028", "", "}{,:"]
AWKWARD_NUMBERS = [0.1, 1.0, 1e16, 1e15, 1.5e-5, 1e-7, -0.0, 123456789.0, 2.5e300, 5e-324, 3]


@pytest.mark.parametrize("index", range(max(len(AWKWARD_TEXTS), len(AWKWARD_NUMBERS))))
def test_fragments_are_byte_equal_to_msgspecs_encoding_of_the_same_object(index: int) -> None:
    text = AWKWARD_TEXTS[index % len(AWKWARD_TEXTS)]
    number = AWKWARD_NUMBERS[index % len(AWKWARD_NUMBERS)]
    row = prediction(prediction_id=f"id {text}", owner=text, note=text, proba=number, embedding=f"[{number}, 2]")
    result, _ = read([row])
    assert (result.rows, result.rejected) == (1, 0)
    expected = {
        "id": f"id {text}",
        "features": {
            "amount": 12.5,
            "segment": 3,
            "owner": text,
            "active": True,
            "seen_at": "2026-11-20T10:15:00.000000Z",
            "embedding": msgspec.Raw(f"[{number}, 2]".encode()),
            "grid": msgspec.Raw(b"[[1, 2, 3], [4, 5, 6]]"),
            "scores": msgspec.Raw(b'{"a": 1, "b": 0.5}'),
        },
        "predictions": {"proba": float(number), "logits": msgspec.Raw(b"[1, 2, 3, 4]")},
        "rawInputs": {"note": text},
        "occurredAt": "2026-11-20T10:30:00.000000Z",
    }
    assert result.fragments[0].encode() == msgspec.json.encode(expected)


def test_fetched_chunks_are_judged_together_up_to_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few rows of long text make a batch of their own; many short rows make one of JUDGE_ROWS at most."""
    monkeypatch.setattr(in_task, "JUDGE_BYTES", 1000)
    monkeypatch.setattr(in_task, "JUDGE_ROWS", 4)
    long_rows = [[("x" * 300,)] for _ in range(5)]
    assert [len(batch) for batch in in_task._judge_sized(long_rows)] == [3, 2]
    short_rows = [[("x",)] * 3 for _ in range(3)]
    assert [len(batch) for batch in in_task._judge_sized(short_rows)] == [6, 3]
