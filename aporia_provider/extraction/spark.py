"""Which Spark a sync runs on, and a session for it: local[*], a cluster master, or a Spark Connect server.

Airflow-free: the transfer resolves Airflow's `spark` / `spark_connect` connections into a SparkTarget.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.class_data import ClassData

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The Debian package's jar: the default JDBC driver of a local session when the user names none.
POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")
# JDBC sessions and timestamp conversion in UTC, whatever the host's zone; a quiet log4j2 config. The JVM's own
# tiered JIT for JDBC reads, which convert every row in the JVM: limited to C1 (-XX:TieredStopAtLevel=1), a
# 50,000-row window took 104 s instead of 44 s (issue 19).
_DRIVER_JAVA_OPTIONS = f"-Duser.timezone=UTC -Dlog4j2.configurationFile=file:{LOG4J2_CONFIG}"
DEFAULT_SPARK_CONF = {
    "spark.app.name": "aporia-sync",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.extraJavaOptions": _DRIVER_JAVA_OPTIONS,
    "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    # Spark's 1 GB default is tight for the local driver that also runs the tasks.
    "spark.driver.memory": "2g",
    # A cancelled sync's Python workers stop posting to Aporia within a tenth of a second, not seconds.
    "spark.python.task.killTimeout": "100ms",
}
# A session started for unloaded files: there the JVMs only hand judged batches along (Python workers read and judge
# the files), so C1 alone compiles all they need, for a fraction of C2's CPU (make bench, UNLOAD of 10M rows on the
# 2-worker cluster: Spark's CPU 8.94 -> 7.66 us a fragment, the driver's JVM 20.2 -> 14.2 CPU s). Added to the driver's
# and executors' Java options the settings leave at their defaults; a JDBC read later in the same sync runs on it too.
FILES_JAVA_OPTION = "-XX:TieredStopAtLevel=1"
_JAVA_OPTIONS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")
# Settings a Connect client may change per session (the server owns everything else).
SESSION_CONF = {"spark.sql.session.timeZone": "UTC"}
LOCAL_MASTER = "local[*]"
# A standalone master gives an application every free core unless capped, so one sync would leave concurrent
# ones waiting with none: each sync takes at most this many, unless spark.cores.max is set (the connection's
# extras or spark_conf).
CORES_PER_SYNC = "4"


@dataclass(frozen=True)
class SparkTarget:
    """Where to run: `remote` (an sc:// URL) or `master` (local[*] when neither is given), plus settings."""

    master: str | None = None
    remote: str | None = field(default=None, repr=False)  # may carry a token
    conf: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.master and self.remote:
            raise SyncInputError(
                "Spark is given both a master and a Spark Connect URL; use a spark connection or a spark_connect "
                "connection (or spark.master in spark_conf), not both."
            )

    @property
    def is_local(self) -> bool:
        return not self.remote and (self.master or LOCAL_MASTER).startswith("local")

    def describe(self) -> str:
        if self.remote:
            return "the Spark Connect server at " + self.remote.split("/;", 1)[0]
        return f"Spark master {self.master or LOCAL_MASTER}"

    def reads(self, spark_min_rows: int | None) -> str:
        """Where a sync reads its windows, for its first log line."""
        if spark_min_rows is None:
            return f"every window in this task (Spark, on {self.describe()}, only for what only it reads)"
        if spark_min_rows == 0:
            return f"every window on {self.describe()} (spark_min_rows=0)"
        return f"windows of {spark_min_rows:,} rows or more on {self.describe()}, smaller ones in this task"


def require_pyspark(why: str) -> None:
    """Refuse, in one sentence naming the extra, what needs Spark where PySpark is not installed (`why` says what
    needs it): a worker that never runs Spark does not carry it."""
    from importlib.util import find_spec

    if find_spec("pyspark") is None:
        raise SyncInputError(
            f"{why} needs Spark, but PySpark is not installed here; install the provider's spark extra "
            "(pip install 'aporia-airflow-provider[spark]') or leave Spark out of the sync."
        )


class StartSpark(Protocol):
    """What starts a sync's Spark session: `for_files` when its first job reads the files a window was unloaded to."""

    def __call__(self, for_files: bool = False) -> SparkSession: ...


def spark_session(target: SparkTarget, for_files: bool = False) -> SparkSession:
    """A session on `target`: settings merged over the defaults (`FILES_JAVA_OPTION` for a session started
    `for_files`); bad settings are one sentence."""
    require_pyspark(f"Reading this window on {target.describe()}")
    check_one_pyspark()
    from pyspark.sql import SparkSession

    # py4j narrates every gateway connection at INFO; the task log needs none of it.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        if target.remote:
            session = SparkSession.builder.remote(target.remote).getOrCreate()
            for key, value in {**SESSION_CONF, **target.conf}.items():
                session.conf.set(key, value)
            return session
        conf = session_conf(target, for_files)
        if target.is_local:
            # Local Python workers run on this machine: this interpreter has the provider installed. On a
            # cluster the executors' Python is the cluster's own configuration (PYSPARK_PYTHON there).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            if POSTGRES_JDBC_JAR.exists() and not ({"spark.jars", "spark.jars.packages"} & conf.keys()):
                conf["spark.jars"] = str(POSTGRES_JDBC_JAR)
        from pyspark import SparkContext

        # A JVM already running in this process is reused as it is: only a launch needs its stderr set aside.
        if SparkContext._active_spark_context is not None:
            return _built(conf)
        return _launched(conf, target)
    except Exception as exc:
        if isinstance(exc, SyncInputError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SyncInputError(
            f"Spark did not start on {target.describe()}: {reason.rstrip('.')}; check spark_conf and the Spark "
            "connection (spark_conn_id)."
        ) from None


def _built(conf: dict[str, str]) -> SparkSession:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _launched(conf: dict[str, str], target: SparkTarget) -> SparkSession:
    """A session on a JVM this process starts: from the worker's class-data archive of Spark's classes, unless the
    settings give the driver's Java options."""
    class_data = None
    if "spark.driver.extraJavaOptions" not in target.conf:
        class_data = ClassData.for_launch(conf.get("spark.driver.extraClassPath", ""))
    options, note = class_data.launch_options() if class_data else ("", None)
    if options:
        conf = {**conf, "spark.driver.extraJavaOptions": f"{conf['spark.driver.extraJavaOptions']} {options}"}
    try:
        with _jvm_stderr_kept_aside():
            session = _built(conf)
    except BaseException:
        if note:
            note.unlink(missing_ok=True)
        raise
    if class_data and note:
        class_data.started(session, note)
    return session


def session_conf(target: SparkTarget, for_files: bool) -> dict[str, str]:
    """The settings a session this process launches starts with: the defaults, then `target`'s."""
    conf = {**DEFAULT_SPARK_CONF, "spark.master": target.master or LOCAL_MASTER, **target.conf}
    if for_files:
        for key in set(_JAVA_OPTIONS) - target.conf.keys():
            conf[key] = f"{conf[key]} {FILES_JAVA_OPTION}"
    if conf["spark.master"].startswith("spark://"):
        conf.setdefault("spark.cores.max", CORES_PER_SYNC)
    return conf


def check_one_pyspark() -> None:
    """`pyspark` and `pyspark-client` install the same `pyspark` package: of two releases, the one installed last
    holds the code, beside the other's jars. Refuse that mix in one sentence instead of failing somewhere in Spark."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        full, client = version("pyspark"), version("pyspark-client")
    except PackageNotFoundError:
        return
    if full != client:
        raise SyncInputError(
            f"pyspark {full} and pyspark-client {client} are both installed and overwrite each other's pyspark "
            f"package; install one release of both, e.g. pip install 'pyspark[connect]=={full}' "
            f"'pyspark-client=={full}'."
        )


@contextmanager
def _jvm_stderr_kept_aside() -> Iterator[None]:
    """Start the JVM with its stderr in a file: it prints start-up notices there that task logs show as errors.

    The JVM inherits the file descriptor at launch, so only the launch needs the redirect; the file has no name
    (its space goes back when the JVM ends), so nothing is left behind in the temp directory.
    """
    with tempfile.TemporaryFile(prefix="aporia-spark-", suffix=".log") as log_file:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(log_file.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def is_connect(spark: SparkSession) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


@contextmanager
def tagged(spark: SparkSession, tag: str) -> Iterator[None]:
    """Tag the Spark jobs this thread starts, so `cancel` can stop them from another thread.

    Spark Connect tags operations on the session; a classic session honours only SparkContext job tags.
    """
    if is_connect(spark):
        spark.addTag(tag)
    else:
        spark.sparkContext.addJobTag(tag)
    try:
        yield
    finally:
        if is_connect(spark):
            spark.removeTag(tag)
        else:
            spark.sparkContext.removeJobTag(tag)


def cancel(spark: SparkSession, tag: str) -> None:
    """Stop the running Spark jobs carrying `tag`."""
    if is_connect(spark):
        spark.interruptTag(tag)
    else:
        spark.sparkContext.cancelJobsWithTag(tag)
