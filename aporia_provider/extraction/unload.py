"""A large window by UNLOAD: Redshift's compute nodes write it to S3 as Parquet, and the sync reads the files.

A cursor materializes its whole result on the leader node (Redshift's DECLARE page), and Spark's JDBC partitions
all pass through that node too; for large extracts AWS recommends UNLOAD (the JDBC driver page), which the compute
nodes write in parallel. The files are read straight into Arrow, with no per-row driver decoding, conformed to the
cursor's representation (`columnar.conformed`) and judged by the same row rules: by the task, a file after another
(its memory flat), or by Spark's executors, a file each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from aporia_provider.extraction.columnar import conformed, judge
from aporia_provider.extraction.in_task import JUDGE_BYTES, JUDGE_ROWS
from aporia_provider.extraction.rulebook import ColumnType

if TYPE_CHECKING:
    import pyarrow as pa

    from aporia_provider.extraction.layout import SourceLayout

# Files of at most this size (UNLOAD's MAXFILESIZE): enough of them for Spark's executors to share, each read in a
# few seconds.
MAX_FILE_MB = 256


class ObjectStore(Protocol):
    """Lists and deletes the unloaded objects (the Amazon provider's S3 hook: its client, its credentials)."""

    def keys(self, url: str) -> list[str]:
        """The keys of the objects under `url` (``s3://bucket/prefix/``)."""

    def delete(self, url: str, keys: list[str]) -> None:
        """Delete these objects of `url`'s bucket."""


@dataclass(frozen=True)
class Unload:
    """Where a window's try unloads (``s3://bucket/key``, its own for each try), the role Redshift assumes to
    write there, the fewest rows a window has to go this way, the files' filesystem (pyarrow's, which reads them
    straight into Arrow, in the task or in Spark's executors) and the store that lists and deletes them."""

    prefix: str
    iam_role: str
    min_rows: int
    open_filesystem: Callable[[], pafs.FileSystem] = field(repr=False, compare=False)
    store: ObjectStore = field(repr=False, compare=False)

    @cached_property
    def filesystem(self) -> pafs.FileSystem:
        """Made at the first read: a window that does not go by UNLOAD needs no credentials for it."""
        return self.open_filesystem()

    def location(self, kind: str) -> str:
        """The S3 prefix `kind`'s files (predictions, actuals) go under."""
        return f"{self.prefix.rstrip('/')}/{kind}/"

    def statement(self, select: str, kind: str) -> str:
        """The UNLOAD of `select`. Redshift's UNLOAD page: the query is a quoted literal, its own quotes doubled; a
        backslash escapes in a Redshift literal, so it is doubled too (as the QUOTE_LITERAL function page does).
        CLEANPATH empties the prefix first, so a statement run again leaves no file of the run before."""
        literal = select.replace("\\", "\\\\").replace("'", "''")
        return (
            f"UNLOAD ('{literal}') TO '{self.location(kind)}' IAM_ROLE '{self.iam_role}' "
            f"FORMAT AS PARQUET CLEANPATH MAXFILESIZE {MAX_FILE_MB} MB"
        )

    def files(self, kind: str) -> list[str]:
        """The Parquet files unloaded for `kind`, in name order, as the filesystem names them (``bucket/key``)."""
        bucket = _bucket(self.prefix)
        keys = self.store.keys(self.location(kind))
        return sorted(f"{bucket}/{key}" for key in keys if key.endswith(".parquet"))

    def remove(self) -> None:
        """Delete every object of this try. (Not through pyarrow's filesystem: it writes a directory marker in
        place of what it deleted, which the sync has no right to write.)"""
        keys = self.store.keys(self.prefix)
        if keys:
            self.store.delete(self.prefix, keys)


def read_files(
    filesystem: pafs.FileSystem, paths: list[str], columns: list[str], types: dict[str, ColumnType | None]
) -> Iterator[pa.RecordBatch]:
    """The files' rows of `columns`, batch by batch, as the cursor's reader makes them (`columnar.conformed`).

    A row group at a time: the reader fetches a read's ranges ahead in a few requests (pre_buffer) and keeps them
    until the read ends, so one read of a whole file would hold the file (make bench, UNLOAD of 10M rows: Arrow's
    memory climbed by ~90 MB over each 5M-row file)."""
    for path in paths:
        with filesystem.open_input_file(path) as raw:
            parquet = pq.ParquetFile(raw)
            rows = _rows_per_batch(parquet.metadata)
            for group in range(parquet.num_row_groups):
                for batch in parquet.iter_batches(batch_size=rows, row_groups=[group], columns=columns):
                    yield conformed(batch, columns, types)


@dataclass(frozen=True)
class UnloadedFiles:
    """A source's window as the files it was unloaded to, and the rules its rows are judged by (sent to Spark's
    executors, which read the files themselves)."""

    filesystem: pafs.FileSystem
    paths: list[str]
    layout: SourceLayout
    columns: list[str]
    types: dict[str, ColumnType | None]
    window_start: datetime

    def judged(self, paths: list[str]) -> Iterator[pa.RecordBatch]:
        """The verdicts of these files' rows (`columnar.judge`), batch by batch."""
        for rows in read_files(self.filesystem, paths, self.columns, self.types):
            yield judge(rows, self.layout, self.window_start)

    def named(self, batches: Iterator[pa.RecordBatch]) -> list[str]:
        """The paths a Spark task's batches name by their number in `paths` (the `id` column of a range)."""
        return [self.paths[number] for batch in batches for number in batch.column("id").to_pylist()]


def _rows_per_batch(metadata: pq.FileMetaData) -> int:
    """Batches of about the size the cursor's chunks are judged in."""
    data = sum(metadata.row_group(index).total_byte_size for index in range(metadata.num_row_groups))
    if not metadata.num_rows or not data:
        return JUDGE_ROWS
    return max(1, min(JUDGE_ROWS, JUDGE_BYTES * metadata.num_rows // data))


def _bucket(url: str) -> str:
    return url.removeprefix("s3://").split("/", 1)[0]
