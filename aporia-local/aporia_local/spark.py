"""Spark for the local stack, from the PySpark wheel alone: a Spark Connect server and a standalone cluster.

The wheel ships Spark's jars, `bin/spark-submit` and `sbin/spark-daemon.sh` (not `start-connect-server.sh`
or `start-master.sh`), so both are started from those with SPARK_HOME set to the pyspark package:

- the Spark Connect server, `spark-submit --class org.apache.spark.sql.connect.service.SparkConnectServer`,
  in the foreground (the local stack supervises it as it does the other stand-ins);
- a standalone master and one worker, `spark-daemon.sh start org.apache.spark.deploy.master.Master` and
  `... worker.Worker`, for the tests of the cluster case.

Everything they write (configuration, logs, pid files, scratch space) stays in the directory they are given.
Spark and the PostgreSQL JDBC driver log warnings and errors only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests

from aporia_local.redshift import free_port

POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
# The JVM's own stderr line about the vector module is printed before log4j starts; everything else
# below WARN is dropped, and the JDBC driver's "Unsupported Server Version: 8.0.2" (Redshift's version
# string, printed once per connection) too.
LOG4J2_PROPERTIES = """\
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.postgresql.name = org.postgresql
logger.postgresql.level = error
logger.hadoop_native.name = org.apache.hadoop.util.NativeCodeLoader
logger.hadoop_native.level = error
"""
# UTC everywhere, as the sync compares timestamps in UTC; C1 only: these JVMs are short-lived or idle.
JAVA_OPTIONS = "-Duser.timezone=UTC -XX:TieredStopAtLevel=1"


def spark_home() -> Path:
    """The pyspark package directory: the wheel's Spark distribution (jars/, bin/, sbin/)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed; install the provider with its dependencies.")
    return Path(spec.origin).parent


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


