"""Windows by UNLOAD: Spark's executors judge the unloaded files as the task does, row for row."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from aporia_provider.extraction.in_spark import check_with_spark, read_unloaded_with_spark
from aporia_provider.extraction.in_task import select_columns
from aporia_provider.extraction.spark import spark_session
from aporia_provider.hooks.spark import spark_target
from aporia_provider.redshift import column_types
from tests.unit.test_in_task import PLAN, PREDICTION_TYPES, WINDOW, description, layout
from tests.unit.test_unload import PARQUET_TYPES, ROWS, from_files, unloaded

pytestmark = pytest.mark.usefixtures("airflow_env")


def test_spark_judges_the_unloaded_files_a_file_to_each_task_as_the_task_does(tmp_path: Path) -> None:
    paths = unloaded(tmp_path, ROWS, PARQUET_TYPES, files=3)
    fragments, rejected, reread, examples = from_files(paths, PREDICTION_TYPES)
    types = column_types(description(PREDICTION_TYPES))
    source = layout(PLAN, "predictions")
    columns, _ = select_columns(source, types, WINDOW)
    spark = spark_session(spark_target(None, None))
    kept = read_unloaded_with_spark(spark, pafs.LocalFileSystem(), paths, source, columns, types, WINDOW.start)
    assert kept[0].rdd.getNumPartitions() == 3
    passed, rows, spark_rejected, spark_reread, spark_examples = check_with_spark(kept, source)
    assert (rows, spark_rejected, spark_reread) == (len(ROWS), rejected, reread)
    assert sorted(spark_examples) == sorted(examples)
    assert sorted(row["fragment"] for row in passed.collect()) == sorted(fragments)
    kept[0].unpersist()
