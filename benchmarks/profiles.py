"""Where a sync's time goes: Spark's event log, the JVM's threads, py-spy and JFR recordings, summarised.

The event log and the thread times come with every benchmark run; py-spy and Java Flight Recorder
only with `--profile`, since sampling slows the sync down.
"""

from __future__ import annotations

import json
import linecache
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CALL_SITE = re.compile(r"^(?P<action>\w+) at (?P<path>.+):(?P<line>\d+)$")
_DEF = re.compile(r"^\s*def (\w+)\(")
_CONNECT_PLAN = re.compile(r"root \{\s*(?:common \{[^}]*\}\s*)?(\w+) \{")
_TRAILING_NUMBER = re.compile(r"[-#]?\d+$")


@dataclass
class SparkJob:
    call_site: str
    start: float  # epoch seconds
    end: float
    tasks: int = 0
    task_seconds: float = 0.0  # summed over tasks, so up to (cores x wall)
    task_cpu_seconds: float = 0.0
    gc_seconds: float = 0.0


@dataclass
class SparkTimeline:
    app_start: float
    jobs: list[SparkJob]
    # The largest JVM heap in use that Spark's executor metrics saw (bytes; 0 when none were logged).
    peak_heap_bytes: int = 0


def read_event_log(directory: Path) -> SparkTimeline:
    """Jobs (with their stages' task metrics) from an uncompressed Spark event log directory."""
    app_start = 0.0
    peak_heap = 0
    jobs: dict[int, SparkJob] = {}
    stage_job: dict[int, int] = {}
    # Rolled files are events_1_<app>, events_2_<app>, ...; a JVM that died may leave a last line unfinished.
    for path in sorted(directory.rglob("events_*"), key=lambda p: int(p.name.split("_")[1])):
        with path.open() as lines:
            events = [json.loads(line) for line in lines if line.endswith("\n")]
        for event in events:
            kind = event["Event"]
            if kind == "SparkListenerApplicationStart":
                app_start = event["Timestamp"] / 1000
            elif kind == "SparkListenerJobStart":
                # Some actions (a DataFrame's count()) log no call site: their first stage's name says what ran.
                stages = event.get("Stage Infos") or [{}]
                call_site = event.get("Properties", {}).get("callSite.short") or stages[0].get("Stage Name", "?")
                start = event["Submission Time"] / 1000
                jobs[event["Job ID"]] = SparkJob(call_site, start, start)
                stage_job.update({stage: event["Job ID"] for stage in event["Stage IDs"]})
            elif kind == "SparkListenerJobEnd":
                jobs[event["Job ID"]].end = event["Completion Time"] / 1000
            elif kind in ("SparkListenerTaskEnd", "SparkListenerStageExecutorMetrics"):
                metrics = event.get("Task Executor Metrics") or event.get("Executor Metrics") or {}
                peak_heap = max(peak_heap, int(metrics.get("JVMHeapMemory", 0)))
            elif kind == "SparkListenerStageCompleted":
                info = event["Stage Info"]
                job = jobs[stage_job[info["Stage ID"]]]
                metrics = {a["Name"]: a.get("Value") or 0 for a in info.get("Accumulables", [])}
                job.tasks += info["Number of Tasks"]
                job.task_seconds += metrics.get("internal.metrics.executorRunTime", 0) / 1000
                job.task_cpu_seconds += metrics.get("internal.metrics.executorCpuTime", 0) / 1e9
                job.gc_seconds += metrics.get("internal.metrics.jvmGCTime", 0) / 1000
    return SparkTimeline(app_start, sorted(jobs.values(), key=lambda j: j.start), peak_heap)


