"""Which Spark a sync runs on, from a `spark` connection: its settings reach Spark, only its secrets the masker."""

from __future__ import annotations

import json

import pytest

from aporia_provider.compat import AirflowFailException
from aporia_provider.extraction.spark import (
    _DRIVER_JAVA_OPTIONS,
    CORES_PER_SYNC,
    FILES_JAVA_OPTION,
    SparkTarget,
    session_conf,
)
from aporia_provider.hooks import spark as spark_hook
from aporia_provider.hooks.spark import spark_settings


@pytest.fixture
def masked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the hook hands to Airflow's secret masker."""
    handed: list[str] = []
    monkeypatch.setattr(spark_hook, "mask_secret", lambda secret, name=None: handed.append(secret))
    return handed


def test_only_the_secret_settings_are_masked(masked: list[str]) -> None:
    extras = {
        "spark.cores.max": "1",
        "spark.executor.cores": 1,
        "spark.jars": "/usr/share/java/postgresql.jar",
        "spark.authenticate.secret": "a-long-shared-secret",
        "spark.ssl.keyPassword": "key-store-password",
        "not.a.spark.setting": "ignored",
    }
    assert spark_settings("spark_shared", json.dumps(extras)) == {
        "spark.cores.max": "1",
        "spark.executor.cores": "1",
        "spark.jars": "/usr/share/java/postgresql.jar",
        "spark.authenticate.secret": "a-long-shared-secret",
        "spark.ssl.keyPassword": "key-store-password",
    }
    assert masked == ["a-long-shared-secret", "key-store-password"]


def test_a_connection_without_extras_has_no_settings(masked: list[str]) -> None:
    assert (spark_settings("spark_plain", None), spark_settings("spark_plain", "")) == ({}, {})
    assert masked == []


@pytest.mark.parametrize(
    ("extra", "problem"), [("spark.cores.max=1", "are not JSON"), ('["spark.cores.max"]', "are not a JSON object")]
)
def test_extras_that_are_not_a_json_object_are_a_configuration_error(extra: str, problem: str) -> None:
    with pytest.raises(AirflowFailException) as raised:
        spark_settings("spark_typo", extra)
    assert str(raised.value).startswith(f"Spark connection 'spark_typo' has extras that {problem}; write them as")


def test_a_session_for_unloaded_files_adds_c1_to_the_java_options_the_settings_leave_at_their_defaults() -> None:
    user_options = {"spark.executor.extraJavaOptions": "-Xss4m"}
    for_files = session_conf(SparkTarget(master="spark://master:7077", conf=user_options), for_files=True)
    assert for_files["spark.driver.extraJavaOptions"] == f"{_DRIVER_JAVA_OPTIONS} {FILES_JAVA_OPTION}"
    assert for_files["spark.executor.extraJavaOptions"] == "-Xss4m"  # the user's, as they are
    assert for_files["spark.cores.max"] == CORES_PER_SYNC
    for_jdbc = session_conf(SparkTarget(), for_files=False)
    assert (
        FILES_JAVA_OPTION not in for_jdbc["spark.driver.extraJavaOptions"] + for_jdbc["spark.executor.extraJavaOptions"]
    )
    assert for_jdbc["spark.master"] == "local[*]" and "spark.cores.max" not in for_jdbc
