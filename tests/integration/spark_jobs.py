"""Spark jobs the integration tests run in a process of their own, as an Airflow task runs its sync.

A process of its own because a Spark Connect session marks its process as a Connect client (no classic
session can start there afterwards) and a classic session is one per process.

    python -m tests.integration.spark_jobs <job> '<JSON arguments>'

prints the job's result as one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any


def connect_jdbc(url: str, jdbc: dict[str, str], table: str, id_column: str, ids: list[str]) -> dict[str, Any]:
    """On a Spark Connect server: a trivial query, then a JDBC read of `table` (the rows `ids` returned)."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.builder.remote(url).getOrCreate()
    try:
        frame = spark.read.format("jdbc").options(**jdbc, dbtable=table).load()
        rows = frame.where(F.col(id_column).isin(ids)).collect()
        return {
            "range_count": spark.range(1).count(),
            "count": frame.count(),
            "types": {field.name: field.dataType.simpleString() for field in frame.schema.fields},
            "rows": {row[id_column]: row.asDict() for row in rows},
            "session": "connect" if type(spark).__module__.startswith("pyspark.sql.connect") else "classic",
        }
    finally:
        spark.stop()


def standalone_jdbc_udf(master: str, jar: str, jdbc: dict[str, str], table: str, rows: int) -> dict[str, Any]:
    """On a standalone cluster: a JDBC read in two partitions, each summarised by a Python UDF (mapInArrow)
    on the worker, which parses the SUPER embeddings. PYSPARK_PYTHON is not set here: the executors run
    the `python3` the worker finds."""
    import pyarrow as pa
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(master)
        .appName("spark-jobs-standalone")
        .config("spark.jars", jar)
        .config("spark.executor.memory", "512m")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    try:
        frame = (
            spark.read.format("jdbc")
            .options(**jdbc, dbtable=f"(SELECT row_number() OVER () AS n, * FROM {table}) AS source")
            .options(partitionColumn="n", lowerBound="1", upperBound=str(rows + 1), numPartitions="2")
            .load()
        )

        def summarise(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            import json
            import os
            import sys

            count, lengths = 0, set()
            for batch in batches:
                count += batch.num_rows
                lengths |= {len(json.loads(text)) for text in batch.column("embeddings").to_pylist()}
            yield pa.RecordBatch.from_pydict(
                {
                    "rows": [count],
                    "lengths": [sorted(lengths)],
                    "python": [sys.executable],
                    "pid": [os.getpid()],
                }
            )

        schema = "rows long, lengths array<long>, python string, pid long"
        parts = frame.select("embeddings").mapInArrow(summarise, schema).collect()
        return {
            "partitions": frame.rdd.getNumPartitions(),
            "parts": [part.asDict() for part in parts],
            "application_id": spark.sparkContext.applicationId,
            "driver_python": sys.executable,
        }
    finally:
        spark.stop()


def local_session_start() -> dict[str, Any]:
    """A sync's local session (`extraction.spark.spark_session`) and one job: the Java options its JVM started with."""
    from aporia_provider.extraction.spark import SparkTarget, spark_session

    spark = spark_session(SparkTarget(master="local[1]"))
    bean = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()  # type: ignore[union-attr]
    return {"count": spark.range(10).count(), "java_options": list(bean.getInputArguments())}


JOBS: dict[str, Callable[..., dict[str, Any]]] = {
    "connect_jdbc": connect_jdbc,
    "local_session_start": local_session_start,
    "standalone_jdbc_udf": standalone_jdbc_udf,
}

if __name__ == "__main__":
    result = JOBS[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result, default=str))
