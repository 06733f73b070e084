"""The benchmark's standalone Spark cluster: the local stack's master and one worker (aporia_local.spark), plus a
second worker, each worker with one core: a 2-worker cluster on a 2-core machine. And what the master says of
the applications it runs (its web UI's /json), sampled while syncs run.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from aporia_local.redshift import free_port
from aporia_local.spark import WORKER_CLASS, StandaloneCluster, spark_home

WORKERS = 2
WORKER_MEMORY = "2g"
# spark-daemon.sh tells daemons of one class apart by an instance number; the first worker is 1.
SECOND_WORKER = "2"


class TwoWorkerCluster(StandaloneCluster):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, cores=1, memory=WORKER_MEMORY)
        self.second_worker_port = free_port()
        self.second_worker_ui_port = free_port()

    def shared_airflow_env(self, conn_id: str) -> dict[str, str]:
        """A `spark` connection syncs share the cluster through: each takes one core (`spark.cores.max` in its
        extras, as a platform engineer sets it for a shared cluster), so two syncs run at once. A lone sync goes
        through the plain connection and takes both workers (the provider's cap of 4 cores a sync is above 2)."""
        connection = self.connection()
        connection["extra"] = {**connection["extra"], "spark.cores.max": "1"}
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}

    def start(self, timeout: float = 120.0) -> None:
        super().start(timeout)
        started = time.monotonic()
        env = {**self.dir.env(self.python), "SPARK_DAEMON_MEMORY": "512m", "SPARK_WORKER_DIR": str(self.work_dir)}
        arguments = [
            *("--host", "127.0.0.1", "--port", str(self.second_worker_port)),
            *("--webui-port", str(self.second_worker_ui_port), "--cores", "1", "--memory", self.memory),
            *("--work-dir", str(self.work_dir), self.master_url),
        ]
        self.daemon(env, "start", *arguments).wait(timeout)
        while self.alive_workers() < WORKERS:
            if time.monotonic() - started > timeout:
                raise RuntimeError(
                    f"The second Spark worker did not register within {timeout:.0f} s; logs in {self.dir.logs}."
                )
            time.sleep(0.2)
        self.start_seconds += time.monotonic() - started

    def stop(self) -> None:
        if (self.dir.pids / f"spark-aporia-local-{WORKER_CLASS}-{SECOND_WORKER}.pid").exists():
            self.daemon(self.dir.env(self.python), "stop").wait(30)
        super().stop()

    def daemon(self, env: dict[str, str], action: str, *arguments: str) -> subprocess.Popen[bytes]:
        """spark-daemon.sh for the second worker."""
        script = spark_home() / "sbin" / "spark-daemon.sh"
        with open(self.dir.logs / "spark-daemon.log", "ab") as log:
            return subprocess.Popen(
                ["bash", str(script), action, WORKER_CLASS, SECOND_WORKER, *arguments], env=env, stdout=log, stderr=log
            )

    def applications(self) -> list[dict[str, Any]]:
        """The master's active and completed applications: id, name, cores (granted now), state, start time."""
        try:
            state = requests.get(f"http://127.0.0.1:{self.master_ui_port}/json/", timeout=5).json()
        except (requests.RequestException, ValueError):
            return []
        return [*state.get("activeapps", []), *state.get("completedapps", [])]


@dataclass
class CoresWatch:
    """Samples, every 0.2 s while syncs run, the cores the master grants each application, for two questions:
    did every application get cores, and did they hold cores at the same time (neither waiting with 0)?"""

    cluster: TwoWorkerCluster
    known: set[str] = field(default_factory=set)  # applications that were there before
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> name, first seen, first with cores
    together: int = 0  # samples in which every new application running held cores
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.known = {app["id"] for app in self.cluster.applications()}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        assert self._thread is not None
        self._stop.set()
        self._thread.join()
        return {
            "applications": list(self.seen.values()),
            "samples_all_holding_cores": self.together,
        }

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            running = [
                app for app in self.cluster.applications() if app["id"] not in self.known and app["state"] != "FINISHED"
            ]
            for app in running:
                seen = self.seen.setdefault(
                    app["id"],
                    {"id": app["id"], "name": app["name"], "first_seen": now, "cores_at": None, "max_cores": 0},
                )
                seen["max_cores"] = max(seen["max_cores"], app["cores"])
                if app["cores"] > 0 and seen["cores_at"] is None:
                    seen["cores_at"] = now
            if len(running) >= 2 and all(app["cores"] > 0 for app in running):
                self.together += 1
