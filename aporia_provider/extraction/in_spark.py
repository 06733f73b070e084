"""A large window the Spark way: read over JDBC in partitions, judged in the JVM, posted by Spark tasks.

DataFrame API only, so it runs unchanged on local[*], a cluster and Spark Connect. Rows never pass through
the task: Spark reads partitions over JDBC (the window predicate pushed down), builds each fragment's JSON
and each row's verdict in the JVM (`columns`), keeps the read on its disk between the check and the send,
and Spark tasks post batches to Aporia themselves (`mapInArrow`); only counts and a few examples come back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from functools import partial, reduce
from typing import TYPE_CHECKING

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.exceptions import InvalidRowsError, SyncInputError
from aporia_provider.extraction.columns import last_of_each_name, project, spark_column_type
from aporia_provider.extraction.fields import (
    duplicate_id,
    rejected_example,
    require_columns,
    timestamp_problem,
    too_many_repeated_ids,
)
from aporia_provider.extraction.plan import MAX_DUPLICATES_LISTED, MAX_EXAMPLES, Source, SyncPlan
from aporia_provider.extraction.sql import Window, derived, windowed

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_READ_OPTIONS = {"fetchsize": "10000"}
# Read options that only tune Spark's JDBC reads; any other (sessionInitStatement, customSchema, ...) changes
# what is read, so a window with one goes to Spark whatever its size.
TASK_READ_OPTIONS = frozenset({"fetchsize", "queryTimeout", "pushDownPredicate"})
# One read partition per this many rows: a small window is one task (no scheduling overhead), a large one
# spreads over the cores and keeps each task's share of the kept copy small.
ROWS_PER_PARTITION = 50_000
# Windows larger than this are read in parts, each part with credentials fetched just before its read,
# so a read longer than the credentials' lifetime still completes.
ROWS_PER_READ = 2_000_000
_DELIVERY_SCHEMA = "fragments long, batches long, retries long, warnings array<string>"


def read_with_spark(
    spark: SparkSession,
    plan: SyncPlan,
    window: Window,
    whole_days: bool,
    jdbc_options: Callable[[], Mapping[str, str]],
    source: Source,
    total: int | None,
    num_partitions: int | None,
) -> list[DataFrame]:
    """Read the source's window once, in parts when it is large, each part projected and kept on disk."""
    from pyspark import StorageLevel
    from pyspark.sql import types as T

    timestamp_column = source.timestamp_column
    options = _connection(plan, jdbc_options)
    # Spark names the columns' types itself (the task's probe may not know them all): check them its way.
    probe = spark.read.format("jdbc").options(**options, dbtable=derived(source.query)).load()
    require_columns(probe.columns, plan, {source.timestamp_argument: [timestamp_column]})
    timestamp_type = probe.schema[timestamp_column].dataType
    problem = timestamp_problem(
        source.timestamp_argument, timestamp_column, spark_column_type(timestamp_type), whole_days
    )
    if problem:
        raise SyncInputError(problem)
    if total is None:
        counted = f"(SELECT count(*) AS n FROM {windowed(source.query, timestamp_column, window)}) AS counted"
        total = int(spark.read.format("jdbc").options(**options, dbtable=counted).load().first()[0])  # type: ignore[index]
    parts = window.split(max(1, math.ceil(total / ROWS_PER_READ)))
    kept: list[DataFrame] = []
    for number, part in enumerate(parts, 1):
        partitions = num_partitions or max(1, math.ceil(total / len(parts) / ROWS_PER_PARTITION))
        connection = options if number == 1 else _connection(plan, jdbc_options)
        frame = _read(spark, connection, part, partitions, source, dates=isinstance(timestamp_type, T.DateType))
        frame = last_of_each_name(frame.selectExpr(*plan.select_expr)) if plan.select_expr else frame
        projected = project(frame, plan, source.kind).persist(StorageLevel.DISK_ONLY)
        kept.append(projected)
        if len(parts) > 1:
            projected.count()  # read this part now, while its credentials are fresh
    return kept


