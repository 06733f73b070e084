"""A large window the Spark way: read in partitions, judged and posted by Spark's executors.

DataFrame API only, so it runs unchanged on local[*], a cluster and Spark Connect. Rows never pass through the task:
Spark reads partitions over JDBC (the window predicate pushed down), or the files a window was unloaded to (a file
to each task, through pyarrow's filesystem: no hadoop-aws jar needed), and its executors judge each Arrow batch by
the task's row rules (`columnar.judge`, through mapInArrow). Each batch of verdicts is kept on Spark's disk as one
row (the verdicts as compressed Arrow IPC bytes, its ids and its counts), so the JVM copies a few large byte
strings instead of converting a row per row. The check reads back the ids and counts alone and runs the task's own
check in this process (`in_task.found_in`: the same repeated-id rule over the same id hashes, `in_task.IdHashes`);
the executors pick out rejected rows only when there are some; and Spark tasks post what passes of the kept verdicts
to Aporia themselves (make bench, UNLOAD of 10M rows on the 2-worker cluster: the cluster's CPU went from 132.5 s to
88.7 s, where its JVM had grouped a row per row by id, and each file was judged again to be sent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial, reduce
from typing import TYPE_CHECKING

import pyarrow as pa

from aporia_provider.client import AporiaClient, LogResult
from aporia_provider.extraction.columnar import judge, judge_routed, passing, request_texts
from aporia_provider.extraction.in_task import DELIVERY_CONCURRENCY, IdHashes, rejected_part, tallied
from aporia_provider.extraction.layout import MAX_EXAMPLES, SourceLayout, require_columns
from aporia_provider.extraction.plan import Routing
from aporia_provider.extraction.rulebook import ColumnType
from aporia_provider.extraction.sql import Window, derived, windowed
from aporia_provider.extraction.unload import UnloadedFiles

if TYPE_CHECKING:
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
_DELIVERY_SCHEMA = "fragments long, batches long, retries long, warnings array<string>"
# A kept row: a batch of verdicts (`columnar.JUDGED`) as Arrow IPC bytes, its ids alone, its counts, and its version
# (null, but with model_version_column: then the batch holds the rows naming none the sync serves).
_KEPT_DDL = "version string, verdicts binary, ids binary, rows long, problems long, reread long"
_REJECTS_DDL = "rejects binary, passed_reread long"
# Kept verdicts are compressed, so the JVM copies a sixth of the bytes (a judged batch of 10k 16-dim rows: 5.1 MB as
# it is, 0.84 MB by zstd; make bench, UNLOAD of 2M rows on the 2-worker cluster: the cluster's CPU 53.2 s
# uncompressed, 40.8 s by lz4, 35.2 s by zstd).
_KEPT_COMPRESSION = "zstd"
_ARROW_BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"


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
    parts = window.split(max(1, math.ceil(total / ROWS_PER_READ)))
    # At least one partition per core the executors offer, and more for a large window.
    partitions = num_partitions or max(cores(reads.spark), math.ceil(total / len(parts) / ROWS_PER_PARTITION))
    kept: list[DataFrame] = []
    for part in parts:
        frame = _read(reads, part, partitions, layout, dates)
        frame = last_of_each_name(frame.selectExpr(*reads.select_expr)) if reads.select_expr else frame
        projected = (projection or partial(project, layout=layout, window_start=window_start))(frame)
        projected = _kept_on_disk(projected)
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
    """The rows' verdicts (`columnar.JUDGED`: id, fragment JSON or problem, the column at fault and an excerpt of its
    value, re-read) as kept rows, judged in the executors by the same row rules the task runs
    (`columnar.judge`, through mapInArrow); rows that are no row (no actual yet) dropped."""
    layout.require(frame.columns)
    layout.fit({field.name: field_type(field) for field in frame.schema.fields})
    needed = frame.select(*[frame[column] for column in layout.columns])
    return needed.mapInArrow(partial(_judged_kept, layout, window_start), _KEPT_DDL)


def project_routed(
    frame: DataFrame, layouts: Sequence[SourceLayout], routing: Routing, window_start: datetime
) -> DataFrame:
    """The rows' verdicts as kept rows of their version, judged in the executors by `columnar.judge_routed`:
    the layout of the version the row names, as the task judges it (a null version: the rows naming none the sync
    serves)."""
    for layout in layouts:
        layout.require(frame.columns)
    require_columns(frame.columns, layouts[0].subject, {"model_version_column": [routing.column]})
    types = {field.name: field_type(field) for field in frame.schema.fields}
    for layout in layouts:
        layout.fit(types)
    columns = list(dict.fromkeys([routing.column, *(c for layout in layouts for c in layout.columns)]))
    needed = frame.select(*[frame[column] for column in columns])
    return needed.mapInArrow(partial(_routed_kept, layouts, routing, window_start), _KEPT_DDL)


def read_unloaded_with_spark(spark: SparkSession, files: UnloadedFiles) -> DataFrame:
    """The verdicts of the files a window was unloaded to as kept rows, a file to each Spark task."""
    return _kept_on_disk(_file_numbers(spark, files).mapInArrow(partial(_judged_files, files), _KEPT_DDL))


def union(frames: list[DataFrame]) -> DataFrame:
    return reduce(lambda a, b: a.unionAll(b), frames)


def _kept_on_disk(kept: DataFrame) -> DataFrame:
    """Kept rows, persisted on Spark's disk. A kept row is a whole judged batch (a few MB), and Spark's cache builds
    a block of 10,000 rows by default: a file's verdicts, held in an executor's memory at once."""
    from pyspark import StorageLevel

    kept.sparkSession.conf.set("spark.sql.inMemoryColumnarStorage.batchSize", "1")
    return kept.persist(StorageLevel.DISK_ONLY)


class SparkVerdicts:
    """A source's window judged by Spark's executors and kept on Spark's disk (`in_task.Verdicts`): the check's
    counts and rejected rows; then the tasks that send post what passes."""

    def __init__(self, kept: DataFrame) -> None:
        from pyspark import StorageLevel

        self.kept = kept
        # The check's ids and counts are cached apart, so that its passes over the ids read a few KB a kept row, not
        # its verdicts' MB. One job judges every partition at once and caches both; the ids are then brought here a
        # partition at a time, which alone would judge one after another (toLocalIterator runs a job per partition).
        self._ids = kept.select("ids", "rows", "problems", "reread").persist(StorageLevel.MEMORY_AND_DISK)
        try:
            self._ids.count()
            self.rows = self.problems = self.reread = 0
            self._id_hashes = IdHashes()
            for row in self._ids.toLocalIterator():
                self.rows, self.problems = self.rows + row["rows"], self.problems + row["problems"]
                self.reread += row["reread"]
                self._id_hashes.add(_unpacked(row["ids"]).column(0))
        except BaseException:
            self._ids.unpersist()
            raise

    def repeated_ids(self, layout: SourceLayout) -> set[str]:
        try:
            ids = (_unpacked(row["ids"]).column(0) for row in self._ids.select("ids").toLocalIterator())
            return self._id_hashes.repeated(ids, layout)
        finally:
            self._ids.unpersist()

    def rejects(self, repeated: pa.Array) -> Iterator[tuple[pa.RecordBatch, int]]:
        picked = self.kept.select("verdicts").mapInArrow(partial(_rejects_of, repeated.to_pylist()), _REJECTS_DDL)
        with _a_kept_row_a_batch(self.kept.sparkSession):
            for row in picked.toLocalIterator():
                yield _unpacked(row["rejects"]), row["passed_reread"]

    def send(self, repeated: set[str], client: AporiaClient, model: tuple[str, str], batch_size: int) -> LogResult:
        """Spark tasks post what passes of the kept verdicts (the check's `repeated` ids rejected), a kept row at a
        time (a cancelled task stops at its next one); each task answers with one row of what it cost."""
        send = partial(_send_kept, sorted(repeated), client, model, batch_size)
        with _a_kept_row_a_batch(self.kept.sparkSession):
            return _summed(self.kept.select("verdicts").mapInArrow(send, _DELIVERY_SCHEMA))


def verdicts_here(kept: DataFrame) -> Iterator[pa.RecordBatch]:
    """The kept verdicts brought to this process, a partition at a time."""
    return (_unpacked(row["verdicts"]) for row in kept.select("verdicts").toLocalIterator())


@contextmanager
def _a_kept_row_a_batch(spark: SparkSession) -> Iterator[None]:
    """Arrow hands a Python worker one kept row at a time (each is a judged batch already); afterwards as many rows
    as before, for a JDBC read judged later."""
    before = spark.conf.get(_ARROW_BATCH_ROWS)
    spark.conf.set(_ARROW_BATCH_ROWS, "1")
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(_ARROW_BATCH_ROWS)
        else:
            spark.conf.set(_ARROW_BATCH_ROWS, before)


def _summed(deliveries: DataFrame) -> LogResult:
    """What the sending tasks' rows (`_delivered`) add up to."""
    total = LogResult()
    for row in deliveries.collect():
        total.add(LogResult(row["fragments"], row["batches"], row["retries"], list(row["warnings"] or [])))
    return total


def _file_numbers(spark: SparkSession, files: UnloadedFiles) -> DataFrame:
    """The files' numbers (in `files.paths`), exactly one to a partition: a range splits evenly, where repartition's
    round robin may deal two rows to one task and none to another (make bench, UNLOAD of 2M rows: one task judged
    both files while the other idled)."""
    return spark.range(0, len(files.paths), 1, max(1, len(files.paths)))


# ------------------------------------------------------------------------------------ run in Spark's tasks


def _judged_kept(
    layout: SourceLayout, window_start: datetime, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    return _kept_rows(judge(batch, layout, window_start) for batch in batches)


def _routed_kept(
    layouts: Sequence[SourceLayout], routing: Routing, window_start: datetime, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    return _kept_rows(part for batch in batches for part in judge_routed(batch, layouts, routing, window_start))


def _judged_files(files: UnloadedFiles, numbers: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    return _kept_rows(files.judged(files.named(numbers)))


def _kept_rows(judged: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A kept row for each batch of verdicts (`columnar.JUDGED`, or `ROUTED`: of one version, or of the
    rows naming none the sync serves)."""
    for verdicts in judged:
        if not verdicts.num_rows:
            continue
        version = None
        if "version" in verdicts.schema.names:
            version = verdicts.column("version")[0].as_py()
            verdicts = verdicts.drop_columns(["version"])
        rows, problems, reread = tallied(verdicts)
        kept = {
            "version": pa.array([version], pa.string()),
            "verdicts": [_packed(verdicts)],
            "ids": [_packed(verdicts.select(["id"]))],
            "rows": [rows],
            "problems": [problems],
            "reread": [reread],
        }
        yield pa.RecordBatch.from_pydict(kept)


def _rejects_of(repeated: list[str], kept: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Each kept row's rejected rows (`in_task.rejected_part`)."""
    excluded = pa.array(repeated, pa.string())
    for verdicts in _kept_verdicts(kept):
        rejects, passed_reread = rejected_part(verdicts, excluded)
        yield pa.RecordBatch.from_pydict({"rejects": [_packed(rejects)], "passed_reread": [passed_reread]})


def _send_kept(
    repeated: list[str],
    client: AporiaClient,
    model: tuple[str, str],
    batch_size: int,
    kept: Iterator[pa.RecordBatch],
) -> Iterator[pa.RecordBatch]:
    """Post the fragments of the kept verdicts that pass as they come (a few requests in flight, as the task
    delivers), report what it cost."""
    excluded = pa.array(repeated, pa.string())
    texts = request_texts((passing(verdicts, excluded) for verdicts in _kept_verdicts(kept)), batch_size)
    yield _delivered(client.log_batches(*model, texts, in_flight=DELIVERY_CONCURRENCY))


def _delivered(result: LogResult) -> pa.RecordBatch:
    """What a Spark task's posts cost, as the one row it answers with."""
    counts = {"fragments": result.fragments, "batches": result.batches, "retries": result.retries}
    return pa.RecordBatch.from_pylist([{**counts, "warnings": result.warnings[:MAX_EXAMPLES]}])


def _kept_verdicts(kept: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The verdicts of a stream of kept rows' `verdicts` column."""
    for batch in kept:
        column = batch.column(0)
        for index in range(len(column)):
            yield _unpacked(column[index].as_buffer())


def _packed(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=pa.ipc.IpcWriteOptions(compression=_KEPT_COMPRESSION)) as out:
        out.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _unpacked(packed: bytes | bytearray | pa.Buffer) -> pa.RecordBatch:
    return pa.ipc.open_stream(pa.py_buffer(packed)).read_next_batch()


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
