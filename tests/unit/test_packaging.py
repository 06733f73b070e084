"""PySpark, the spark extra: one release of `pyspark` and `pyspark-client` (they install the same modules), and
without it what needs Spark is refused naming the extra (pyproject.toml)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from importlib import metadata

import pytest

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.options import SyncOptions
from aporia_provider.extraction.spark import check_one_pyspark, require_pyspark


def test_pyspark_and_pyspark_client_are_one_release() -> None:
    assert metadata.version("pyspark") == metadata.version("pyspark-client")


def test_a_mixed_pyspark_install_is_refused_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"pyspark": "4.2.0", "pyspark-client": "4.1.1"}
    monkeypatch.setattr(metadata, "version", versions.__getitem__)
    with pytest.raises(SyncInputError) as raised:
        check_one_pyspark()
    assert str(raised.value) == (
        "pyspark 4.2.0 and pyspark-client 4.1.1 are both installed and overwrite each other's pyspark package; "
        "install one release of both, e.g. pip install 'pyspark[connect]==4.2.0' 'pyspark-client==4.2.0'."
    )


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: SyncOptions(spark_min_rows=0), "spark_min_rows=0"),
        (lambda: require_pyspark("select_expr (Spark SQL)"), "select_expr (Spark SQL)"),
    ],
)
def test_what_needs_spark_without_pyspark_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[], object], why: str
) -> None:
    """Without the spark extra the provider imports and the task reads every window; what needs Spark is refused
    before anything is read, in one sentence naming the extra."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyspark" else real(name, *a))
    with pytest.raises(SyncInputError) as raised:
        make()
    assert str(raised.value) == (
        f"{why} needs Spark, but PySpark is not installed here; install the provider's spark extra "
        "(pip install 'aporia-airflow-provider[spark]') or leave Spark out of the sync."
    )
