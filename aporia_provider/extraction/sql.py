"""SQL the sync pushes down to the warehouse: the user's single statement, the window and its predicate.

Column names are checked by the warehouse's identifier rule before they get here, and quoted here as standard SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

from aporia_provider.exceptions import SyncInputError


def single_statement(query: str, argument: str = "query") -> str:
    """The user's query without its closing semicolons; comments and `;` inside literals are fine,
    a second statement is refused. Tokenized by sqlparse, so quoting and comments are understood."""
    import sqlparse
    from sqlparse import tokens

    def meaningful(token: Any) -> bool:
        return not (token.is_whitespace or token.ttype in tokens.Comment or token.match(tokens.Punctuation, ";"))

    if not isinstance(query, str):
        raise SyncInputError(f"{argument} is a {type(query).__name__}; give the SELECT as a string.")
    statements = [s for s in sqlparse.parse(query) if any(meaningful(t) for t in s.flatten())]
    if not statements:
        raise SyncInputError(f"{argument} is empty; give the SELECT that returns the model's rows.")
    if len(statements) > 1:
        raise SyncInputError(f"{argument} holds more than one statement; give a single SELECT (a ';' may only end it).")
    kept = [t.value for t in statements[0].flatten() if not t.match(tokens.Punctuation, ";")]
    return "".join(kept).strip()


def derived(query: str, alias: str = "source") -> str:
    """The query as a derived table. Its own lines, so a trailing `--` comment cannot swallow the wrapper."""
    return f"(\n{query}\n) AS {alias}"


@dataclass(frozen=True)
class Window:
    """A half-open interval [start, end) of UTC timestamps."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime | str | None, end: datetime | str | None) -> Window:
        begin, finish = _aware(start, "window_start"), _aware(end, "window_end")
        if finish < begin:
            raise SyncInputError(
                f"window_end {finish.isoformat()} is before window_start {begin.isoformat()}; swap them."
            )
        if finish == begin:
            raise SyncInputError(
                f"The sync window is empty (start == end == {begin.isoformat()}): Airflow's default cron "
                "timetable gives zero-width data intervals; schedule the DAG with CronDataIntervalTimetable or "
                "a timedelta, or pass window_start and window_end explicitly."
            )
        return cls(begin, finish)

    def whole_days(self) -> bool:
        """Whether the window starts and ends at midnight UTC (what a DATE column can serve)."""
        return all(moment.time() == datetime.min.time() for moment in (self.start, self.end))

    def split(self, parts: int) -> list[Window]:
        """The window cut into `parts` consecutive windows of equal length (to the microsecond)."""
        step = (self.end - self.start) / parts
        cuts = [self.start + step * index for index in range(parts)] + [self.end]
        return [Window(begin, finish) for begin, finish in pairwise(cuts) if finish > begin]

    def widened(self, lookback: timedelta) -> Window:
        return Window(self.start - lookback, self.end)

    def predicate(self, column: str) -> str:
        """The pushed-down filter; the bounds are rendered from datetimes, never from user text."""
        name = quoted(column)
        return f"{name} >= '{_literal(self.start)}' AND {name} < '{_literal(self.end)}'"


def quoted(column: str) -> str:
    """A column name as a quoted SQL identifier."""
    return '"' + column.replace('"', '""') + '"'


def windowed(query: str, column: str, window: Window) -> str:
    """The user's query restricted to the window, as a derived table Spark can read."""
    return f"(SELECT * FROM {derived(query)} WHERE {window.predicate(column)}) AS windowed"


def _aware(value: datetime | str | None, argument: str) -> datetime:
    if value is None or value == "":
        raise SyncInputError(f"{argument} is not set; pass it, or run the task in a DAG run with a data interval.")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise SyncInputError(
                f"{argument} {value!r} is not an ISO-8601 timestamp; use e.g. 2026-11-20T00:00:00+00:00."
            ) from None
    if value.tzinfo is None:
        raise SyncInputError(
            f"{argument} {value.isoformat()} has no time zone; give a timezone-aware timestamp, "
            "e.g. 2026-11-20T00:00:00+00:00."
        )
    # A plain datetime: pendulum's (what Airflow's context holds) does its own arithmetic on subtraction.
    utc = value.astimezone(timezone.utc)
    return datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=timezone.utc)


def _literal(moment: datetime) -> str:
    # Compared in UTC: the Spark JVM and its JDBC sessions run with time zone UTC.
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
