"""A window read, checked and sent by the task itself, over the warehouse's DB-API connection: no Spark.

Spark's fixed costs (a JVM, or a session and a Python worker on a shared server, and several jobs) and its
hand-offs only pay where it scales out over a cluster's cores; on the worker's own few cores the task reads faster
itself. A source's window is streamed from the warehouse in chunks (`Warehouse.stream`); each chunk becomes an Arrow
record batch and is judged by the row rules (`columnar.judge`, the same code Spark's executors run), which build
the fragments' JSON with Arrow's kernels. JSON text (SUPER) that passed is sent as it is, never re-encoded.

Every row is judged before anything is sent (with ``fail``, one invalid row means nothing is sent, and a repeated
id rejects rows read long before it), so the judged batches wait in a spool on local disk (Arrow IPC), not in
memory: the task's memory stays flat whatever the window's size (4 bytes of id hash per row, for the repeated-id
rule).
"""

from __future__ import annotations

import tempfile
import threading
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from aporia_provider.client import AporiaClient, JoinedFragments, LogResult
from aporia_provider.exceptions import SyncStopped
from aporia_provider.extraction.columnar import JUDGED, arrow_batch, judge, passing, request_texts
from aporia_provider.extraction.layout import MAX_EXAMPLES, RejectedRows, SourceLayout
from aporia_provider.extraction.rulebook import ColumnType
from aporia_provider.extraction.sql import Window, quoted, windowed

# Redshift's FETCH page: on a single-node cluster "the maximum value for count is 1000"; reading 250k rows by 1,000
# cost the same as by 10,000 (1.90 s against 1.94 s on the local stack).
FETCH_ROWS = 1_000
# Fetched chunks are judged together up to about this many bytes of text (and at most JUDGE_ROWS rows): large
# enough that Arrow's per-call costs vanish, small enough that a batch of 768-dim embeddings stays a few MB.
JUDGE_BYTES = 8 << 20
JUDGE_ROWS = 10_000
# Batches judged at once, in threads (Arrow's kernels, the spool's writes and the file reads let go of the GIL), and
# so at most this many more held: reading, judging and spooling overlap.
JUDGE_THREADS = 2
# Requests to Aporia in flight at once while the task delivers (fragments merge by id: order does not matter).
DELIVERY_CONCURRENCY = 4
# The repeated-id rule keeps 38 bits of each id's hash: the low 6 pick one of 64 buckets, which holds the next 32
# (4 bytes a row), and the buckets are counted one at a time: Arrow's count of distinct values takes ~105 bytes a
# value, 1 GB for a 10M-row window counted at once (make bench, UNLOAD of 2M rows: 587 MB peak against 352 MB for
# 1k rows; 10M rows: 1,435 MB). Ids whose 38 bits collide are told apart by a second look at the ids themselves
# (at 10M distinct ids, a few hundred are looked at).
ID_HASH_BUCKET_BITS = 6
ID_HASH_BITS = ID_HASH_BUCKET_BITS + 32


class IdHashes:
    """What the repeated-id rule keeps of a window's ids: 38 bits of each one's hash (`ID_HASH_BITS`), in buckets."""

    def __init__(self) -> None:
        self._buckets = [array("I") for _ in range(1 << ID_HASH_BUCKET_BITS)]

    def add(self, ids: pa.Array) -> None:
        buckets, bucket_bits, kept = self._buckets, (1 << ID_HASH_BUCKET_BITS) - 1, 0xFFFFFFFF
        for id_hash in map(hash, ids.drop_null().to_pylist()):
            buckets[id_hash & bucket_bits].append((id_hash >> ID_HASH_BUCKET_BITS) & kept)

    def repeated(self, ids_again: Iterable[pa.Array], layout: SourceLayout) -> set[str]:
        """The ids that repeat: ids whose hashes repeat are looked at again, by the ids themselves (`ids_again`: the
        window's ids once more, read only when some hashes repeat; hashed in this process, as `add` hashed them)."""
        candidates: set[int] = set()
        for number, bucket in enumerate(self._buckets):
            hashes = pa.Array.from_buffers(pa.uint32(), len(bucket), [None, pa.py_buffer(bucket)])
            counted = pc.value_counts(hashes)
            repeats = pc.filter(counted.field("values"), pc.greater(counted.field("counts"), 1)).to_pylist()
            candidates.update(high << ID_HASH_BUCKET_BITS | number for high in repeats)
        if not candidates:
            return set()
        counts: Counter[str] = Counter()
        kept = (1 << ID_HASH_BITS) - 1
        for ids in ids_again:
            counts.update(i for i in ids.drop_null().to_pylist() if hash(i) & kept in candidates)
        repeated = {identity for identity, n in counts.items() if n > 1}
        layout.refuse_many_repeats(len(repeated))
        return repeated


