"""A window by UNLOAD: Parquet files typed as Redshift's UNLOAD writes them are judged as the same rows read through
the cursor are, fragment for fragment and byte for byte."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from aporia_local.redshift_rules import Refusal
from aporia_local.unload_grammar import parse_unload
from aporia_provider.extraction.in_task import judge_in_task, select_columns
from aporia_provider.extraction.unload import Unload, read_files
from aporia_provider.redshift import column_types
from tests.unit.test_in_task import PLAN, PREDICTION_TYPES, SELECTED, WINDOW, description, layout, prediction, read

# The Parquet types an UNLOAD writes for the predictions query's columns (Redshift's "Unloading data in Parquet"
# and "Unloading semistructured data" pages): SUPER as JSON text, TIMESTAMP without a zone, TIMESTAMPTZ in UTC.
PARQUET_TYPES = {
    "prediction_id": pa.string(),
    "predicted_at": pa.timestamp("us"),
    "amount_usd": pa.decimal128(12, 2),
    "segment": pa.int32(),
    "owner": pa.string(),
    "active": pa.bool_(),
    "seen_at": pa.timestamp("us", tz="UTC"),
    "embedding": pa.string(),
    "grid": pa.string(),
    "scores": pa.string(),
    "proba": pa.float64(),
    "logits": pa.string(),
    "note": pa.string(),
}
ROWS = [
    prediction(),
    prediction(prediction_id="p2", amount_usd=Decimal("-0.07"), owner=None, note='say "hi"\n'),
    prediction(prediction_id="p3", predicted_at=datetime(2026, 11, 20, 9, 59), active=False, segment=None),
    prediction(prediction_id="p4", embedding="[0.1, NaN]"),
    prediction(prediction_id="p1"),  # a repeated id
]


def unloaded(tmp_path: Path, rows: list[tuple[Any, ...]], types: dict[str, pa.DataType], files: int = 2) -> list[str]:
    """The rows written as an UNLOAD would, split over `files` Parquet files."""
    paths = []
    share = -(-len(rows) // files)
    for index in range(files):
        part = rows[index * share : (index + 1) * share]
        columns = list(zip(*part, strict=True)) if part else [() for _ in SELECTED]
        table = pa.table({name: pa.array(values, types[name]) for name, values in zip(SELECTED, columns, strict=True)})
        path = tmp_path / f"{index:04d}_part_00.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    return paths


def from_files(paths: list[str], codes: dict[str, int]) -> tuple[list[str], int, int, list[str]]:
    """The files' rows judged as the task judges unloaded files: fragments, rejected, re-read, examples."""
    types = column_types(description(codes))
    source = layout(PLAN, "predictions")
    columns, _ = select_columns(source, types, WINDOW)
    result = judge_in_task(read_files(pafs.LocalFileSystem(), paths, columns, types), source, types, WINDOW.start)
    try:
        fragments = [fragment for batch in result.fragments() for fragment in batch.to_pylist()]
        return fragments, result.rejected, result.reread, result.examples
    finally:
        result.release()


def test_unloaded_files_are_judged_byte_for_byte_as_the_cursors_rows(tmp_path: Path) -> None:
    by_cursor, _ = read(ROWS)
    fragments, rejected, reread, examples = from_files(unloaded(tmp_path, ROWS, PARQUET_TYPES), PREDICTION_TYPES)
    assert by_cursor.fragments and fragments == by_cursor.fragments
    assert (rejected, reread, examples) == (by_cursor.rejected, by_cursor.reread, by_cursor.examples)


