"""The sync's progress lines: at most every PROGRESS_SECONDS, what it is doing and how far Spark got."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from aporia_provider.extraction.spark import StartSpark, is_connect, tagged

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


class SparkStarter:
    """`spark`, started on first use only: its jobs tagged (until `stack` closes) and watched by the progress lines.

    `begin` starts it in a thread of its own while this thread waits on Redshift (an UNLOAD); the first use takes
    the session from there and tags it in this thread, the one that runs the jobs (Spark's job tags are a thread's).
    """

    def __init__(self, stack: ExitStack, progress: Progress, spark: StartSpark, where: str, tag: str | None) -> None:
        self._stack, self._progress, self._spark, self.where, self._tag = stack, progress, spark, where, tag
        self._session: SparkSession | None = None
        self._starting: Future[SparkSession] | None = None

    def begin(self) -> bool:
        """Start the session now, in the background, for the files Redshift unloads; False when it is started or
        starting already."""
        if self._session is not None or self._starting is not None:
            return False
        pool = ThreadPoolExecutor(1, thread_name_prefix="aporia-spark-start")
        self._starting = pool.submit(self._spark, for_files=True)
        pool.shutdown(wait=False)
        # A sync that fails before its first use still waits for the start, so the task's clean-up sees the session.
        self._stack.callback(wait, [self._starting])
        return True

    def __call__(self) -> SparkSession:
        if self._session is None:
            self._progress.phase = f"starting Spark on {self.where}"
            starting, self._starting = self._starting, None
            self._session = starting.result() if starting is not None else self._spark()
            if self._tag:
                self._stack.enter_context(tagged(self._session, self._tag))
            self._progress.watch(self._session)
        return self._session
