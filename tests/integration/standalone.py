"""The real Airflow: `airflow standalone` (scheduler, dag-processor, triggerer, API server; LocalExecutor, SQLite)
on loopback with a private home, the example DAGs and the local stack's connections; plus its REST API.

Started once per test session (tests/integration/conftest.py). Stopped with SIGINT, the way a person stops it
with Ctrl-C: standalone then terminates its components itself. (SIGTERM would stop only the parent and leave the
components and LocalExecutor workers behind.) Afterwards no process of its session may be left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import requests

from aporia_local.redshift import free_port
from tests.helpers import DAGS_FOLDER, MODEL, AporiaProbe, redshift_sql

if TYPE_CHECKING:
    from aporia_local.stack import LocalStack

T = TypeVar("T")
USER = "admin"
START_TIMEOUT = 420.0  # a fresh metadata database and four components on two busy cores: 40-90 s measured
STOP_TIMEOUT = 90.0  # measured 15 s

# A cluster policy (Airflow's own mechanism for a deployment to adjust DAGs) that narrows a DAG's schedule to
# [start, end]: the example DAGs stay as users get them, and the scheduler catches up a bounded number of windows.
POLICY = '''"""Written by the test session: bounds the example sync DAG's catch-up (tests/integration/standalone.py)."""
from datetime import datetime

BOUNDS = {bounds}


def dag_policy(dag):
    if dag.dag_id in BOUNDS:
        start, end = (datetime.fromisoformat(value) for value in BOUNDS[dag.dag_id])
        dag.start_date, dag.end_date = start, end
        for task in dag.tasks:
            task.start_date, task.end_date = start, end
