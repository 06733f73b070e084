"""The class-data archive of Spark's JVM: a first JVM dumps it, a later launch adopts it once a JVM starts from it,
and a dump cut short is never handed to a JVM (it would die of SIGBUS). Real java, a JVM with no classes of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from aporia_provider.extraction.class_data import QUIET, ClassData

JAVA = shutil.which("java")


@pytest.fixture
def class_data(tmp_path: Path) -> ClassData:
    assert JAVA is not None
    return ClassData(JAVA, "k", tmp_path / "archives")


def dumped(class_data: ClassData, tmp_path: Path) -> Path:
    """What a launch without an archive is told, run as a JVM that ends at once; its note as `started` writes it."""
    class_path = tmp_path / "classes"  # an empty directory: a JVM's dump refuses one that holds files
    class_path.mkdir()
    options, note = class_data.launch_options()
    assert note is not None and options == f"-XX:ArchiveClassesAtExit={note.with_suffix('.dump')} {QUIET}"
    assert JAVA is not None
    jvm = subprocess.run([JAVA, *options.split(), "-cp", str(class_path), "-version"], capture_output=True)
    assert jvm.returncode == 0 and not jvm.stdout, jvm.stdout
    note.write_text(json.dumps({"pid": 2**22 + 1, "class_path": str(class_path)}))  # an ended pid
    return note


def test_a_jvms_dump_becomes_the_archive_of_the_next_launch(class_data: ClassData, tmp_path: Path) -> None:
    note = dumped(class_data, tmp_path)
    assert class_data.launch_options() == (f"-XX:SharedArchiveFile={class_data.archive} {QUIET}", None)
    assert class_data.archive.stat().st_size > 0 and not note.exists() and not note.with_suffix(".dump").exists()


def test_a_dump_cut_short_is_deleted_and_the_next_launch_dumps_again(class_data: ClassData, tmp_path: Path) -> None:
    note = dumped(class_data, tmp_path)
    dump = note.with_suffix(".dump")
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size - 4096])
    options, again = class_data.launch_options()
    assert not class_data.archive.exists() and not dump.exists() and not note.exists()
    assert again is not None and again != note and options.startswith("-XX:ArchiveClassesAtExit=")


def test_no_second_dump_while_a_jvm_writes_one(class_data: ClassData) -> None:
    _, note = class_data.launch_options()
    assert note is not None and json.loads(note.read_text()) == {"pid": os.getpid()}  # the launcher, until it is up
    assert class_data.launch_options() == ("", None)


def test_a_directory_that_cannot_be_made_gives_no_options(tmp_path: Path) -> None:
    assert JAVA is not None
    (tmp_path / "a-file").write_text("")
    assert ClassData(JAVA, "k", tmp_path / "a-file" / "archives").launch_options() == ("", None)


def test_the_archive_is_keyed_by_the_java_and_the_driver_class_path(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, extended = ClassData.for_launch(), ClassData.for_launch("/opt/drivers/redshift-jdbc.jar")
    assert plain is not None and extended is not None and plain.key != extended.key
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert ClassData.for_launch() is None
