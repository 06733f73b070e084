"""One read for N versions against N syncs (issue 27): the same window of one table, every version's rows in it.

    python -m benchmarks.versions [--rows 100000] [--versions 4]

Seeds one table of the 16-dim shape (benchmarks.workload) with a version column (row n is version n % N), creates
the N versions in the local Aporia, then syncs the window twice into environments of their own, each sync in a
fresh process as an Airflow task runs it (benchmarks.sync_worker; execute() timed, imports excluded):

- once with ``model_version_column`` and all N versions: one read of the window;
- N times, one sync per version, each with its own ``WHERE model_version = …`` (what a DAG does without the
  option): N reads, N connections, N counts, N schema look-ups.

Both must deliver the same predictions and actuals per version; each round writes to environments of its own.
`make bench` runs it as its ``versions`` part; on its own it starts a local stack without Spark (Aporia only
counting what it is sent) and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aporia_local.stack import LocalStack, StackSettings
from benchmarks import workload

DEFAULT_ROWS = 100_000
DEFAULT_VERSIONS = 4
DEFAULT_ROUNDS = 3
VERSION_COLUMN = "model_version"


def version_names(count: int) -> list[str]:
    return [f"v16-{chr(ord('a') + i)}" for i in range(count)]


def measure(
    stack: LocalStack,
    work_dir: Path,
    aporia_conn_id: Callable[[str], str],
    rows: int = DEFAULT_ROWS,
    versions: int = DEFAULT_VERSIONS,
    rounds: int = DEFAULT_ROUNDS,
) -> dict[str, Any]:
    """Seed, create the versions, sync one way then the other in `rounds` rounds; the medians of both."""
    names = version_names(versions)
    table = workload.Table(f"bench16_{versions}_versions", workload.SHAPE_16, rows, workload._hour(26), "ver-")
    started = time.perf_counter()
    with stack.master_connection() as connection:
        cursor = connection.cursor()
        for statement in table.seed_sql():
            cursor.execute(statement)
        cursor.execute(f"ALTER TABLE {table.name} ADD COLUMN {VERSION_COLUMN} VARCHAR(16)")
        # The ids are 'ver-' and n padded to ten digits.
        cursor.execute(
            f"UPDATE {table.name} SET {VERSION_COLUMN} = 'v16-' || chr(97 + (substr({workload.ID_COLUMN}, 5)::bigint "
            f"% {versions})::int)"
        )
        connection.commit()
    seed_seconds = time.perf_counter() - started
    _create_versions(names)
    common = {**table.sync_arguments(), "model_version": None}
    ones: list[dict[str, Any]] = []
    eaches: list[list[dict[str, Any]]] = []
    for round_ in range(rounds):  # the ways take turns: neither always runs on a colder stack
        environment = f"versions-one-read-{round_ + 1}"
        routed = {"model_version_column": VERSION_COLUMN, "model_versions": names}
        ones.append(_sync(work_dir, environment, common | routed | {"aporia_conn_id": aporia_conn_id(environment)}))
        environment = f"versions-each-{round_ + 1}"
        eaches.append(
            [
                _sync(
                    work_dir,
                    f"{environment}-{name}",
                    common
                    | {
                        "model_version": name,
                        "query": f"SELECT * FROM {table.name} WHERE {VERSION_COLUMN} = '{name}'",
                        "aporia_conn_id": aporia_conn_id(environment),
                    },
                )
                for name in names
            ]
        )
    for one, each in zip(ones, eaches, strict=True):
        delivered_one = {v: _sent(s) for v, s in one["summary"]["versions"].items()}
        delivered_each = {name: _sent(run["summary"]) for name, run in zip(names, each, strict=True)}
        if delivered_one != delivered_each:
            raise RuntimeError(
                f"The ways delivered differently: one read {delivered_one}, a sync each {delivered_each}"
            )
    one_seconds = [one["execute_seconds"] for one in ones]
    each_seconds = [round(sum(run["execute_seconds"] for run in each), 3) for each in eaches]
    each_process = [round(sum(run["process_seconds"] for run in each), 3) for each in eaches]
    return {
        "rows": rows,
        "versions": versions,
        "rounds": rounds,
        "seed_seconds": round(seed_seconds, 2),
        "one_read_seconds": statistics.median(one_seconds),
        "one_read_rounds": one_seconds,
        "one_read_process_seconds": statistics.median(one["process_seconds"] for one in ones),
        "one_read_peak_rss_mb": max(one["peak_rss_mb"]["tree"] for one in ones),
        "sync_each_seconds": statistics.median(each_seconds),
        "sync_each_rounds": each_seconds,
        "sync_each_process_seconds": statistics.median(each_process),
        "ratio": round(statistics.median(one_seconds) / statistics.median(each_seconds), 3),
        "delivered": delivered_one,
    }


def render(result: dict[str, Any]) -> list[str]:
    """The part's lines in the benchmark's report."""
    versions = result["versions"]
    return [
        f"  One read for {versions} versions against a sync per version: {result['rows']:,} rows of the 16-dim "
        f"shape, every version's rows in one window; the median of {result['rounds']} rounds, the ways taking turns",
        f"    one sync, model_version_column: {result['one_read_seconds']:.2f} s "
        f"({result['one_read_process_seconds']:.2f} s with its process's start; rounds "
        f"{', '.join(f'{s:.2f}' for s in result['one_read_rounds'])})",
        f"    {versions} syncs, one per version: {result['sync_each_seconds']:.2f} s "
        f"({result['sync_each_process_seconds']:.2f} s with their processes' starts; rounds "
        f"{', '.join(f'{s:.2f}' for s in result['sync_each_rounds'])})",
        f"    one read costs {result['ratio']:.2f}x the {versions} syncs",
    ]


def _create_versions(names: list[str]) -> None:
    from aporia_provider.hooks.aporia import AporiaHook

    hook = AporiaHook()
    hook.create_model(workload.MODEL_ID, workload.MODEL_ID)
    shape = workload.SHAPE_16
    for name in names:
        hook.create_model_version(
            workload.MODEL_ID, name, workload.MODEL_TYPE, features=shape.features, predictions=shape.predictions
        )


def _sync(work_dir: Path, label: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One sync in a fresh process (benchmarks.sync_worker); its result, with the process's own seconds."""
    arguments = {key: value for key, value in arguments.items() if value is not None} | {"task_id": label}
    log_path = work_dir / f"{label}.log"
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.sync_worker", json.dumps(arguments)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            check=False,
        )
    answer = next((line for line in done.stdout.splitlines() if line.startswith("{")), None)
    if done.returncode != 0 or answer is None:
        raise RuntimeError(f"The sync {label} crashed:\n{log_path.read_text(errors='replace')[-4000:]}")
    result: dict[str, Any] = json.loads(answer)
    if result["error"]:
        raise RuntimeError(f"The sync {label} failed: {result['error']} (log: {log_path})")
    result["process_seconds"] = round(time.perf_counter() - started, 3)
    return result


def _sent(summary: dict[str, Any]) -> tuple[int, int]:
    return summary["fragments_sent"], summary["actuals_sent"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versions", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"rows of the window (default {DEFAULT_ROWS:,})")
    parser.add_argument("--versions", type=int, default=DEFAULT_VERSIONS, help="versions in the table (default 4)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="rounds, the ways taking turns (default 3)")
    args = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="aporia-bench-versions-"))
    # No Spark Connect server: these syncs never start Spark (a host set means "someone else's server").
    settings = StackSettings.with_free_ports()
    settings.spark_connect_host, settings.aporia_sink = "127.0.0.1", "count"
    stack = LocalStack(work_dir / "stack", settings)
    try:
        stack.start()
        home = work_dir / "airflow-home"
        home.mkdir()
        os.environ.update({**stack.airflow_env(), "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})

        def aporia_conn_id(environment: str) -> str:
            conn_id = "aporia_" + environment.replace("-", "_")
            aporia = stack.connections()["aporia_default"]
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {**aporia, "extra": {**aporia["extra"], "environment": environment}}
            )
            return conn_id

        result = measure(stack, work_dir, aporia_conn_id, args.rows, args.versions, args.rounds)
    finally:
        stack.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    print("\n".join(render(result)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
