"""The Spark JVM a sync starts, started from a class-data archive (Java's AppCDS): the classes an earlier session on
this worker loaded, mapped from one file instead of read, verified and linked one by one (some 15,000 of them).

A local session's start and first job took its JVM 3.8 CPU s from an archive against 7.7 without (Java 17). A JVM
writes the archive of what it loaded as it exits (`-XX:ArchiveClassesAtExit`), after its task; the next sessions
map it. A JVM that maps a dump cut short (its writer killed) dies of SIGBUS, so a dump becomes the archive only once
a JVM of the same java and class path started from it with every page read (`-XX:+VerifySharedSpaces`) and ended
cleanly. The archive is keyed by the java and the Spark jars, so that an upgrade makes a new one (a JVM given an
archive of another class path starts without it, as the JVM decides).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

ARCHIVE_DIR = Path(tempfile.gettempdir()) / "aporia-spark-class-data"
# The JVM's CDS notices (a signed jar's classes left out, an archive of another class path) go to its stdout, which
# is the task log's.
QUIET = "-Xlog:cds*=off"
CHECK_SECONDS = 60


@dataclass(frozen=True)
class ClassData:
    """The class-data archive of JVMs of this java and these Spark jars (and driver class path), in `directory`:
    `<key>.jsa`; a dump being written or waiting for its check, `<key>.<token>.dump`, noted in `<key>.<token>.json`
    (the pid that writes it, the class path to check it with; the java is the key's)."""

    java: str
    key: str
    directory: Path = ARCHIVE_DIR

    @classmethod
    def for_launch(cls, extra_class_path: str = "", directory: Path = ARCHIVE_DIR) -> ClassData | None:
        """The archive of the JVM Spark's launcher starts (JAVA_HOME's java, else the PATH's); None without a java
        or a Spark home."""
        from pyspark.find_spark_home import _find_spark_home

        java_home = os.environ.get("JAVA_HOME")
        java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
        if not java:
            return None
        try:
            jars = Path(_find_spark_home()) / "jars"
            real_java = os.path.realpath(java)
            identity = [real_java, os.stat(real_java).st_mtime_ns, str(jars), jars.stat().st_mtime_ns, extra_class_path]
        except (OSError, SystemExit):  # _find_spark_home exits where it finds none
            return None
        return cls(java, hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16], directory)

    @property
    def archive(self) -> Path:
        return self.directory / f"{self.key}.jsa"

    def launch_options(self) -> tuple[str, Path | None]:
        """The Java options of a JVM about to start: the archive's, or else the dump it is to write as it exits (and
        the note of it, for `started`), unless another JVM is writing one; none where the directory fails us."""
        try:
            if not self.archive.exists():
                self._adopt_dumps()
            if self.archive.exists():
                return f"-XX:SharedArchiveFile={self.archive} {QUIET}", None
            if self._notes():
                return "", None
            self.directory.mkdir(parents=True, exist_ok=True)
            note = self.directory / f"{self.key}.{uuid.uuid4().hex}.json"
            # Until the JVM is up, the process starting it stands for it.
            _write(note, {"pid": os.getpid()})
        except OSError as error:
            log.debug("Spark's JVM starts without a class-data archive: %s", error)
            return "", None
        return f"-XX:ArchiveClassesAtExit={note.with_suffix('.dump')} {QUIET}", note

    def started(self, spark: SparkSession, note: Path) -> None:
        """Note which JVM writes the dump, and the class path its check starts a JVM with."""
        jvm: Any = spark.sparkContext._jvm
        facts = {
            "pid": int(jvm.java.lang.ProcessHandle.current().pid()),
            "class_path": str(jvm.java.lang.System.getProperty("java.class.path")),
        }
        try:
            _write(note, facts)
        except OSError as error:
            log.debug("Spark's class-data dump is not noted, so it will not be used: %s", error)

    def _notes(self) -> list[Path]:
        return sorted(self.directory.glob(f"{self.key}.*.json"))

    def _adopt_dumps(self) -> None:
        """The first dump whose writer has ended and that passes the check becomes the archive; the others go, and
        so do the notes of JVMs that ended without writing one."""
        for note in self._notes():
            try:
                facts = json.loads(note.read_text())
            except (OSError, ValueError):
                continue  # being written
            if _alive(facts["pid"]):
                continue
            dump = note.with_suffix(".dump")
            checkable = "class_path" in facts and dump.exists() and not self.archive.exists()
            if checkable and _starts_from(self.java, dump, facts["class_path"]):
                os.replace(dump, self.archive)
            dump.unlink(missing_ok=True)
            note.unlink(missing_ok=True)


def _write(note: Path, facts: dict[str, Any]) -> None:
    """Whole or not at all: a reader never sees half a note."""
    partial = note.with_suffix(".partial")
    partial.write_text(json.dumps(facts))
    os.replace(partial, note)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's
        return True
    return True


def _starts_from(java: str, dump: Path, class_path: str) -> bool:
    """A JVM of the dump's java and class path starts from it, reading every page (a short file: SIGBUS)."""
    check = [java, "-Xshare:on", f"-XX:SharedArchiveFile={dump}", "-XX:+VerifySharedSpaces"]
    check += ["-Xlog:disable", "-XX:ErrorFile=/dev/null", "-XX:-CreateCoredumpOnCrash", "-cp", class_path]
    try:
        return subprocess.run([*check, "-version"], capture_output=True, timeout=CHECK_SECONDS).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
