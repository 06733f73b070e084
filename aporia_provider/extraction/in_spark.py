"""A large window the Spark way: read over JDBC in partitions, judged and posted by Spark's executors.

DataFrame API only, so it runs unchanged on local[*], a cluster and Spark Connect. Rows never pass through
the task: Spark reads partitions over JDBC (the window predicate pushed down), its executors judge each Arrow
batch with the same row rules as the task's path (`columnar.judge`, through mapInArrow), the verdicts are kept on
Spark's disk between the check and the send, and Spark tasks post batches to Aporia themselves (`mapInArrow`); only
counts, a few examples and the rejected rows come back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial, reduce
from typing import TYPE_CHECKING

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.extraction.columnar import (
    JUDGED_DDL,
    ROUTED_DDL,
    fragment_texts,
    judge_batches,
    judge_routed_batches,
)
from aporia_provider.extraction.in_task import Found
from aporia_provider.extraction.layout import MAX_EXAMPLES, RejectedRows, SourceLayout, require_columns
from aporia_provider.extraction.plan import Routing
from aporia_provider.extraction.rulebook import ColumnType
from aporia_provider.extraction.sql import Window, derived, windowed

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructField

DEFAULT_READ_OPTIONS = {"fetchsize": "10000"}
# Read options that only tune Spark's JDBC reads; any other (sessionInitStatement, customSchema, ...) changes
# what is read, so a window with one goes to Spark whatever its size.
TASK_READ_OPTIONS = frozenset({"fetchsize", "queryTimeout", "pushDownPredicate"})
# A large window is read in a partition per this many rows at least, keeping each task's share of the kept copy
# small.
ROWS_PER_PARTITION = 50_000
# Windows larger than this are read in parts, each part with credentials fetched just before its read,
# so a read longer than the credentials' lifetime still completes.
ROWS_PER_READ = 2_000_000
DELIVERY_SCHEMA = "fragments long, batches long, retries long, warnings array<string>"


@dataclass(frozen=True)
class SparkReads:
    """How Spark reaches the warehouse: JDBC options (fresh credentials each call), the user's, and select_expr."""

    spark: SparkSession
    jdbc_options: Callable[[], Mapping[str, str]]
    read_options: Mapping[str, str]
    select_expr: tuple[str, ...]

    def options(self) -> dict[str, str]:
        return {**DEFAULT_READ_OPTIONS, **self.read_options, **self.jdbc_options()}

    def column_types(self, query: str) -> dict[str, ColumnType | None]:
        """The query's columns as Spark's JDBC reader types them (it may know types the task's driver does not)."""
        probe = self.spark.read.format("jdbc").options(**self.options(), dbtable=derived(query)).load()
        return {column.name: field_type(column) for column in probe.schema.fields}

    def count(self, query: str, timestamp_column: str, window: Window) -> int:
        counted = f"(SELECT count(*) AS n FROM {windowed(query, timestamp_column, window)}) AS counted"
        row = self.spark.read.format("jdbc").options(**self.options(), dbtable=counted).load().first()
        assert row is not None
        return int(row[0])


def read_with_spark(
    reads: SparkReads,
    layout: SourceLayout,
    window: Window,
    window_start: datetime,
    total: int,
    dates: bool,
    num_partitions: int | None,
    projection: Callable[[DataFrame], DataFrame] | None = None,
) -> list[DataFrame]:
    """Read the source's window once, in parts when it is large, each part projected (by `project`, or
    `projection`) and kept on disk; rows before the run's `window_start` were read only for the lookback."""
    from pyspark import StorageLevel

    parts = window.split(max(1, math.ceil(total / ROWS_PER_READ)))
    # At least one partition per core the executors offer, and more for a large window.
    partitions = num_partitions or max(cores(reads.spark), math.ceil(total / len(parts) / ROWS_PER_PARTITION))
    kept: list[DataFrame] = []
    for part in parts:
        frame = _read(reads, part, partitions, layout, dates)
        frame = last_of_each_name(frame.selectExpr(*reads.select_expr)) if reads.select_expr else frame
        projected = (projection or partial(project, layout=layout, window_start=window_start))(frame)
        projected = projected.persist(StorageLevel.DISK_ONLY)
        kept.append(projected)
        if len(parts) > 1:
            projected.count()  # read this part now, while its credentials are fresh
    return kept


