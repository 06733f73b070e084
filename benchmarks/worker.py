"""What every worker process of the benchmark shares (the sync, the hand-written loop, the SDK loop): sampling
itself, a clock per step, and how it starts and answers. Standard library and psutil only: the SDK loop's venv
imports it too.

A worker is `python -m benchmarks.<name>_worker '<json>' [--gated]`. Its result is one JSON object on the
original stdout; everything else (logs, a JVM's output, stray prints) goes to stderr, so the parent parses stdout
without guessing. `--gated`: once imported, the worker prints `ready` and waits for a line on stdin before it
starts, so processes started together begin their work together, their imports done.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from benchmarks.processes import ThreadTimes, name, own_cpu, rss
from benchmarks.profiles import thread_groups

SAMPLE_SECONDS = 0.2
# Who is under the worker is looked up every this many samples.
FAMILY_EVERY = 5
# The loops' fetchmany size, as users write it.
FETCH_SIZE = 10_000
GATED = "--gated"


@dataclass
class Sampler:
    """While a run lasts: peak RSS of this process, of its whole process tree, of its JVM(s) and of the other
    processes under it (the Python workers a local JVM forks); CPU seconds of each part since the run started
    (imports excluded).

    Cheap, as twenty run side by side on two cores: this process every 0.2 s; who is under it every second (a
    scan of the process table, ~2 ms), as a JVM and its workers start once and stay."""

    me: psutil.Process = field(default_factory=psutil.Process)
    peak_task: int = 0
    peak_tree: int = 0
    peak_jvm: int = 0
    peak_workers: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    jvm_threads: ThreadTimes = field(default_factory=ThreadTimes)
    _cpu_before: float = 0.0
    _samples: int = 0
    _jvms: list[psutil.Process] = field(default_factory=list)
    _workers: list[psutil.Process] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        if self._samples % FAMILY_EVERY == 0:
            try:
                family = self.me.children(recursive=True)
            except psutil.Error:
                family = []
            self._jvms = [p for p in family if name(p) == "java"]
            self._workers = [p for p in family if name(p) != "java"]
        self._samples += 1
        task, jvm, workers = rss(self.me), sum(map(rss, self._jvms)), sum(map(rss, self._workers))
        self.peak_task = max(self.peak_task, task)
        self.peak_tree = max(self.peak_tree, task + jvm + workers)
        self.peak_jvm = max(self.peak_jvm, jvm)
        self.peak_workers = max(self.peak_workers, workers)
        for process in self._jvms:
            self.jvm_threads.update(process)
        self.cpu = {
            "task_process": own_cpu(self.me) - self._cpu_before,
            "jvm": sum(map(own_cpu, self._jvms)),
            "python_workers": sum(map(own_cpu, self._workers)),
        }

    def start(self) -> None:
        self._cpu_before = own_cpu(self.me)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join()
        # A last sample, with a fresh look at who is under the worker, while Spark's processes are still alive.
        self._samples = 0
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def result(self) -> dict[str, Any]:
        return {
            "peak_rss_mb": {
                "tree": round(self.peak_tree / 2**20, 1),
                "task_process": round(self.peak_task / 2**20, 1),
                "jvm": round(self.peak_jvm / 2**20, 1),
                "python_workers": round(self.peak_workers / 2**20, 1),
            },
            "cpu_seconds": {k: round(v, 2) for k, v in self.cpu.items()},
            "jvm_thread_cpu_seconds": thread_groups(self.jvm_threads.by_name()),
        }


@dataclass
class Clock:
    """Seconds spent per step of a loop."""

    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, step: str, action: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return action()
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started


def measured(run: Callable[[], dict[str, Any] | None], sampler: Sampler) -> dict[str, Any]:
    """Run `run` sampled; its summary, or the error it raised (a failed run is a result too), and its times."""
    sampler.start()
    # Wall-clock time, so the parent can line it up with Spark's event log and with other workers.
    started = time.time()
    summary, error = None, None
    try:
        summary = run()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finished = time.time()
    sampler.stop()
    return {
        "error": error,
        "execute_seconds": round(finished - started, 3),
        "execute_start": started,
        "execute_end": finished,
        "summary": summary,
        **sampler.result(),
    }


def serve(main: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """A worker's entry point: the JSON argument to `main`, its result to the original stdout."""
    result_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    arguments = json.loads(sys.argv[1])
    if GATED in sys.argv[2:]:
        print("ready", file=result_stream, flush=True)
        sys.stdin.readline()
    print(json.dumps(main(arguments)), file=result_stream, flush=True)
