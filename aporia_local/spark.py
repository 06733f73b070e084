"""Spark for the local stack, from the PySpark wheel alone: a Spark Connect server.

The wheel ships Spark's jars, `bin/spark-submit` and `sbin/spark-daemon.sh` (not `start-connect-server.sh`
or `start-master.sh`), so the Spark Connect server is started with `spark-submit --class
org.apache.spark.sql.connect.service.SparkConnectServer`, SPARK_HOME set to the pyspark package, in the
foreground (the local stack supervises it as it does the other stand-ins).

Everything it writes (configuration, logs, pid files, scratch space) stays in the directory it is given.
Spark and the PostgreSQL JDBC driver log warnings and errors only.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
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
