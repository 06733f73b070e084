"""Which Spark a sync runs on, from the Spark provider's connections: `spark` (a master) or `spark_connect`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from aporia_provider.compat import AirflowFailException
from aporia_provider.extraction.spark import SparkTarget


def spark_target(spark_conn_id: str | None, spark_conf: Mapping[str, Any] | None) -> SparkTarget:
    """Where a sync runs Spark, from `spark_conn_id` (the Spark provider's connection types) and `spark_conf`."""
    conf = {key: str(value) for key, value in (spark_conf or {}).items()}
    if not spark_conn_id:
        return SparkTarget(master=conf.pop("spark.master", None), conf=conf)
    try:
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
        settings = {key: str(value) for key, value in conn.extra_dejson.items() if key.startswith("spark.")}
        return SparkTarget(master=conf.pop("spark.master", master), conf={**settings, **conf})
    raise AirflowFailException(
        f"Connection '{spark_conn_id}' is of type {conn.conn_type!r}; spark_conn_id takes a connection of "
        "type spark (a master URL) or spark_connect (a Spark Connect server)."
    )
