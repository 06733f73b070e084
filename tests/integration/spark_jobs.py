"""Spark jobs the integration tests run in a process of their own, as an Airflow task runs its sync.

A process of its own because a Spark Connect session marks its process as a Connect client (no classic
session can start there afterwards) and a classic session is one per process.

    python -m tests.integration.spark_jobs <job> '<JSON arguments>'

prints the job's result as one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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


JOBS: dict[str, Callable[..., dict[str, Any]]] = {
    "connect_jdbc": connect_jdbc,
}

if __name__ == "__main__":
    result = JOBS[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result, default=str))