def _connection(plan: SyncPlan, jdbc_options: Callable[[], Mapping[str, str]]) -> dict[str, str]:
    return {**DEFAULT_READ_OPTIONS, **plan.read_options, **jdbc_options()}


def _read(
    spark: SparkSession, options: Mapping[str, str], window: Window, partitions: int, source: Source, dates: bool
) -> DataFrame:
    """The window of the source's query over JDBC, in partitions of its timestamp range."""
    bound = "%Y-%m-%d" if dates else "%Y-%m-%d %H:%M:%S"
    return (
        spark.read.format("jdbc")
        .options(
            **options,
            dbtable=windowed(source.query, source.timestamp_column, window),
            partitionColumn=source.timestamp_column,
            lowerBound=window.start.strftime(bound),
            upperBound=window.end.strftime(bound),
            numPartitions=str(partitions),
        )
        .load()
    )


def check_with_spark(kept: list[DataFrame], plan: SyncPlan, kind: str) -> tuple[DataFrame, int, int, list[str]]:
    """Count rows and rejects (problems and repeated ids) in one Spark job; more only when rows are rejected.

    Returns the fragments to send, the rows, the rejected rows and a few examples of them.
    """
    from pyspark.sql import functions as F

    frame = reduce(lambda a, b: a.unionAll(b), kept)
    per_id = frame.groupBy("__id").agg(F.count(F.lit(1)).alias("n"), F.count("__problem").alias("bad"))
    repeated_id = F.col("__id").isNotNull() & (F.col("n") > 1)
    totals = per_id.agg(
        F.coalesce(F.sum("n"), F.lit(0)).alias("rows"),
        F.coalesce(F.sum(F.when(repeated_id, F.col("n")).otherwise(F.col("bad"))), F.lit(0)).alias("rejected"),
        F.count(F.when(repeated_id, 1)).alias("repeated_ids"),
    ).first()
    assert totals is not None
    if totals["repeated_ids"] > MAX_DUPLICATES_LISTED:
        raise InvalidRowsError(too_many_repeated_ids(plan.id_column, MAX_DUPLICATES_LISTED))
    problem = F.col("__problem")
    if totals["repeated_ids"]:
        duplicates = [row["__id"] for row in per_id.where(repeated_id).select("__id").collect()]
        repeated = F.col("__id").isin(duplicates)
        problem = F.when(repeated, F.concat(F.lit(duplicate_id(plan.id_column)), F.col("__id"))).otherwise(problem)
    verdict = frame.select("__id", "__fragment", problem.alias("__problem"))
    examples = []
    if totals["rejected"]:
        examples = [
            rejected_example(kind, row["__id"], row["__problem"])
            for row in verdict.where(problem.isNotNull()).limit(MAX_EXAMPLES).collect()
        ]
    return verdict.where(problem.isNull()).select("__fragment"), totals["rows"], totals["rejected"], examples


def deliver_with_spark(frame: DataFrame, client: AporiaClient, plan: SyncPlan, batch_size: int) -> LogResult:
    """Spark tasks post their partitions' fragments; each task answers with one row of what it cost."""
    # Arrow hands each task its rows in batches of this size and the task posts each as it comes, so a
    # cancelled task stops at its next batch instead of posting a whole prefetched partition.
    frame.sparkSession.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    send = partial(_send_partition, client, plan.model_id, plan.model_version)
    total = LogResult()
    for row in frame.mapInArrow(send, _DELIVERY_SCHEMA).collect():
        total.add(LogResult(row["fragments"], row["batches"], row["retries"], list(row["warnings"] or [])))
    return total


def _send_partition(
    client: AporiaClient, model_id: str, model_version: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Runs in a Spark task: post each batch of this partition's fragments, report what it cost."""
    import pyarrow as pa

    result = LogResult()
    for record_batch in batches:
        if record_batch.num_rows:
            result.add(client.log_fragment_json(model_id, model_version, record_batch.column(0).to_pylist()))
    yield pa.RecordBatch.from_pylist(
        [
            {
                "fragments": result.fragments,
                "batches": result.batches,
                "retries": result.retries,
                "warnings": result.warnings[:MAX_EXAMPLES],
            }
        ]
    )