def cores(spark: SparkSession) -> int:
    """The cores Spark's executors offer now (its default parallelism: what a range is split into), asked with the
    DataFrame API so that it works on a Connect server too."""
    from pyspark.sql import functions as F

    # Selected first: classic sessions refuse a nondeterministic expression inside an aggregate.
    partition = F.spark_partition_id().alias("partition")
    row = spark.range(0, 1 << 16).select(partition).agg(F.max("partition")).first()
    assert row is not None
    return int(row[0]) + 1


def _read(reads: SparkReads, window: Window, partitions: int, layout: SourceLayout, dates: bool) -> DataFrame:
    """The window of the source's query over JDBC, in partitions of its timestamp range."""
    bound = "%Y-%m-%d" if dates else "%Y-%m-%d %H:%M:%S"
    source = layout.source
    return (
        reads.spark.read.format("jdbc")
        .options(
            **reads.options(),
            dbtable=windowed(source.query, source.timestamp_column, window),
            partitionColumn=source.timestamp_column,
            lowerBound=window.start.strftime(bound),
            upperBound=window.end.strftime(bound),
            numPartitions=str(partitions),
        )
        .load()
    )


def project(frame: DataFrame, layout: SourceLayout, window_start: datetime) -> DataFrame:
    """Each row's verdict (`columnar.JUDGED`: id, fragment JSON or problem, the column at fault and an excerpt of its
    value, re-read), judged in the executors by the same row rules the task runs (`columnar.judge`, through
    mapInArrow); rows that are no row (no actual yet) dropped."""
    layout.require(frame.columns)
    layout.fit({field.name: field_type(field) for field in frame.schema.fields})
    needed = frame.select(*[frame[column] for column in layout.columns])
    return needed.mapInArrow(partial(judge_batches, layout, window_start), JUDGED_DDL)


def project_routed(
    frame: DataFrame, layouts: Sequence[SourceLayout], routing: Routing, window_start: datetime
) -> DataFrame:
    """Each row's verdict and version (`columnar.ROUTED`), judged in the executors by `columnar.judge_routed`: the
    layout of the version the row names, as the task judges it."""
    for layout in layouts:
        layout.require(frame.columns)
    require_columns(frame.columns, layouts[0].subject, {"model_version_column": [routing.column]})
    types = {field.name: field_type(field) for field in frame.schema.fields}
    for layout in layouts:
        layout.fit(types)
    columns = list(dict.fromkeys([routing.column, *(c for layout in layouts for c in layout.columns)]))
    needed = frame.select(*[frame[column] for column in columns])
    return needed.mapInArrow(partial(judge_routed_batches, layouts, routing, window_start), ROUTED_DDL)


def check_with_spark(kept: list[DataFrame], layout: SourceLayout, rejected_rows: RejectedRows | None = None) -> Found:
    """Count rows, rejects (problems and repeated ids) and re-read rows that pass in one Spark job, over the ids
    alone (fragments never move between executors); more only when rows are rejected (and then every rejected row
    goes to `rejected_rows`, when given)."""
    from pyspark.sql import functions as F

    frame = reduce(lambda a, b: a.unionAll(b), kept)
    per_id = frame.groupBy("id").agg(
        F.count(F.lit(1)).alias("n"),
        F.count("problem").alias("bad"),
        F.count(F.when(F.col("reread") & F.col("problem").isNull(), 1)).alias("reread"),
    )
    repeated_id = F.col("id").isNotNull() & (F.col("n") > 1)
    totals = per_id.agg(
        F.coalesce(F.sum("n"), F.lit(0)).alias("rows"),
        F.coalesce(F.sum(F.when(repeated_id, F.col("n")).otherwise(F.col("bad"))), F.lit(0)).alias("rejected"),
        F.count(F.when(repeated_id, 1)).alias("repeated_ids"),
        F.coalesce(F.sum(F.when(~repeated_id, F.col("reread"))), F.lit(0)).alias("reread"),
    ).first()
    assert totals is not None
    layout.refuse_many_repeats(totals["repeated_ids"])
    problem, column, value = F.col("problem"), F.col("column"), F.col("value")
    duplicates = []
    if totals["repeated_ids"]:
        duplicates = [row["id"] for row in per_id.where(repeated_id).select("id").collect()]
        repeated = F.col("id").isin(duplicates)
        problem = F.when(repeated, F.concat(F.lit(layout.repeated_id("")), F.col("id"))).otherwise(problem)
        column = F.when(repeated, F.lit(layout.id_column)).otherwise(column)
        value = F.when(repeated, F.col("id")).otherwise(value)
    verdict = frame.select("id", "fragment", problem.alias("problem"), column.alias("column"), value.alias("value"))
    examples = []
    if totals["rejected"]:
        rejects = verdict.where(problem.isNotNull())
        examples = [layout.rejected_example(row["id"], row["problem"]) for row in rejects.limit(MAX_EXAMPLES).collect()]
        if rejected_rows is not None:
            for row in rejects.select("id", "problem", "column", "value").toLocalIterator():
                rejected_rows(layout.rejected_row(row["id"], row["problem"], row["column"], row["value"]))
    return Found(totals["rows"], totals["rejected"], totals["reread"], examples, set(duplicates))


