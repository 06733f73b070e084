"""Resident memory and CPU time of process trees, read with psutil (Linux /proc for thread names)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import psutil


class ProcessTree:
    """A snapshot of who is whose child: one pass over the process table, however many lookups follow."""

    def __init__(self) -> None:
        self._children: dict[int, list[psutil.Process]] = defaultdict(list)
        for process in psutil.process_iter(["ppid"]):
            self._children[process.info["ppid"]].append(process)

    def children(self, process: psutil.Process) -> list[psutil.Process]:
        return self._children.get(process.pid, [])

    def descendants(self, process: psutil.Process) -> list[psutil.Process]:
        found = []
        pending = list(self.children(process))
        while pending:
            child = pending.pop()
            found.append(child)
            pending.extend(self.children(child))
        return found

    def cpu(self, process: psutil.Process) -> float:
        """CPU seconds of a process and its descendants, the live ones and those already reaped."""
        try:
            times = process.cpu_times()
        except psutil.Error:
            return 0.0
        reaped = times.children_user + times.children_system
        return times.user + times.system + reaped + sum(map(self.cpu, self.children(process)))


class SampledTreeCpu:
    """CPU seconds of processes trees while they change, sampled: a process's own time as last seen, for every
    process seen in the trees. Reaped times miss what the reaper never waited for: a Spark executor's Python
    workers, orphaned when the executor ends, took their CPU time with them (make bench, UNLOAD of 10M rows on the
    cluster: 66 of the machine's 228 CPU s were nobody's)."""

    def __init__(self, roots: list[psutil.Process]) -> None:
        self.roots = roots
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}

    def sample(self) -> None:
        tree = ProcessTree()
        for process in [*self.roots, *(p for root in self.roots for p in tree.descendants(root))]:
            try:
                key, seconds = (process.pid, process.create_time()), own_cpu(process)
            except psutil.Error:
                continue
            self._first.setdefault(key, seconds)
            self._last[key] = max(seconds, self._last.get(key, 0.0))

    def seconds(self) -> float:
        """CPU seconds used since the first sample."""
        return sum(self._last[key] - self._first[key] for key in self._last)


def machine_cpu() -> float:
    """CPU seconds every process on this machine has used since boot (busy time of all cores)."""
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq + times.steal)


def own_cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def name(process: psutil.Process) -> str:
    try:
        return str(process.name())
    except psutil.Error:
        return ""


class ThreadTimes:
    """CPU seconds per thread of one process, by thread name; ended threads keep their last reading."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.names: dict[int, str] = {}

    def update(self, process: psutil.Process) -> None:
        try:
            threads = process.threads()
        except psutil.Error:
            return
        for thread in threads:
            if thread.id not in self.names:
                # The JVM names its native threads ("C2 CompilerThre", "Executor task l", "GC Thread#0").
                try:
                    self.names[thread.id] = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text().strip()
                except OSError:
                    continue
            self.seconds[thread.id] = thread.user_time + thread.system_time

    def by_name(self) -> list[tuple[str, float]]:
        return [(self.names[tid], seconds) for tid, seconds in self.seconds.items()]