class Verdicts(Protocol):
    """A source's judged window, wherever its verdicts wait (the task's spool, Spark's disk): what the check needs."""

    rows: int
    problems: int  # rows with a problem of their own
    reread: int  # rows read only for the lookback

    def repeated_ids(self, layout: SourceLayout) -> set[str]:
        """The ids that repeat within the window."""

    def rejects(self, repeated: pa.Array) -> Iterator[tuple[pa.RecordBatch, int]]:
        """Each batch's `rejected_part`, in read order."""


def tallied(judged: pa.RecordBatch) -> tuple[int, int, int]:
    """A batch of verdicts' rows, rows with a problem of their own, and rows read only for the lookback."""
    problems = judged.num_rows - judged.column("problem").null_count
    return judged.num_rows, problems, pc.sum(judged.column("reread")).as_py() or 0


def rejected_part(judged: pa.RecordBatch, repeated: pa.Array) -> tuple[pa.RecordBatch, int]:
    """A batch of verdicts' rejected rows (a problem of their own, or an id among `repeated`: the window's repeated
    ids) and how many of the rows that pass were read only for the lookback."""
    is_repeated = pc.fill_null(pc.is_in(judged.column("id"), value_set=repeated), False)
    rejects = pc.or_(judged.column("problem").is_valid(), is_repeated)
    passed_reread = pc.sum(pc.and_(pc.invert(rejects), judged.column("reread"))).as_py() or 0
    return judged.filter(rejects).select(["id", "problem", "column", "value"]), passed_reread


