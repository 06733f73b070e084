"""Which Spark a sync runs on, from the Spark provider's connections: `spark` (a master) or `spark_connect`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from aporia_provider.compat import AirflowFailException
from aporia_provider.extraction.spark import SparkTarget

# The secret masker's logger: the Task SDK's shared module (Airflow >= 3.2), or its execution_time module before.
SECRET_MASKER_LOGGERS = (
    "airflow.sdk._shared.secrets_masker.secrets_masker",
    "airflow.sdk.execution_time.secrets_masker",
)

# Words in a Spark setting's name that say its value is a secret (spark.authenticate.secret,
# spark.ssl.keyPassword, spark.hadoop.fs.s3a.secret.key, ...); the others are settings like spark.cores.max.
SECRET_SETTING_WORDS = ("secret", "password", "passwd", "token", "credential", "private")


def spark_target(spark_conn_id: str | None, spark_conf: Mapping[str, Any] | None) -> SparkTarget:
    """Where a sync runs Spark, from `spark_conn_id` (the Spark provider's connection types) and `spark_conf`."""
    conf = {key: str(value) for key, value in (spark_conf or {}).items()}
    if not spark_conn_id:
        return SparkTarget(master=conf.pop("spark.master", None), conf=conf)
    try:
        with _no_short_secret_warning():
            conn = BaseHook.get_connection(spark_conn_id)
    except Exception as exc:
        raise AirflowFailException(
            f"The Spark connection '{spark_conn_id}' is not defined; create it (type spark or "
            "spark_connect) or leave spark_conn_id unset to run on local[*]."
        ) from exc
    if conn.conn_type == "spark_connect":
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        if conn.password:
            mask_secret(conn.password)
        if "spark.master" in conf:
            raise AirflowFailException(
                f"spark_conf sets spark.master, but Spark connection '{spark_conn_id}' is a Spark Connect "
                "server; drop spark.master from spark_conf."
            )
        return SparkTarget(remote=SparkConnectHook(spark_conn_id).get_connection_url(), conf=conf)
    if conn.conn_type == "spark":
        if not conn.host:
            raise AirflowFailException(
                f"Spark connection '{spark_conn_id}' has no host; set it to the master URL, e.g. "
                "spark://host (port 7077), yarn or local[*]."
            )
        master = f"{conn.host}:{conn.port}" if conn.port else conn.host
        settings = spark_settings(spark_conn_id, conn.extra)
        return SparkTarget(master=conf.pop("spark.master", master), conf={**settings, **conf})
    raise AirflowFailException(
        f"Connection '{spark_conn_id}' is of type {conn.conn_type!r}; spark_conn_id takes a connection of "
        "type spark (a master URL) or spark_connect (a Spark Connect server)."
    )


def spark_settings(spark_conn_id: str, extra: str | None) -> dict[str, str]:
    """The Spark settings (extras named ``spark.*``) of a `spark` connection, with only the secret ones masked.

    Read from the extra itself, not ``extra_dejson``, which hands every value to Airflow's secret masker: a one-core
    cap ("1") is no secret, and the masker warns in the task log that it is too short to mask.
    """
    try:
        extras = json.loads(extra) if extra else {}
    except json.JSONDecodeError:
        raise AirflowFailException(
            f"Spark connection '{spark_conn_id}' has extras that are not JSON; write them as a JSON object of Spark "
            'settings, e.g. {"spark.cores.max": "4"}.'
        ) from None
    if not isinstance(extras, dict):
        raise AirflowFailException(
            f"Spark connection '{spark_conn_id}' has extras that are not a JSON object; write them as one, e.g. "
            '{"spark.cores.max": "4"}.'
        )
    settings = {key: str(value) for key, value in extras.items() if key.startswith("spark.")}
    for key, value in settings.items():
        if any(word in key.lower() for word in SECRET_SETTING_WORDS):
            mask_secret(value)
    return settings


class _ShortSecretWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "too short" not in record.getMessage()


@contextmanager
def _no_short_secret_warning() -> Iterator[None]:
    """Airflow's get_connection hands every extra of the connection to the secret masker (through get_uri), which
    warns in the task log that a one-character Spark setting is too short to mask; it masks nothing shorter all the
    same, so the warning is dropped while the Spark connection is fetched, and only then."""
    maskers = [logging.getLogger(name) for name in SECRET_MASKER_LOGGERS]
    quiet = _ShortSecretWarning()
    for masker in maskers:
        masker.addFilter(quiet)
    try:
        yield
    finally:
        for masker in maskers:
            masker.removeFilter(quiet)
