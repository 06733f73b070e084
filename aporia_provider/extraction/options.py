"""How a sync runs, as one value checked when it is made: at DAG parse for literal arguments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aporia_provider.exceptions import SyncInputError

# Windows of fewer rows are read and sent by the task itself (no Spark): most hourly windows, whose rows fit
# in a task's memory many times over (20,000 rows of 768-dim vectors are ~150 MB of JSON text).
SPARK_MIN_ROWS = 20_000
DEFAULT_BATCH_SIZE = 5000
INVALID_ROW_POLICIES = ("fail", "skip")


@dataclass(frozen=True)
class SyncOptions:
    """The sync's settings; each bad value is refused in one sentence naming the argument and what it takes.

    :param batch_size: fragments per request to Aporia.
    :param num_partitions: JDBC partitions Spark reads a window in; None: from the window's size.
    :param spark_min_rows: a source's window of at least this many rows is read by Spark; 0 sends every one there.
    :param lookback: how far before the window's start rows are read again (late rows).
    :param on_invalid_rows: ``fail`` (nothing is sent when a row is invalid) or ``skip`` (they are left out).
    :param dry_run: read and check, send nothing.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    num_partitions: int | None = None
    spark_min_rows: int = SPARK_MIN_ROWS
    lookback: timedelta = timedelta(0)
    on_invalid_rows: str = "fail"
    dry_run: bool = False

    def __post_init__(self) -> None:
        _whole_number("batch_size", self.batch_size, 1, f"default {DEFAULT_BATCH_SIZE:,}")
        if self.num_partitions is not None:
            _whole_number("num_partitions", self.num_partitions, 1, "or None to size them by the window")
        _whole_number(
            "spark_min_rows", self.spark_min_rows, 0, f"0 sends every window to Spark; default {SPARK_MIN_ROWS:,}"
        )
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


def _whole_number(argument: str, value: object, least: int, note: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SyncInputError(f"{argument} {value!r} is not allowed; give a whole number of at least {least} ({note}).")