class Spool:
    """Judged batches (`columnar.JUDGED`) on local disk, in read order, and what the repeated-id rule needs."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="aporia-sync-")
        self._writer: pa.ipc.RecordBatchStreamWriter | None = pa.ipc.new_stream(self._file, JUDGED)
        self.rows = 0
        self.problems = 0
        self.reread = 0
        self._id_hashes = IdHashes()

    def add(self, judged: pa.RecordBatch) -> None:
        assert self._writer is not None, "the spool is read already"
        self._writer.write_batch(judged)
        rows, problems, reread = tallied(judged)
        self.rows, self.problems, self.reread = self.rows + rows, self.problems + problems, self.reread + reread
        self._id_hashes.add(judged.column("id"))

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The judged batches in read order, from disk."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file.seek(0)
        yield from pa.ipc.open_stream(self._file)

    def repeated_ids(self, layout: SourceLayout) -> set[str]:
        return self._id_hashes.repeated((batch.column("id") for batch in self.batches()), layout)

    def rejects(self, repeated: pa.Array) -> Iterator[tuple[pa.RecordBatch, int]]:
        return (rejected_part(batch, repeated) for batch in self.batches())

    def size(self) -> int:
        """Bytes spooled so far."""
        self._file.flush()
        return self._file.seek(0, 2)

    def close(self) -> None:
        self._file.close()


@dataclass
class Found:
    """What the check of a source's window found: its rows, the rejected ones (and examples of them), the rows that
    pass read only for the lookback, and the ids that repeat (every row of them rejected)."""

    rows: int = 0
    rejected: int = 0
    reread: int = 0
    examples: list[str] = field(default_factory=list)
    repeated: set[str] = field(default_factory=set)


@dataclass
class TaskRows(Found):
    """A source's window as read in the task: what the check found, and the spool the passed fragments are sent
    from."""

    spool: Spool | None = None

    def fragments(self) -> Iterator[pa.Array]:
        """The fragments of the rows that passed, a batch of them at a time, in read order."""
        if self.spool is None:
            return
        repeated = pa.array(sorted(self.repeated), pa.string())
        for batch in self.spool.batches():
            yield passing(batch, repeated)

    def release(self) -> None:
        if self.spool is not None:
            self.spool.close()


def read_in_task(
    rows: Iterable[Sequence[Sequence[Any]]],
    layout: SourceLayout,
    columns: list[str],
    types: dict[str, ColumnType | None],
    window_start: datetime,
    rejected: RejectedRows | None = None,
) -> TaskRows:
    """Judge every row of one source's window (chunks of cursor rows of `columns`, as `select_columns` selects
    them): `judge_in_task` of them as Arrow batches."""
    batches = (arrow_batch(batch, columns, types) for batch in _judge_sized(rows))
    return judge_in_task(batches, layout, types, window_start, rejected)


def judge_in_task(
    batches: Iterable[pa.RecordBatch],
    layout: SourceLayout,
    types: dict[str, ColumnType | None],
    window_start: datetime,
    rejected: RejectedRows | None = None,
) -> TaskRows:
    """Judge every row of one source's window (Arrow batches, as `arrow_batch` makes them) into a spool, and count
    what passed; rows before the run's `window_start` were read only for the lookback; every rejected row goes to
    `rejected` too, when given."""
    layout.fit(types)
    spool = Spool()
    try:
        with ThreadPoolExecutor(JUDGE_THREADS, thread_name_prefix="aporia-judge") as pool:
            judging: deque[Future[pa.RecordBatch]] = deque()
            for batch in batches:
                judging.append(pool.submit(judge, batch, layout, window_start))
                if len(judging) > JUDGE_THREADS:
                    spool.add(judging.popleft().result())
            while judging:
                spool.add(judging.popleft().result())
        return _verdicts(layout, spool, rejected)
    except BaseException:
        spool.close()
        raise


def select_columns(layout: SourceLayout, types: dict[str, ColumnType | None], window: Window) -> tuple[list[str], str]:
    """The columns the source's rows need (refusing any the query lacks) and the query selecting them in the
    window."""
    layout.require(list(types))
    columns = layout.columns
    source = layout.source
    selected = ", ".join(quoted(column) for column in columns)
    return columns, f"SELECT {selected} FROM {windowed(source.query, source.timestamp_column, window)}"


def deliver_in_task(
    rows: TaskRows,
    client: AporiaClient,
    subject: str,
    model: tuple[str, str],
    batch_size: int,
    stop: threading.Event | None = None,
) -> LogResult:
    """Post the fragments that passed in batches, a few requests in flight; a stop request ends the delivery before
    its next batch."""

    def batches() -> Iterator[JoinedFragments]:
        sent = 0
        for joined, count in request_texts(rows.fragments(), batch_size):
            if stop is not None and stop.is_set():
                raise SyncStopped(f"after {sent:,} fragments", subject)
            yield joined, count
            sent += count

    return client.log_batches(*model, batches(), in_flight=DELIVERY_CONCURRENCY)


def _judge_sized(chunks: Iterable[Sequence[Sequence[Any]]]) -> Iterator[list[Sequence[Any]]]:
    """The fetched chunks' rows again, in lists of about JUDGE_BYTES (sized by the first row's text)."""
    waiting: list[Sequence[Any]] = []
    limit = 0
    for chunk in chunks:
        if not limit and chunk:
            text = sum(len(value) for value in chunk[0] if isinstance(value, str)) + 8 * len(chunk[0])
            limit = max(1, min(JUDGE_ROWS, JUDGE_BYTES // text))
        waiting.extend(chunk)
        if len(waiting) >= limit:
            yield waiting
            waiting = []
    if waiting:
        yield waiting


def _verdicts(layout: SourceLayout, spool: Spool, rejected: RejectedRows | None) -> TaskRows:
    return TaskRows(**vars(found_in(layout, spool, rejected)), spool=spool)


def found_in(layout: SourceLayout, verdicts: Verdicts, rejected: RejectedRows | None) -> Found:
    """Counts and examples; rows whose id repeats within the window are rejected, every one of them; every rejected
    row goes to `rejected` too, when given."""
    repeated = verdicts.repeated_ids(layout)
    found = Found(rows=verdicts.rows, reread=verdicts.reread, repeated=repeated)
    if not verdicts.problems and not repeated:
        return found
    found.reread = 0  # counted again below, of the rows that pass
    for rejects, passed_reread in verdicts.rejects(pa.array(sorted(repeated), pa.string())):
        found.reread += passed_reread
        for identity, problem, column, value in zip(*(column.to_pylist() for column in rejects.columns), strict=True):
            if identity in repeated:
                problem, column, value = layout.repeated_id(identity), layout.id_column, identity
            found.rejected += 1
            if len(found.examples) < MAX_EXAMPLES:
                found.examples.append(layout.rejected_example(identity, problem))
            if rejected is not None:
                rejected(layout.rejected_row(identity, problem, column, value))
    return found