'''


class AirflowApi:
    """Airflow's REST API as an admin, with bounded waits that say what they waited for."""

    def __init__(self, base_url: str, password: str) -> None:
        self.base_url = base_url
        self.password = password
        self.session = requests.Session()

    def sign_in(self) -> None:
        response = requests.post(
            f"{self.base_url}/auth/token", json={"username": USER, "password": self.password}, timeout=30
        )
        assert response.status_code == 201, f"POST /auth/token: {response.status_code} {response.text[:300]}"
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.session.request(method, self.base_url + path, timeout=60, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def post_when_unlocked(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST, or None when Airflow answers that its SQLite database is locked by another component (it does
        so for a backfill while the scheduler writes, and asks to try again); any other refusal fails the test."""
        response = self.session.post(self.base_url + path, json=body, timeout=60)
        if response.status_code == 503 and "Database is locked" in response.text:
            return None
        if response.status_code != 200:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = self.get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="run_after", limit=1000)[
            "dag_runs"
        ]
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")[
            "task_instances"
        ]
        return found

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """A task try's whole log as the UI gets it: one JSON object per line."""
        response = self.session.get(
            f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
            headers={"Accept": "application/x-ndjson"},
            timeout=60,
        )
        assert response.status_code == 200, f"log of {dag_id}/{run_id}/{task_id}#{try_number}: {response.status_code}"
        return response.text

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        body = {"logical_date": None, "conf": dict(conf or {})}
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        run_id: str = run["dag_run_id"]
        return run_id


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 2.0) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` and the last state seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
        except (requests.RequestException, AssertionError) as exc:
            result, last = None, exc
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def session_processes(sid: int) -> list[str]:
    """The processes of session `sid` still alive (zombies excluded), as 'pid command'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            fields = text[text.rindex(")") + 2 :].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        # fields: state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{stat.parent.name} {cmdline.strip()[:160]}")
    return found


class StatsdListener:
    """A StatsD server on loopback: keeps every metric line Airflow's components and tasks send it."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._receive, name="statsd-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                datagram = self.socket.recv(65535)
            except OSError:  # closed
                return
            self.lines.extend(line for line in datagram.decode(errors="replace").splitlines() if line)

    def close(self) -> None:
        self.socket.close()


class AirflowStandalone:
    def __init__(
        self,
        directory: Path,
        connections_env: Mapping[str, str],
        bounds: Mapping[str, tuple[datetime, datetime]],
        statsd_port: int,
        parallelism: int = 2,
    ) -> None:
        self.home = directory / "airflow-home"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(12)
        self.log_path = directory / "standalone.log"
        self.process: subprocess.Popen[bytes] | None = None
        # Inherit PATH, JAVA_HOME and the like, but no Airflow setting of the test process itself.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {
            **inherited,
            # standalone starts its components as `airflow ...` from the PATH.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{inherited.get('PATH', '')}",
            **connections_env,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # LocalExecutor forks `parallelism` workers up front (32 by default); two cores run two syncs well.
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            # Spark (in each sync task) binds to loopback like everything else here.
            "SPARK_LOCAL_IP": "127.0.0.1",
            # The log servers listen on all interfaces (Airflow hard-codes it); free ports at least.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Airflow's metrics, the sync's among them, to the test's StatsD listener.
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
        }
        self.bounds = bounds
        self.api = AirflowApi(self.base_url, self.password)

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start standalone and wait until all its components are healthy; returns the seconds it took."""
        (self.home / "config").mkdir(parents=True, exist_ok=True)
        # The example DAGs as users get them, and the tier's own (a subclassed sync), as links in one folder.
        (self.home / "dags").mkdir(exist_ok=True)
        for dag_file in [*DAGS_FOLDER.glob("*.py"), *TIER_DAGS_FOLDER.glob("*.py")]:
            if not (link := self.home / "dags" / dag_file.name).exists():
                link.symlink_to(dag_file)
        (self.home / "passwords.json").write_text(json.dumps({USER: self.password}))
        bounds = {dag_id: (start.isoformat(), end.isoformat()) for dag_id, (start, end) in self.bounds.items()}
        (self.home / "config" / "airflow_local_settings.py").write_text(POLICY.format(bounds=repr(bounds)))
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "airflow"), "standalone"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session, so what it leaves behind can be found; SIGINT handled even where this test
                # process was started with SIGINT ignored (as a background job of a non-interactive shell is).
                start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None or "Shutting down components" in self.log_path.read_text(
                errors="replace"
            ):
                raise RuntimeError(f"airflow standalone stopped during start-up:\n{self.log_tail()}")
            health = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

        try:
            wait_for(f"airflow standalone to be healthy (log: {self.log_path})", healthy, timeout, interval=1.0)
            self.api.sign_in()
        except Exception:
            self.stop()
            raise
        return time.monotonic() - started

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """SIGINT, wait for standalone to finish, and return what is left of its session (nothing, if all is well).

        Anything left is killed, so a failed stop does not leak processes into the rest of the session.
        """
        if self.process is None:
            return []
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while (left := session_processes(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left or process.poll() is None:
            for pid in [int(line.split()[0]) for line in left] + [process.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait(10)
            return left or [f"{process.pid} airflow standalone (did not exit within {timeout:.0f} s of SIGINT)"]
        return []


SETUP_DAG = "aporia_setup"
SYNC_DAG = "aporia_redshift_sync"
SYNC_TASK = "sync_predictions_and_actuals"
# The tier's own DAG: one task of a subclass of AporiaSyncOperator.
TIER_DAGS_FOLDER = Path(__file__).parent / "dags"
SUBCLASS_DAG, SUBCLASS_TASK = "aporia_subclassed_sync", "team_sync"
FINISHED = ("success", "failed")
RUN_TIMEOUT = 600.0
# Aporia answers this many logPredictions calls with 503 once the catch-up starts. The client makes 4 attempts per
# call, so at least one sync try fails (two running syncs may share the faults, but one gets 4 of 8), and Airflow
# retries it.
DELIVERY_FAULTS = 8


@dataclass
class ScheduledSyncs:
    """What the real scheduler did with the example DAGs, collected right after it finished."""

    windows: list[tuple[datetime, datetime]]  # the windows the sync DAG caught up, in order
    backfilled: list[tuple[datetime, datetime]]  # the windows the backfill re-ran
    failed_window: tuple[datetime, datetime]  # synced by a manual run with a row Aporia cannot take (NaN)
    overlapping_window: tuple[datetime, datetime]  # synced by a manual run across two caught-up windows
    subclass_window: tuple[datetime, datetime]  # synced by the subclass's DAG, after the failed window
    setup_run: dict[str, Any]
    sync_runs: list[dict[str, Any]]  # the catch-up's runs (the backfill's among them)
    failed_run: dict[str, Any]
    overlapping_run: dict[str, Any]
    subclass_run: dict[str, Any]
    backfill: dict[str, Any]
    task_instances: dict[tuple[str, str], list[dict[str, Any]]]  # (dag_id, run_id) -> its task instances
    logs: dict[tuple[str, str, str, int], str]  # (dag_id, run_id, task_id, try) -> the log as the UI gets it
    fragments: list[dict[str, Any]]  # what the local Aporia holds for the example version afterwards
    view: list[dict[str, Any]]  # what the sync view's JSON API shows afterwards
    metrics: list[str]  # every StatsD line Airflow sent meanwhile
    seconds: dict[str, float] = field(default_factory=dict)

    def sync_instance(self, window: tuple[datetime, datetime]) -> dict[str, Any]:
        [run] = [r for r in self.sync_runs if parse_time(r["data_interval_start"]) == window[0]]
        [ti] = [t for t in self.task_instances[(SYNC_DAG, run["dag_run_id"])] if t["task_id"] == SYNC_TASK]
        return ti

    @property
    def retried(self) -> list[tuple[datetime, datetime]]:
        """The windows whose sync Airflow retried after a failed try (the delivery faults')."""
        return [w for w in self.windows if self.sync_instance(w)["try_number"] > 1 + (w in self.backfilled)]


def sync_lookback() -> timedelta:
    """The example sync DAG's lookback, read from the DAG as users get it: each run reads [start - lookback, end)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS_FOLDER / f"{SYNC_DAG}.py")).dags[SYNC_DAG]
    lookback: timedelta = dag.get_task(SYNC_TASK).lookback
    return lookback


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_example_dags(
    airflow: AirflowStandalone,
    aporia: AporiaProbe,
    stack: LocalStack,
    statsd: StatsdListener,
    windows: list[tuple[datetime, datetime]],
    backfill: slice,
) -> ScheduledSyncs:
    """aporia_setup by a manual run; aporia_redshift_sync caught up by the scheduler, a try of it failing on Aporia's
    faults and retried by Airflow; a backfill; a manual run over half of two windows; a manual run of the next
    window, which fails on a NaN; then the subclass's DAG syncing the window after it."""
    api, seconds = airflow.api, {}
    for dag_id in (SETUP_DAG, SYNC_DAG, SUBCLASS_DAG):
        wait_for(f"the dag-processor to parse {dag_id}", lambda d=dag_id: api.get(f"/api/v2/dags/{d}"), 180)

    started = time.monotonic()
    setup_run_id = api.trigger(SETUP_DAG)
    setup_run = wait_for(
        f"{SETUP_DAG} run {setup_run_id} to finish",
        lambda: (run := api.get(f"/api/v2/dags/{SETUP_DAG}/dagRuns/{setup_run_id}"))["state"] in FINISHED and run,
        RUN_TIMEOUT,
    )
    seconds["setup"] = time.monotonic() - started

    # Unpaused, the scheduler creates one run per interval due since the (policy-bounded) start date.
    started = time.monotonic()
    aporia.fail_next(DELIVERY_FAULTS, status=503, operation="logPredictions")
    api.request("PATCH", f"/api/v2/dags/{SYNC_DAG}", json={"is_paused": False})

    def caught_up() -> list[dict[str, Any]] | None:
        runs = api.dag_runs(SYNC_DAG)
        return runs if len(runs) >= len(windows) and all(r["state"] in FINISHED for r in runs) else None

    wait_for(f"{SYNC_DAG} to catch up {len(windows)} windows", caught_up, RUN_TIMEOUT)
    seconds["catch_up"] = time.monotonic() - started

    started = time.monotonic()
    backfilled = windows[backfill]
    backfill_request = {
        "dag_id": SYNC_DAG,
        # Runs are matched by logical date, which for an interval timetable is the window's start.
        "from_date": backfilled[0][0].isoformat(),
        "to_date": backfilled[-1][0].isoformat(),
        "run_backwards": False,
        "dag_run_conf": {},
        "reprocess_behavior": "completed",
        "max_active_runs": 2,
    }
    created = wait_for(
        f"Airflow to accept a backfill of {SYNC_DAG}",
        lambda: api.post_when_unlocked("/api/v2/backfills", backfill_request),
        RUN_TIMEOUT,
    )
    done = wait_for(
        f"backfill {created['id']} of {SYNC_DAG} to complete",
        lambda: (b := api.get(f"/api/v2/backfills/{created['id']}"))["completed_at"] and b,
        RUN_TIMEOUT,
    )
    seconds["backfill"] = time.monotonic() - started

    started = time.monotonic()
    hour = windows[-1][1] - windows[-1][0]
    overlapping_window = (windows[3][0] + hour / 2, windows[4][0] + hour / 2)
    overlapping_run = run_with_bounds(api, SYNC_DAG, overlapping_window)
    failed_window = (windows[-1][1], windows[-1][1] + hour)
    failed_run = fail_a_window(api, stack, failed_window)
    subclass_window = (failed_window[1], failed_window[1] + hour)
    subclass_run = run_with_bounds(api, SUBCLASS_DAG, subclass_window)
    seconds["manual_runs"] = time.monotonic() - started

    manual = {run["dag_run_id"] for run in (failed_run, overlapping_run)}
    sync_runs = [r for r in api.dag_runs(SYNC_DAG) if r["dag_run_id"] not in manual]
    runs = [(SETUP_DAG, setup_run), *[(SYNC_DAG, r) for r in [*sync_runs, overlapping_run, failed_run]]]
    task_instances = {
        (dag_id, run["dag_run_id"]): api.task_instances(dag_id, run["dag_run_id"])
        for dag_id, run in [*runs, (SUBCLASS_DAG, subclass_run)]
    }
    logs = {
        (dag_id, run_id, ti["task_id"], attempt): api.log(dag_id, run_id, ti["task_id"], attempt)
        for (dag_id, run_id), tis in task_instances.items()
        for ti in tis
        for attempt in range(1, ti["try_number"] + 1)
    }
    result = ScheduledSyncs(
        windows=windows,
        backfilled=backfilled,
        failed_window=failed_window,
        overlapping_window=overlapping_window,
        subclass_window=subclass_window,
        setup_run=setup_run,
        sync_runs=sync_runs,
        failed_run=failed_run,
        overlapping_run=overlapping_run,
        subclass_run=subclass_run,
        backfill=done,
        task_instances=task_instances,
        logs=logs,
        fragments=aporia.fragments(MODEL, "v1"),
        view=api.get("/aporia-sync/api/windows"),
        metrics=list(statsd.lines),
        seconds=seconds,
    )
    # For whoever debugs a failure: what the REST API answered, beside standalone's own log.
    record = {k: v for k, v in vars(result).items() if k not in ("logs", "task_instances")}
    record["task_instances"] = {"/".join(key): value for key, value in task_instances.items()}
    (airflow.log_path.parent / "scheduled_syncs.json").write_text(json.dumps(record, indent=1, default=str))
    return result


# A copy of the window's first prediction with amount NaN, which Aporia cannot take.
NAN_ROW = """INSERT INTO model_predictions (prediction_id, prediction_timestamp, raw_text, amount, owner, is_new,
    embeddings, will_buy_insurance, proba)
SELECT %s, prediction_timestamp + interval '1 second', raw_text, 'NaN'::float8, owner, is_new, embeddings,
    will_buy_insurance, proba
FROM model_predictions WHERE prediction_timestamp >= %s ORDER BY prediction_timestamp LIMIT 1"""
NAN_ID = "pred-not-a-number"


def run_with_bounds(api: AirflowApi, dag_id: str, window: tuple[datetime, datetime]) -> dict[str, Any]:
    """A manual run of `dag_id` for `window`, typed into the trigger form; returns the run once it finished."""
    bounds = {"window_start": window[0].isoformat(), "window_end": window[1].isoformat()}
    run_id = api.trigger(dag_id, conf=bounds)
    run: dict[str, Any] = wait_for(
        f"{dag_id} run {run_id} to finish",
        lambda: (r := api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))["state"] in FINISHED and r,
        RUN_TIMEOUT,
    )
    return run


def fail_a_window(api: AirflowApi, stack: LocalStack, window: tuple[datetime, datetime]) -> dict[str, Any]:
    """A manual run of the sync DAG for `window` while the window holds a NaN amount: the sync fails (bad input: no
    retry). The row is removed afterwards."""
    redshift_sql(stack, NAN_ROW, (NAN_ID, window[0]))
    try:
        return run_with_bounds(api, SYNC_DAG, window)
    finally:
        redshift_sql(stack, "DELETE FROM model_predictions WHERE prediction_id = %s", (NAN_ID,))
