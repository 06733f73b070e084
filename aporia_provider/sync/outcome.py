"""A sync's outcome, named once: its summary, the XComs it leaves, the metrics it emits.

The operator fills the summary and pushes it; the metrics (`aporia_provider.metrics`) and the sync view
(`aporia_provider.plugins`) read it by these names. Each figure has one name, the summary's field, in the XCom, the
metrics, the view, its JSON API and the README. Airflow-free, so the engine fills the summary too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

# The XCom a sync task pushes when a try starts: the model version it syncs. The sync view finds sync tasks by it
# (whatever their class: a subclass, a renamed import), so a task of any other operator never appears there.
SYNC_XCOM_KEY = "aporia_sync"
# The XCom a failing sync pushes before it raises: its sentence, what happens next and its counts so far.
FAILURE_XCOM_KEY = "aporia_sync_failure"
# Its summary goes to the task's return value.
SUMMARY_XCOM_KEY = "return_value"
# A sync of several versions (model_version_column) returns, and fails with, each version's summary under this key.
VERSIONS_KEY = "versions"

# The engine's loggers, whose WARNING lines the summary keeps.
ENGINE_LOGGER = "aporia_provider.extraction"

METRIC_PREFIX = "aporia.sync"
# The summary's figures emitted as counters, each under its own name (aporia.sync.<figure>).
COUNTED_FIGURES = ("rows_read", "fragments_sent", "rows_rejected", "actuals_sent")
FAILED_METRIC = "failed"
LAG_METRIC = "lag_seconds"
DURATION_METRIC = "duration"


@dataclass
class SyncSummary:
    """What a sync read and sent; filled in as it goes, so a failed sync still says how far it got.

    The read counts cover [read_start, window_end): the window widened by the lookback. The in-window counts are the
    rows delivered (with validate_only: that would be) whose timestamp, or for actuals arrival, lies in the window
    itself; the re-read ones lie in [read_start, window_start), which the previous window's sync already covered.
    """

    window_start: str = ""
    window_end: str = ""
    read_start: str = ""
    rows_read: int = 0  # predictions read, the lookback's included
    predictions_in_window: int = 0
    predictions_reread: int = 0
    fragments_sent: int = 0  # predictions delivered, the lookback's included
    actuals_read: int = 0
    actuals_sent: int = 0  # actuals delivered, the lookback's included
    actuals_in_window: int = 0
    actuals_reread: int = 0
    rows_rejected: int = 0  # predictions and actuals that did not fit the schema
    rejected_examples: list[str] = field(default_factory=list)
    # With model_version_column: the window's rows naming a version the sync does not serve (the same figure in
    # each version's summary; not in rows_rejected, which is the version's own).
    other_version_rows: int = 0
    # The volume expectation (min_rows) and whether the window fell short of it.
    min_rows: int | None = None
    low_volume: bool = False
    batches: int = 0
    retries: int = 0  # delivery requests retried
    warnings: int = 0  # warnings Aporia returned on delivery
    seconds: float = 0.0
    # Where the window was unloaded to (the try's S3 prefix) and how long Redshift's UNLOAD took; none: a cursor.
    unloaded_to: str | None = None
    unload_seconds: float = 0.0
    dry_run: bool = False
    # The WARNING lines the sync logged (rows left out under max_invalid_rows, a low volume with "warn", ...).
    logged_warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _KeptWarnings(logging.Handler):
    def __init__(self, summary: SyncSummary) -> None:
        super().__init__(logging.WARNING)
        self.summary = summary

    def emit(self, record: logging.LogRecord) -> None:
        self.summary.logged_warnings.append(record.getMessage())


@contextmanager
def handled(handler: logging.Handler, logger: str = ENGINE_LOGGER) -> Iterator[None]:
    """`handler` given the records of `logger` (and those below it) meanwhile."""
    engine = logging.getLogger(logger)
    engine.addHandler(handler)
    try:
        yield
    finally:
        engine.removeHandler(handler)


def warnings_logged(summary: SyncSummary, logger: str = ENGINE_LOGGER) -> AbstractContextManager[None]:
    """Keep the WARNING lines `logger` (and those below it) logs meanwhile in the summary, where the view shows them."""
    return handled(_KeptWarnings(summary), logger)
