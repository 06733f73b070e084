"""One sync in its own process, as an Airflow task runs it: `python -m benchmarks.sync_worker '<json>'`.

The JSON argument holds the AporiaSyncOperator's keyword arguments (with `spark_conn_id`, the sync runs
on that Spark Connect server; without, on a local JVM of its own). A thread samples, every 0.2 s,
the resident memory of this process (the Airflow task side, where the Spark driver's Python half
lives), of its JVM child(ren), and of the Python workers those JVMs fork, plus their CPU time and the
JVM's CPU time per thread. The result is one JSON object on the original stdout; everything else
(logs, JVM output) goes to stderr, so the parent can parse stdout without guessing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from benchmarks.processes import ProcessTree, ThreadTimes, name, own_cpu, rss
from benchmarks.profiles import thread_groups

SAMPLE_SECONDS = 0.2


@dataclass
class Sampler:
    """Peak RSS of this process, its JVM(s) and the JVMs' Python workers; CPU time of each part."""

    me: psutil.Process = field(default_factory=psutil.Process)
    peak_task: int = 0
    peak_jvm: int = 0
    peak_workers: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    jvm_threads: ThreadTimes = field(default_factory=ThreadTimes)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        tree = ProcessTree()
        jvms = [p for p in tree.descendants(self.me) if name(p) == "java"]
        # PySpark's daemon and the workers it forks hang under the JVM; summed, as they run side by side.
        workers = [w for jvm in jvms for w in tree.children(jvm)]
        self.peak_task = max(self.peak_task, rss(self.me))
        self.peak_jvm = max(self.peak_jvm, sum(map(rss, jvms)))
        self.peak_workers = max(
            self.peak_workers, sum(rss(w) for root in workers for w in [root, *tree.descendants(root)])
        )
        for jvm in jvms:
            self.jvm_threads.update(jvm)
        self.cpu = {
            "task_process": own_cpu(self.me),
            "jvm": sum(map(own_cpu, jvms)),
            "python_workers": sum(map(tree.cpu, workers)),
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join()
        self.sample()  # a last sample while Spark's processes are still alive

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()


def spark_settings(operator: Any) -> dict[str, Any]:
    """What the sync ran with: as requested, then as read back from the live session where it still runs."""
    from pyspark.sql import SparkSession

    from aporia_provider.extraction.in_spark import DEFAULT_READ_OPTIONS
    from aporia_provider.extraction.spark import LOCAL_MASTER

    requested = operator.spark_conf or {}
    connect = f"Spark Connect ({operator.spark_conn_id})" if operator.spark_conn_id else None
    settings: dict[str, Any] = {
        "master": connect or requested.get("spark.master", LOCAL_MASTER),
        "num_partitions": operator.num_partitions,
        "batch_size": operator.batch_size,
        "fetchsize": int({**DEFAULT_READ_OPTIONS, **(operator.read_options or {})}["fetchsize"]),
        # The benchmark's own event log settings are left out: they change nothing the sync does.
        "spark_conf": {k: v for k, v in requested.items() if not k.startswith("spark.eventLog.")},
    }
    # The JVM may have died with a failed sync (out of memory, say); the requested settings stand then.
    # A Spark Connect session is closed by the operator, and has no SparkContext anyway.
    if connect:
        return settings
    with contextlib.suppress(Exception):
        session = SparkSession.getActiveSession()
        assert session is not None
        context = session.sparkContext
        settings.update(
            master=context.master,
            default_parallelism=context.defaultParallelism,
            spark_version=session.version,
        )
    return settings


def main(argument: str) -> dict[str, Any]:
    from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

    operator = AporiaSyncOperator(**json.loads(argument))
    sampler = Sampler()
    sampler.start()
    # Wall-clock time, so the parent can line it up with the timestamps of Spark's event log.
    started = time.time()
    summary, error = None, None
    try:
        summary = operator.execute({})
    except Exception as exc:  # a failed sync is a result too: its time and memory still tell
        error = f"{type(exc).__name__}: {exc}"
    finished = time.time()
    sampler.stop()
    result = {
        "error": error,
        "execute_seconds": round(finished - started, 3),
        "execute_start": started,
        "execute_end": finished,
        "summary": summary,
        "spark": spark_settings(operator),
        "peak_rss_mb": {
            "task_process": round(sampler.peak_task / 2**20, 1),
            "jvm": round(sampler.peak_jvm / 2**20, 1),
            "python_workers": round(sampler.peak_workers / 2**20, 1),
        },
        "cpu_seconds": {k: round(v, 2) for k, v in sampler.cpu.items()},
        "jvm_thread_cpu_seconds": thread_groups(sampler.jvm_threads.by_name()),
    }
    from pyspark.sql import SparkSession

    with contextlib.suppress(Exception):
        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    return result


if __name__ == "__main__":
    # Keep stdout for the result alone: fd 1 now points at stderr, for the JVM and any stray prints.
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    print(json.dumps(main(sys.argv[1])), file=result_stream, flush=True)