class SparkDirectory:
    """Where one Spark service keeps its configuration, logs, pid files and scratch space."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.conf = self.root / "conf"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.local = self.root / "local"

    def prepare(self, defaults: dict[str, str] | None = None) -> None:
        for path in (self.conf, self.logs, self.pids, self.local):
            path.mkdir(parents=True, exist_ok=True)
        (self.conf / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        lines = "".join(f"{key} {value}\n" for key, value in (defaults or {}).items())
        (self.conf / "spark-defaults.conf").write_text(lines)

    def env(self, python: str = sys.executable) -> dict[str, str]:
        """The environment of a Spark process started from the wheel, with `python` for its Python workers.

        PYSPARK_PYTHON is what a Connect server (and a driver) tells its executors to run; a standalone
        worker's executors run the bare `python3` a classic driver asks for by default, found on PATH.
        """
        python_bin = str(Path(python).parent)
        return {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(self.conf),
            "SPARK_LOG_DIR": str(self.logs),
            "SPARK_PID_DIR": str(self.pids),
            "SPARK_LOCAL_DIRS": str(self.local),
            # Block managers, RPC endpoints and web UIs on loopback, and no "hostname resolves to a
            # loopback address" warning.
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_IDENT_STRING": "aporia-local",
            "PYSPARK_PYTHON": python,
            "PATH": os.pathsep.join([python_bin, os.environ.get("PATH", "")]),
        }


# ------------------------------------------------------------------------------------------ Spark Connect


def connect_server_command(host: str, port: int, driver_memory: str = "2g") -> list[str]:
    """spark-submit arguments that run the Spark Connect server in the foreground on host:port."""
    return [
        str(spark_home() / "bin" / "spark-submit"),
        "--class",
        CONNECT_SERVER_CLASS,
        "--name",
        "Spark Connect server",
        "--master",
        "local[*]",
        "--driver-memory",
        driver_memory,
        # --jars puts the driver on the session's class path; the driver class path also lets
        # java.sql.DriverManager find it when a read names no `driver` option.
        "--jars",
        str(POSTGRES_JDBC_JAR),
        "--driver-class-path",
        str(POSTGRES_JDBC_JAR),
        "--conf",
        f"spark.connect.grpc.binding.address={host}",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.sql.session.timeZone=UTC",
        "--conf",
        f"spark.driver.extraJavaOptions={JAVA_OPTIONS}",
        "--conf",
        f"spark.executor.extraJavaOptions={JAVA_OPTIONS}",
        "--conf",
        "spark.ui.enabled=false",
    ]


def serve_connect(directory: Path, host: str, port: int, driver_memory: str = "2g") -> NoReturn:
    """Become the Spark Connect server (exec): signals reach the JVM, whose shutdown hook stops Spark."""
    spark_dir = SparkDirectory(directory)
    spark_dir.prepare()
    if not POSTGRES_JDBC_JAR.exists():
        raise SystemExit(f"The PostgreSQL JDBC driver is missing at {POSTGRES_JDBC_JAR}; run `make setup`.")
    # exec keeps the process id: the pid file names the JVM.
    (spark_dir.pids / "spark-connect.pid").write_text(str(os.getpid()))
    command = connect_server_command(host, port, driver_memory)
    os.execve(command[0], command, spark_dir.env())  # noqa: S606 - fixed arguments, no shell


def probe_connect(url: str, timeout: float = 180.0) -> float:
    """Wait until the Connect server at `url` runs a query; returns the seconds waited.

    Run it in a process of its own: a Connect session marks its process as a Connect client
    (SPARK_CONNECT_MODE_ENABLED), after which classic sessions cannot be created there.
    """
    started = time.monotonic()
    address = urlsplit(url)
    assert address.hostname is not None and address.port is not None, url
    while not port_is_open(address.port, address.hostname):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"Spark Connect at {url} did not open its port within {timeout:.0f} s.")
        time.sleep(0.2)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.remote(url).getOrCreate()
    try:
        count = spark.range(1).count()
    finally:
        spark.stop()
    if count != 1:
        raise RuntimeError(f"Spark Connect at {url} counted {count} rows in range(1).")
    return time.monotonic() - started


# ------------------------------------------------------------------------------------------ standalone


class StandaloneCluster:
    """A standalone Spark master and one worker on loopback, started with the wheel's spark-daemon.sh."""

    def __init__(self, directory: Path, cores: int = 1, memory: str = "1g", python: str = sys.executable) -> None:
        self.dir = SparkDirectory(directory)
        self.work_dir = self.dir.root / "work"
        self.cores = cores
        self.memory = memory
        self.python = python
        self.master_port = free_port()
        self.master_ui_port = free_port()
        self.worker_port = free_port()
        self.worker_ui_port = free_port()
        self.start_seconds = 0.0

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def connection(self) -> dict[str, Any]:
        """The Spark provider's `spark` connection for this master, in Airflow's JSON connection format.

        Its `spark.jars` extra ships the JDBC driver to the executors, as a cluster's connection would.
        """
        return {
            "conn_type": "spark",
            "host": "spark://127.0.0.1",
            "port": self.master_port,
            "extra": {"spark.jars": str(POSTGRES_JDBC_JAR)},
        }

    def airflow_env(self, conn_id: str) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(self.connection())}

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        # The master's REST submission server would take port 6066, which another master may hold.
        self.dir.prepare({"spark.master.rest.enabled": "false"})
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.dir.env(self.python), "SPARK_DAEMON_MEMORY": "512m", "SPARK_WORKER_DIR": str(self.work_dir)}
        master = self._daemon(
            env,
            "start",
            MASTER_CLASS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.master_port),
            "--webui-port",
            str(self.master_ui_port),
        )
        # spark-daemon.sh lingers a few seconds after the JVM starts; the worker need not wait for that.
        self._wait(lambda: port_is_open(self.master_port), "the master to open its port", timeout, started)
        worker = self._daemon(
            env,
            "start",
            WORKER_CLASS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.worker_port),
            "--webui-port",
            str(self.worker_ui_port),
            "--cores",
            str(self.cores),
            "--memory",
            self.memory,
            "--work-dir",
            str(self.work_dir),
            self.master_url,
        )
        self._wait(lambda: self.alive_workers() == 1, "the worker to register", timeout, started)
        for script in (master, worker):
            if script.wait(timeout) != 0:
                raise RuntimeError(f"spark-daemon.sh start failed; logs in {self.dir.logs}.")
        self.start_seconds = time.monotonic() - started

    def alive_workers(self) -> int:
        try:
            response = requests.get(f"http://127.0.0.1:{self.master_ui_port}/json/", timeout=5)
            return int(response.json().get("aliveworkers", 0))
        except (requests.RequestException, ValueError):
            return 0

    def stop(self) -> None:
        """Stop the worker (and with it its executors), then the master; wait until both have exited."""
        env = self.dir.env(self.python)
        for cls in (WORKER_CLASS, MASTER_CLASS):
            pid_file = self.dir.pids / f"spark-aporia-local-{cls}-1.pid"
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            self._daemon(env, "stop", cls).wait(30)
            _wait_for_exit(pid)

    def _daemon(self, env: dict[str, str], action: str, cls: str, *args: str) -> subprocess.Popen[bytes]:
        script = spark_home() / "sbin" / "spark-daemon.sh"
        with open(self.dir.logs / "spark-daemon.log", "ab") as log:
            return subprocess.Popen(["bash", str(script), action, cls, "1", *args], env=env, stdout=log, stderr=log)

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float, started: float) -> None:
        while not ready():
            if time.monotonic() - started > timeout:
                logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.dir.logs.glob("*.out")))
                raise RuntimeError(f"Timed out after {timeout:.0f} s waiting for {what}:\n{logs}")
            time.sleep(0.2)


def _wait_for_exit(pid: int, timeout: float = 30.0) -> None:
    """Wait for a process we started to exit; SIGKILL it after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """True while `pid` runs; an exited process its new parent has not reaped yet counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