def passed_fragments(kept: list[DataFrame], found: Found) -> DataFrame:
    """The fragments of the kept verdicts that `found` lets through: no problem, and an id that does not repeat."""
    from pyspark.sql import functions as F

    passed = reduce(lambda a, b: a.unionAll(b), kept).where(F.col("problem").isNull())
    if found.repeated:
        passed = passed.where(~F.col("id").isin(sorted(found.repeated)))
    return passed.select("fragment")


def deliver_with_spark(frame: DataFrame, client: AporiaClient, model: tuple[str, str], batch_size: int) -> LogResult:
    """Spark tasks post their partitions' fragments; each task answers with one row of what it cost."""
    # Arrow hands each task its rows in batches of this size and the task posts each as it comes, so a
    # cancelled task stops at its next batch instead of posting a whole prefetched partition.
    frame.sparkSession.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    return summed(frame.mapInArrow(partial(_send_partition, client, model, batch_size), DELIVERY_SCHEMA))


def summed(deliveries: DataFrame) -> LogResult:
    """What the sending tasks' rows (`delivered`) add up to."""
    total = LogResult()
    for row in deliveries.collect():
        total.add(LogResult(row["fragments"], row["batches"], row["retries"], list(row["warnings"] or [])))
    return total


def _send_partition(
    client: AporiaClient, model: tuple[str, str], batch_size: int, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Runs in a Spark task: post each batch of this partition's fragments, report what it cost."""
    joined = (text for batch in batches for text in fragment_texts(batch.column(0), batch_size))
    yield delivered(client.log_batches(*model, joined))


def delivered(result: LogResult) -> pa.RecordBatch:
    """What a Spark task's posts cost, as the one row it answers with."""
    import pyarrow as pa

    return pa.RecordBatch.from_pylist(
        [
            {
                "fragments": result.fragments,
                "batches": result.batches,
                "retries": result.retries,
                "warnings": result.warnings[:MAX_EXAMPLES],
            }
        ]
    )


def last_of_each_name(frame: DataFrame) -> DataFrame:
    """Keep the last column of each name: select_expr's `*, expr AS col` redefines col, it does not add one."""
    names = frame.columns
    if len(set(names)) == len(names):
        return frame
    last = {name: index for index, name in enumerate(names)}
    renamed = [name if last[name] == index else f"__replaced_{index}" for index, name in enumerate(names)]
    return frame.toDF(*renamed).drop(*[name for name in renamed if name.startswith("__replaced_")])


def field_type(column: StructField) -> ColumnType:
    """A column of a Spark schema as the rulebook sees it. Spark reads a JDBC TIME (with or without a zone) as a
    timestamp on 1970-01-01 and marks it: it is a time of day, which no datetime field or window can use."""
    if column.metadata.get("logical_time_type"):
        return ColumnType("time", "time")
    return spark_column_type(column.dataType)


def spark_column_type(data_type: DataType) -> ColumnType:
    """A Spark column type as the rulebook sees it."""
    from pyspark.sql import types as T

    element: ColumnType | None = None
    if isinstance(data_type, T.ByteType | T.ShortType | T.IntegerType | T.LongType):
        category = "integral"
    elif isinstance(data_type, T.FloatType | T.DoubleType):
        category = "fractional"
    elif isinstance(data_type, T.DecimalType):
        # Named without precision: the task's reads do not learn it, and messages must read alike.
        return ColumnType("decimal", "decimal")
    elif isinstance(data_type, T.StringType):
        category = "string"
    elif isinstance(data_type, T.BooleanType):
        category = "boolean"
    elif isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        category = "timestamp"
    elif isinstance(data_type, T.DateType):
        category = "date"
    elif isinstance(data_type, T.ArrayType):
        category, element = "array", spark_column_type(data_type.elementType)
    elif isinstance(data_type, T.MapType):
        category, element = "map", spark_column_type(data_type.valueType)
    else:
        category = "other"
    return ColumnType(category, data_type.simpleString(), element)