def test_a_real_column_reads_as_the_shortest_text_the_cursor_gets(tmp_path: Path) -> None:
    """A REAL (float4) unloads as a Parquet float; the cursor reads its text, 0.1, not 0.10000000149011612."""
    codes = PREDICTION_TYPES | {"proba": 700}
    rows = [prediction(proba=0.1), prediction(prediction_id="p2", proba=3.4028235e38)]
    by_cursor, _ = read(rows, types=codes)
    fragments, *_ = from_files(unloaded(tmp_path, rows, PARQUET_TYPES | {"proba": pa.float32()}, 1), codes)
    assert fragments == by_cursor.fragments
    assert '"proba":0.1,' in fragments[0]


class Store:
    """Objects by key, as S3 lists them."""

    def __init__(self, *keys: str) -> None:
        self.objects = set(keys)
        self.deleted: list[str] = []

    def keys(self, url: str) -> list[str]:
        prefix = url.removeprefix("s3://bucket/")
        return sorted(key for key in self.objects if key.startswith(prefix))

    def delete(self, url: str, keys: list[str]) -> None:
        self.objects -= set(keys)
        self.deleted += keys


def test_the_files_of_a_source_are_its_parquet_objects_and_removing_deletes_the_whole_try() -> None:
    try_prefix = "syncs/m/v1/span/try-2/"
    store = Store(
        f"{try_prefix}predictions/0001_part_00.parquet",
        f"{try_prefix}predictions/0000_part_00.parquet",
        f"{try_prefix}predictions/manifest",
        f"{try_prefix}actuals/0000_part_00.parquet",
        "syncs/m/v1/span/try-1/predictions/0000_part_00.parquet",
    )
    unload = Unload(f"s3://bucket/{try_prefix}", "arn:aws:iam::1:role/unload", 10, pafs.LocalFileSystem, store)
    assert unload.files("predictions") == [
        f"bucket/{try_prefix}predictions/0000_part_00.parquet",
        f"bucket/{try_prefix}predictions/0001_part_00.parquet",
    ]
    unload.remove()
    assert store.objects == {"syncs/m/v1/span/try-1/predictions/0000_part_00.parquet"}
    assert len(store.deleted) == 4


def test_the_unload_statement_quotes_the_query_and_names_the_trys_own_prefix() -> None:
    unload = Unload(
        "s3://bucket/syncs/m/v1/span/try-2/", "arn:aws:iam::1:role/unload", 10, pafs.LocalFileSystem(), Store()
    )
    select = "SELECT \"a\" FROM (SELECT * FROM t WHERE note = 'it''s') AS q WHERE ts >= '2026-11-20 00:00:00+00:00'"
    assert unload.statement(select, "actuals") == (
        "UNLOAD ('SELECT \"a\" FROM (SELECT * FROM t WHERE note = ''it''''s'') AS q WHERE ts >= "
        "''2026-11-20 00:00:00+00:00''') TO 's3://bucket/syncs/m/v1/span/try-2/actuals/' "
        "IAM_ROLE 'arn:aws:iam::1:role/unload' FORMAT AS PARQUET CLEANPATH MAXFILESIZE 256 MB"
    )


def test_the_unload_literal_gives_redshift_the_query_back_backslashes_and_quotes_alike() -> None:
    unload = Unload("s3://bucket/p/", "arn:aws:iam::1:role/unload", 10, pafs.LocalFileSystem(), Store())
    select = "SELECT * FROM t WHERE note LIKE 'a\\_b%' OR note = '\\' OR note ~ '\\d''s'"
    parsed = parse_unload(unload.statement(select, "predictions"))
    assert not isinstance(parsed, Refusal)
    assert parsed.query == select


@pytest.mark.parametrize("rows_in_file", [0, 3])
def test_files_of_any_size_are_read_whole(tmp_path: Path, rows_in_file: int) -> None:
    rows = [prediction(prediction_id=f"p{n}", predicted_at=WINDOW.start + timedelta(minutes=n)) for n in range(3)]
    paths = unloaded(tmp_path, rows[:rows_in_file], PARQUET_TYPES, 1)
    fragments, *_ = from_files(paths, PREDICTION_TYPES)
    assert len(fragments) == rows_in_file
