"""SQL pushed down to Redshift: validated identifiers, one statement, and the UTC window predicate."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.sql import Window, derived, single_statement, windowed
from aporia_provider.redshift import identifier, table_query

UTC = timezone.utc
PLUS_TWO = timezone(timedelta(hours=2))
IDENTIFIER_HINT = (
    "is not a plain column name; use letters, digits and underscores "
    "(rename the column in the query with AS if needed)."
)


@pytest.mark.parametrize("name", ["id", "_x", "Created_At", "col$1", "a" * 127])
def test_identifier_accepts_plain_names(name: str) -> None:
    assert identifier(name, "id_column") == name


@pytest.mark.parametrize(
    "name",
    ["", "1st", "my col", 'a"b', "a;drop table t", "t.c", "a-b", "$x", "a" * 128, "é", None, 5],
)
def test_identifier_refuses_anything_else(name: Any) -> None:
    with pytest.raises(SyncInputError) as raised:
        identifier(name, "id_column")
    assert str(raised.value) == f"id_column {name!r} {IDENTIFIER_HINT}"


def test_sync_input_error_is_a_value_error() -> None:
    assert issubclass(SyncInputError, ValueError)


@pytest.mark.parametrize(
    ("table", "query"),
    [("predictions", 'SELECT * FROM "predictions"'), ("ml.predictions", 'SELECT * FROM "ml"."predictions"')],
)
def test_table_query_quotes_each_part(table: str, query: str) -> None:
    assert table_query(table) == query


def test_table_query_refuses_three_parts() -> None:
    with pytest.raises(SyncInputError) as raised:
        table_query("db.ml.predictions")
    assert str(raised.value) == "table 'db.ml.predictions' is not a table name; use table or schema.table."


@pytest.mark.parametrize("table", ["", "ml.", "ml.pre dictions", 'x"; drop table y; --', "t;x"])
def test_table_query_refuses_non_plain_parts(table: str) -> None:
    with pytest.raises(SyncInputError) as raised:
        table_query(table)
    assert str(raised.value) == (
        f"table {table!r} is not a plain table name; use letters, digits and underscores, or pass a query instead."
    )


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("SELECT 1", "SELECT 1"),
        ("  SELECT 1 ;  ", "SELECT 1"),
        ("SELECT 1;;", "SELECT 1"),
        ("\nSELECT a\nFROM t\n", "SELECT a\nFROM t"),
        ("SELECT * FROM t WHERE note = 'a;b'", "SELECT * FROM t WHERE note = 'a;b'"),
        ('SELECT "odd;name" FROM t;', 'SELECT "odd;name" FROM t'),
        ("/* rows; all of them */ SELECT 1", "/* rows; all of them */ SELECT 1"),
        ("SELECT 1 -- the rows; all of them", "SELECT 1 -- the rows; all of them"),
        ("SELECT 1; -- done", "SELECT 1 -- done"),
    ],
)
def test_single_statement_understands_literals_comments_and_closing_semicolons(query: str, body: str) -> None:
    assert single_statement(query) == body


@pytest.mark.parametrize("query", ["", "   ", ";", " ;;\n", "-- nothing here", "/* nor here */ ;"])
def test_single_statement_refuses_an_empty_query(query: str) -> None:
    with pytest.raises(SyncInputError) as raised:
        single_statement(query, "actuals_query")
    assert str(raised.value) == "actuals_query is empty; give the SELECT that returns the model's rows."


@pytest.mark.parametrize(
    "query",
    ["SELECT 1; DROP TABLE predictions", "SELECT 'a;b'; SELECT 2", "SELECT 1 -- one\n; SELECT 2"],
)
def test_single_statement_refuses_a_second_statement(query: str) -> None:
    with pytest.raises(SyncInputError) as raised:
        single_statement(query)
    assert str(raised.value) == "query holds more than one statement; give a single SELECT (a ';' may only end it)."


def test_single_statement_refuses_a_non_string() -> None:
    with pytest.raises(SyncInputError) as raised:
        single_statement(None, "actuals_query")
    assert str(raised.value) == "actuals_query is a NoneType; give the SELECT as a string."


def test_derived_puts_the_query_on_its_own_lines() -> None:
    assert derived("SELECT 1 -- note") == "(\nSELECT 1 -- note\n) AS source"
    assert derived("SELECT 1", "actuals") == "(\nSELECT 1\n) AS actuals"


def test_window_of_aware_datetimes_and_iso_strings_in_utc() -> None:
    window = Window.of("2026-11-20T02:00:00+02:00", datetime(2026, 11, 20, 1, tzinfo=UTC))
    assert window == Window(datetime(2026, 11, 20, 0, tzinfo=UTC), datetime(2026, 11, 20, 1, tzinfo=UTC))
    assert window.start.tzinfo == UTC and window.end.tzinfo == UTC


@pytest.mark.parametrize(
    ("start", "end", "argument"),
    [(None, "2026-11-20T00:00:00+00:00", "window_start"), ("2026-11-20T00:00:00+00:00", "", "window_end")],
)
def test_window_of_an_unset_bound(start: Any, end: Any, argument: str) -> None:
    with pytest.raises(SyncInputError) as raised:
        Window.of(start, end)
    assert str(raised.value) == (f"{argument} is not set; pass it, or run the task in a DAG run with a data interval.")


def test_window_of_a_string_that_is_not_iso() -> None:
    with pytest.raises(SyncInputError) as raised:
        Window.of("yesterday", "2026-11-20T00:00:00+00:00")
    assert str(raised.value) == (
        "window_start 'yesterday' is not an ISO-8601 timestamp; use e.g. 2026-11-20T00:00:00+00:00."
    )


@pytest.mark.parametrize("naive", ["2026-11-20T00:00:00", datetime(2026, 11, 20)])
def test_window_of_a_naive_timestamp(naive: Any) -> None:
    with pytest.raises(SyncInputError) as raised:
        Window.of("2026-11-19T00:00:00+00:00", naive)
    assert str(raised.value) == (
        "window_end 2026-11-20T00:00:00 has no time zone; give a timezone-aware timestamp, "
        "e.g. 2026-11-20T00:00:00+00:00."
    )


def test_window_end_before_start_names_both_in_utc() -> None:
    with pytest.raises(SyncInputError) as raised:
        Window.of("2026-11-20T03:00:00+02:00", "2026-11-20T00:00:00+00:00")
    assert str(raised.value) == (
        "window_end 2026-11-20T00:00:00+00:00 is before window_start 2026-11-20T01:00:00+00:00; swap them."
    )


def test_a_zero_width_window_names_the_timetable_fix() -> None:
    with pytest.raises(SyncInputError) as raised:
        Window.of("2026-11-20T02:00:00+02:00", datetime(2026, 11, 20, tzinfo=UTC))
    assert str(raised.value) == (
        "The sync window is empty (start == end == 2026-11-20T00:00:00+00:00): Airflow's default cron "
        "timetable gives zero-width data intervals; schedule the DAG with CronDataIntervalTimetable or "
        "a timedelta, or pass window_start and window_end explicitly."
    )


def test_widened_moves_only_the_start() -> None:
    window = Window.of("2026-11-20T00:00:00+00:00", "2026-11-20T01:00:00+00:00")
    assert window.widened(timedelta(hours=3)) == Window(
        datetime(2026, 11, 19, 21, tzinfo=UTC), datetime(2026, 11, 20, 1, tzinfo=UTC)
    )
    assert window.widened(timedelta(0)) == window


def test_predicate_renders_utc_literals_with_microseconds() -> None:
    window = Window(datetime(2026, 11, 20, 2, 0, 0, 5, tzinfo=PLUS_TWO), datetime(2026, 11, 20, 1, 30, tzinfo=UTC))
    assert window.predicate("created_at") == (
        "\"created_at\" >= '2026-11-20 00:00:00.000005' AND \"created_at\" < '2026-11-20 01:30:00.000000'"
    )


def test_predicate_quotes_a_column_so_its_text_cannot_become_sql() -> None:
    # Column names are refused by the warehouse's identifier rule first (test_plan); the predicate quotes whatever
    # it is given as one identifier, doubling any quote inside.
    window = Window.of("2026-11-20T00:00:00+00:00", "2026-11-20T01:00:00+00:00")
    assert window.predicate('ts" OR 1=1 --') == (
        '"ts"" OR 1=1 --" >= \'2026-11-20 00:00:00.000000\' AND "ts"" OR 1=1 --" < \'2026-11-20 01:00:00.000000\''
    )


def test_windowed_wraps_the_query_as_a_derived_table() -> None:
    window = Window.of("2026-11-20T00:00:00+00:00", "2026-11-21T00:00:00+00:00")
    assert windowed("SELECT * FROM ml.predictions -- note", "ts", window) == (
        "(SELECT * FROM (\nSELECT * FROM ml.predictions -- note\n) AS source WHERE "
        "\"ts\" >= '2026-11-20 00:00:00.000000' AND \"ts\" < '2026-11-21 00:00:00.000000') AS windowed"
    )