def phases(
    timeline: SparkTimeline, execute_start: float, execute_end: float, shared: bool = False
) -> list[dict[str, Any]]:
    """The operator's wall time split into Spark start-up, each call site's jobs, and the driver in between.

    `shared`: the timeline is a long-running server's (Spark Connect): only the jobs that started within
    the sync count, and the first phase is the time until its first job.
    """
    sites: dict[str, list[SparkJob]] = defaultdict(list)
    jobs = [j for j in timeline.jobs if execute_start <= j.start <= execute_end] if shared else timeline.jobs
    for job in jobs:
        sites[describe_call_site(job.call_site)].append(job)
    if shared:
        first = min((j.start for j in jobs), default=execute_end)
        rows: list[dict[str, Any]] = [
            {
                "phase": "until the first Spark job (imports, version schema, session, JDBC schema)",
                "seconds": first - execute_start,
            }
        ]
    elif not timeline.app_start:
        return [{"phase": "no Spark application started", "seconds": round(execute_end - execute_start, 2)}]
    else:
        rows = [
            {
                "phase": "until Spark's application starts (imports, version schema, JVM launch)",
                "seconds": timeline.app_start - execute_start,
            }
        ]
    for described, jobs in sites.items():
        rows.append(
            {
                "phase": described,
                "seconds": sum(j.end - j.start for j in jobs),
                "jobs": len(jobs),
                "tasks": sum(j.tasks for j in jobs),
                "task_seconds": sum(j.task_seconds for j in jobs),
                "task_cpu_seconds": sum(j.task_cpu_seconds for j in jobs),
                "gc_seconds": sum(j.gc_seconds for j in jobs),
            }
        )
    driver = (execute_end - execute_start) - sum(row["seconds"] for row in rows)
    rows.append({"phase": "driver outside Spark jobs (session, credentials, JDBC schema, planning)", "seconds": driver})
    if shared:
        rows[-1]["phase"] = "client and server outside Spark jobs (planning, between jobs, session close)"
    return [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def describe_call_site(call_site: str) -> str:
    """'collect at /x/engine.py:328' -> 'engine.py:328 collect() in _check', the function read from the source.

    A Spark Connect job's call site is its session and plan: it is named by the plan's root relation
    (`limit`: a first() or count; `map_partitions`: mapInArrow; ...).
    """
    connect = _CONNECT_PLAN.search(call_site)
    if call_site.startswith("Spark Connect") and connect:
        return f"Spark Connect plan {connect[1]}"
    match = _CALL_SITE.match(call_site)
    if not match:
        return call_site
    line = int(match["line"])
    source = linecache.getlines(match["path"])[:line]
    if not source:
        return call_site  # not a Python file of ours (e.g. "count at NativeMethodAccessorImpl.java:0")
    function = next((m[1] for text in reversed(source) if (m := _DEF.match(text))), "?")
    return f"{Path(match['path']).name}:{line} {match['action']}() in {function}"


def thread_groups(threads: list[tuple[str, float]], top: int = 6) -> dict[str, float]:
    """CPU seconds of a JVM's threads grouped by name, numbers dropped ('C2 CompilerThre', 'GC Thread')."""
    groups: dict[str, float] = defaultdict(float)
    for name, seconds in threads:
        groups[_TRAILING_NUMBER.sub("", name).strip()] += seconds
    ranked = sorted(groups.items(), key=lambda item: -item[1])[:top]
    return {name: round(seconds, 2) for name, seconds in ranked}


# py-spy

_PROVIDER = "aporia_provider/"


def py_spy_summary(path: Path, rate: int, provider_only: bool, top: int = 10) -> dict[str, Any]:
    """Seconds sampled in a py-spy raw (collapsed stacks) file, and where they went.

    Each sample is charged to the innermost frame of the provider's own code (`owner`: the line of
    engine.py, client.py, aporia_store.py, ... responsible for it) and to its innermost frame (`leaf`: what
    actually ran, or waited). Recorded with --idle, seconds are wall time per thread, not CPU time, and
    `provider_only` keeps just the samples of threads working for the provider (not py4j's idle ones).
    """
    if not path.exists():
        return {}
    total = 0
    owners: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first is the process
        if not frames or not count.isdigit():
            continue
        owner = next((f for f in reversed(frames) if _PROVIDER in f), None)
        if owner is None:
            if provider_only:
                continue
            owner = "(outside the provider's code)"
        total += int(count)
        owners[owner.replace(_PROVIDER, "")] += int(count)
        # A leaf's line number is dropped, so one function counts once.
        leaves[re.sub(r":\d+\)$", ")", frames[-1])] += int(count)
    return {
        "seconds": round(total / rate, 1),
        "owners": _ranked(owners, rate, top),
        "leaves": _ranked(leaves, rate, top),
    }


def _ranked(samples: Counter[str], rate: int, top: int) -> list[tuple[str, float]]:
    """The `top` frames in seconds, leaving out those under 0.1 s: noise at py-spy's sampling rate."""
    return [(frame, round(n / rate, 1)) for frame, n in samples.most_common(top) if n / rate >= 0.1]


# Java Flight Recorder

# What a JVM sample was doing, decided by its innermost frame that matches (most specific first).
JVM_CATEGORIES = (
    ("JDBC: PostgreSQL driver reading rows", ("org.postgresql.",)),
    ("JDBC: result set to Spark rows", ("JdbcUtils",)),
    # Jackson's own frames serve both directions: the Spark caller (JacksonParser / JacksonGenerator) decides.
    ("from_json: parsing SUPER/JSON text (Jackson)", ("JacksonParser",)),
    ("to_json: fragment JSON (Jackson)", ("JacksonGenerator",)),
    ("date_format: occurredAt strings", ("TimestampFormatter",)),
    ("persist: columnar cache build/read", ("sql.execution.columnar",)),
    ("rows pickled for the Python workers", ("net.razorvine", "org.apache.spark.api.python", "EvaluatePython")),
    ("duplicate check: hash aggregate", ("HashAggregate", "BytesToBytesMap", "UnsafeFixedWidthAggregationMap")),
    ("shuffle", ("org.apache.spark.shuffle", "ShuffleExchange", "UnsafeRowSerializer")),
    ("block manager, disk store", ("org.apache.spark.storage",)),
    ("codegen compile (Janino)", ("org.codehaus.janino", "CodeGenerator")),
    ("class loading", ("ClassLoader.loadClass", "java.util.zip", "URLClassPath")),
    ("query planning", ("catalyst.optimizer", "catalyst.analysis", "catalyst.rules", "QueryExecution", "adaptive.")),
    ("generated code (projections, filters)", ("GeneratedClass",)),
)


def jfr_summary(recording: Path, top: int = 8) -> dict[str, Any]:
    """Shares of the recording's jdk.ExecutionSample events (running Java code) by category and by method."""
    java = shutil.which("java")
    jfr = Path(java).resolve().parent / "jfr" if java else None
    if jfr is None or not jfr.exists() or not recording.exists():
        return {}
    categories: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    command = [str(jfr), "print", "--stack-depth", "64", "--events", "jdk.ExecutionSample", str(recording)]
    # Streamed: a recording of a long sync prints hundreds of megabytes.
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as printed:
        assert printed.stdout is not None
        for frames in _jfr_stacks(printed.stdout):
            methods[frames[0]] += 1
            categories[_category(frames)] += 1
    samples = sum(methods.values())
    if not samples:
        return {}
    return {
        "samples": samples,
        "categories": [(name, round(n / samples, 3)) for name, n in categories.most_common()],
        "top_methods": [(name, round(n / samples, 3)) for name, n in methods.most_common(top)],
    }


def _jfr_stacks(lines: Iterable[str]) -> Iterator[list[str]]:
    """Stacks (innermost first, 'package.Class.method') from `jfr print` text output."""
    frames: list[str] | None = None
    for line in lines:
        text = line.strip()
        if text == "stackTrace = [":
            frames = []
        elif frames is not None and text == "]":
            if frames:
                yield frames
            frames = None
        elif frames is not None and text != "...":
            frames.append(text.partition("(")[0])


def _category(frames: list[str]) -> str:
    for caller, name in (("JacksonGenerator", "to_json"), ("JacksonParser", "from_json")):
        if any(caller in frame for frame in frames):
            return next(n for n, _ in JVM_CATEGORIES if n.startswith(name))
    for frame in frames:
        for name, markers in JVM_CATEGORIES:
            if any(marker in frame for marker in markers):
                return name
    return "other"
