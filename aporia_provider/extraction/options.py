"""How a sync runs, as one value checked when it is made: at DAG parse for literal arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.spark import require_pyspark

DEFAULT_BATCH_SIZE = 5000
INVALID_ROW_POLICIES = ("fail", "skip")
LOW_VOLUME_POLICIES = ("fail", "warn")


@dataclass(frozen=True)
class SyncOptions:
    """The sync's settings; each bad value is refused in one sentence naming the argument and what it takes.

    :param batch_size: fragments per request to Aporia.
    :param num_partitions: JDBC partitions Spark reads a window in; None: from the window's size.
    :param spark_min_rows: a source's window of at least this many rows is read by Spark; 0 sends every one there;
        None (the default): the task reads every window it can, whatever its size. On the local stack's Spark,
        Connect server and 2-worker cluster alike, Spark took 3.4 times the task's time for 1,000,000 rows (it spends
        about six times the CPU per row: make bench), so only a cluster with many more cores than the worker wins.
    :param lookback: how far before the window's start rows are read again (late rows).
    :param on_invalid_rows: ``fail`` (nothing is sent when a row is invalid) or ``skip`` (they are left out).
    :param min_rows: the fewest predictions a window is expected to deliver (its own, not the lookback's); fewer
        means the upstream job did not write them, which ``on_low_volume`` makes a failure (``fail``: retried, as the
        rows may still come) or a warning (``warn``).
    :param max_invalid_rows: with ``fail``, how many invalid rows may be left out while the rest is sent: a count,
        or a fraction (a float between 0 and 1) of the window's own predictions and, apart, of its own actuals (the
        lookback's re-reads left out); one more, and nothing is sent.
    :param dry_run: read and check, send nothing.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    num_partitions: int | None = None
    spark_min_rows: int | None = None
    lookback: timedelta = timedelta(0)
    on_invalid_rows: str = "fail"
    max_invalid_rows: int | float | None = None
    min_rows: int | None = None
    on_low_volume: str = "fail"
    dry_run: bool = False

    def __post_init__(self) -> None:
        _whole_number("batch_size", self.batch_size, 1, f"default {DEFAULT_BATCH_SIZE:,}")
        if self.num_partitions is not None:
            _whole_number("num_partitions", self.num_partitions, 1, "or None to size them by the window")
        if self.spark_min_rows is not None:
            _whole_number(
                "spark_min_rows", self.spark_min_rows, 0, "0 sends every window to Spark; None: the task reads them"
            )
            require_pyspark(f"spark_min_rows={self.spark_min_rows!r}")
        if not isinstance(self.lookback, timedelta):
            raise SyncInputError(
                f"lookback {self.lookback!r} is not a timedelta; give one of zero or more, e.g. timedelta(minutes=15)."
            )
        if self.lookback < timedelta(0):
            raise SyncInputError(
                f"lookback is negative ({self.lookback.total_seconds():g} seconds); give a timedelta of zero or more, "
                "e.g. timedelta(minutes=15)."
            )
        if self.on_invalid_rows not in INVALID_ROW_POLICIES:
            raise SyncInputError(f"on_invalid_rows {self.on_invalid_rows!r} is not supported; use 'fail' or 'skip'.")
        if self.min_rows is not None:
            _whole_number("min_rows", self.min_rows, 1, "the fewest predictions a window should deliver")
        if self.on_low_volume not in LOW_VOLUME_POLICIES:
            raise SyncInputError(f"on_low_volume {self.on_low_volume!r} is not supported; use 'fail' or 'warn'.")
        limit = self.max_invalid_rows
        if limit is not None:
            if not _is_limit(limit):
                raise SyncInputError(
                    f"max_invalid_rows {limit!r} is not allowed; give a count of rows (0 or more) or a fraction of "
                    "the window's rows between 0 and 1, e.g. 100 or 0.01."
                )
            if self.on_invalid_rows == "skip":
                raise SyncInputError(
                    "on_invalid_rows='skip' leaves out any number of invalid rows and max_invalid_rows sets a limit; "
                    "pass one of them."
                )

    def spark_reason(self, unread: list[str], total: int) -> str | None:
        """Why a window of `total` rows the task could read goes to Spark (`unread`: its columns of a type only
        Spark reads), or None."""
        if unread:
            return f"of a type only Spark reads ({', '.join(unread)})"
        if self.spark_min_rows is None or total < self.spark_min_rows:
            return None
        return (
            "spark_min_rows=0 sends every window to Spark"
            if not self.spark_min_rows
            else f"at least {self.spark_min_rows:,}"
        )

    def invalid_rows_allowed(self, rows: int) -> int | None:
        """How many invalid rows of `rows` may be left out while the rest is sent; None: any number."""
        if self.max_invalid_rows is None:
            return None if self.on_invalid_rows == "skip" else 0
        if isinstance(self.max_invalid_rows, float):
            return math.floor(self.max_invalid_rows * rows)
        return self.max_invalid_rows


def _is_limit(value: object) -> bool:
    """A count of rows (0 or more), or a fraction of them (a float strictly between 0 and 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 < value < 1 if isinstance(value, float) else value >= 0


def _whole_number(argument: str, value: object, least: int, note: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SyncInputError(f"{argument} {value!r} is not allowed; give a whole number of at least {least} ({note}).")
