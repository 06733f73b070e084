"""The sync's progress lines: at most every PROGRESS_SECONDS, what it is doing and how far Spark got."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from aporia_provider.extraction.spark import is_connect, tagged

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.connect.shell.progress import ProgressHandler

# Logged under the run's name, as the sync's other lines.
log = logging.getLogger("aporia_provider.extraction.run")

PROGRESS_SECONDS = 30.0
# How often Spark is looked at, so that a step left waiting for executors is said at once, not a line later.
WATCH_SECONDS = 1.0


class Progress:
    """Logs, at most every PROGRESS_SECONDS, what the sync is doing and how far Spark got (once it runs)."""

    def __init__(self, subject: str, spark_where: str) -> None:
        self.subject = subject
        self.spark_where = spark_where
        self.phase = "starting"
        self.spark: SparkSession | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="aporia-sync-progress", daemon=True)
        self._tasks: _Tasks | None = None

    def watch(self, spark: SparkSession) -> None:
        self.spark = spark
        if is_connect(spark):
            spark.registerProgressHandler(cast("ProgressHandler", self._on_connect_progress))

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.spark is not None and is_connect(self.spark):
            self.spark.removeProgressHandler(cast("ProgressHandler", self._on_connect_progress))

    def _on_connect_progress(
        self, stages: Iterable[Any] | None, inflight_tasks: int, operation_id: str | None, done: bool
    ) -> None:
        known = list(stages or [])
        done_tasks, tasks = sum(s.num_completed_tasks for s in known), sum(s.num_tasks for s in known)
        self._tasks = None if done else _Tasks(done_tasks, tasks, inflight_tasks)

    def _tasks_now(self) -> _Tasks | None:
        if self.spark is None or is_connect(self.spark):
            return self._tasks
        tracker = self.spark.sparkContext.statusTracker()
        stages = [tracker.getStageInfo(s) for s in tracker.getActiveStageIds()]
        known = [s for s in stages if s is not None]
        if not known:
            return None
        return _Tasks(
            sum(s.numCompletedTasks for s in known),
            sum(s.numTasks for s in known),
            sum(s.numActiveTasks for s in known),
        )

    def _tick(self) -> None:
        """A line every PROGRESS_SECONDS, and one as soon as a step waits with no Spark task running."""
        last_line, waited = time.monotonic(), False
        while not self._stop.wait(WATCH_SECONDS):
            tasks = self._tasks_now()
            # A job with no task running: the cluster has no free core for this sync (yet).
            waiting = tasks is not None and not tasks.running and tasks.done < tasks.total
            if not (waiting and not waited) and time.monotonic() - last_line < PROGRESS_SECONDS:
                continue
            last_line, waited = time.monotonic(), waiting
            elapsed = timedelta(seconds=round(last_line - self._started))
            phase = f"waiting for executors on {self.spark_where}" if waiting else self.phase
            detail = f", {tasks.done} of {tasks.total} Spark tasks of this step done" if tasks is not None else ""
            log.info("Syncing %s: %s, %s elapsed%s.", self.subject, phase, elapsed, detail)


@dataclass(frozen=True)
class _Tasks:
    """The Spark tasks of the running step: done, in all, running now."""

    done: int
    total: int
    running: int


def counted(number: int, noun: str) -> str:
    """'1 row', '12 rows', '1 batch', '3 batches', '1,000,000 predictions' for the log."""
    if number == 1:
        return f"1 {noun}"
    return f"{number:,} {noun}es" if noun.endswith("ch") else f"{number:,} {noun}s"


def spark_starter(
    stack: ExitStack, progress: Progress, spark: Callable[[], SparkSession], spark_where: str, tag: str | None
) -> Callable[[], SparkSession]:
    """`spark`, started on first use only: its jobs tagged (until `stack` closes) and watched by the progress lines."""
    session: list[SparkSession] = []

    def started() -> SparkSession:
        if not session:
            progress.phase = f"starting Spark on {spark_where}"
            session.append(spark())
            if tag:
                stack.enter_context(tagged(session[0], tag))
            progress.watch(session[0])
        return session[0]

    return started
