"""Windows by UNLOAD: Spark's executors judge the unloaded files as the task does, row for row; on the local stack a
window by UNLOAD is delivered exactly once, on the task path and on Spark, and its files are gone after success."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from aporia_local.aws import REGION
from aporia_local.stack import UNLOAD_BUCKET, UNLOAD_ROLE_ARN, LocalStack
from aporia_provider.client import LogResult
from aporia_provider.compat import AirflowFailException
from aporia_provider.extraction.in_spark import SparkVerdicts, read_unloaded_with_spark
from aporia_provider.extraction.in_task import found_in, judge_in_task, select_columns
from aporia_provider.extraction.spark import spark_session
from aporia_provider.extraction.unload import UnloadedFiles, read_files
from aporia_provider.hooks.spark import spark_target
from aporia_provider.redshift import column_types
from tests.helpers import (
    MODEL,
    SEED_START,
    AporiaProbe,
    assert_delivered_exactly,
    redshift_sql,
    row_id,
    sync,
    sync_operator,
)
from tests.unit.test_in_task import PLAN, PREDICTION_TYPES, WINDOW, description, layout
from tests.unit.test_unload import PARQUET_TYPES, ROWS, from_files, unloaded

pytestmark = pytest.mark.usefixtures("airflow_env")


def test_spark_judges_each_unloaded_file_once_a_file_to_each_task_as_the_task_does(tmp_path: Path) -> None:
    """Each file's verdicts are kept on Spark's disk by a task of its own; the check finds in them what the task
    finds (the rejected rows too), and the tasks that send post what passed, the repeated id's rows left out."""
    paths = unloaded(tmp_path, ROWS, PARQUET_TYPES, files=4)
    fragments, rejected, reread, examples = from_files(paths, PREDICTION_TYPES)
    types = column_types(description(PREDICTION_TYPES))
    source = layout(PLAN, "predictions")
    columns, _ = select_columns(source, types, WINDOW)
    by_task: list[dict[str, Any]] = []
    batches = read_files(pafs.LocalFileSystem(), paths, columns, types)
    judge_in_task(batches, source, types, WINDOW.start, by_task.append).release()
    spark = spark_session(spark_target(None, None))
    files = UnloadedFiles(pafs.LocalFileSystem(), paths, source, columns, types, WINDOW.start)
    kept = read_unloaded_with_spark(spark, files)
    verdicts = SparkVerdicts(kept)
    # A file to each task: each partition's rows are one file's (round robin once dealt two files to one task).
    per_task = kept.groupBy(F.spark_partition_id()).agg(F.sum("rows").alias("rows")).collect()
    in_files = [pq.read_metadata(path).num_rows for path in paths]
    assert sorted(row["rows"] for row in per_task) == sorted(rows for rows in in_files if rows)
    by_spark: list[dict[str, Any]] = []
    found = found_in(source, verdicts, by_spark.append)
    assert (found.rows, found.rejected, found.reread) == (len(ROWS), rejected, reread)
    assert found.examples == examples and by_spark == by_task
    assert found.repeated == {"p1"}

    posted = tmp_path / "posted"
    posted.mkdir()

    class PostedToFiles:
        """Writes each request's fragments to a file of its own (Spark's Python workers are other processes)."""

        def log_batches(self, model_id: str, version: str, batches: Any, in_flight: int = 1) -> LogResult:
            result = LogResult()
            for joined, count in batches:
                (posted / f"{uuid.uuid4().hex}.json").write_text(f"[{joined}]")
                result.add(LogResult(count, 1, 0, []))
            return result

    client: Any = PostedToFiles()
    delivered = verdicts.send(found.repeated, client, ("m", "v"), batch_size=2)
    kept.unpersist()
    sent = [fragment for path in posted.iterdir() for fragment in json.loads(path.read_text())]
    assert delivered.fragments == len(sent) == len(fragments)
    assert sorted(map(json.dumps, sent)) == sorted(json.dumps(json.loads(fragment)) for fragment in fragments)


# ------------------------------------------------------------------------- syncs by UNLOAD on the local stack

HOUR = timedelta(hours=1)
WINDOW_24 = (SEED_START + 24 * HOUR, SEED_START + 27 * HOUR)
PREFIX = f"s3://{UNLOAD_BUCKET}/syncs"
BY_UNLOAD: dict[str, Any] = {"unload_s3_prefix": PREFIX, "unload_iam_role": UNLOAD_ROLE_ARN, "unload_min_rows": 0}


def s3_client(stack: LocalStack) -> Any:
    import boto3

    settings = stack.settings
    return boto3.client(
        "s3",
        endpoint_url=settings.aws_url,
        region_name=REGION,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
    )


def keys_under(stack: LocalStack, prefix: str) -> list[str]:
    listed = s3_client(stack).list_objects_v2(
        Bucket=UNLOAD_BUCKET, Prefix=prefix.removeprefix(f"s3://{UNLOAD_BUCKET}/")
    )
    return sorted(item["Key"] for item in listed.get("Contents", []))


def try_prefix(window: tuple[datetime, datetime], attempt: int) -> str:
    return f"{PREFIX}/{MODEL}/v1/{window[0].isoformat()}--{window[1].isoformat()}/try-{attempt}/"


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("spark_min_rows", [None, 0], ids=["in-task", "spark"])
def test_a_window_by_unload_is_delivered_exactly_once_and_its_files_are_gone_after(
    version: str, aporia: AporiaProbe, stack: LocalStack, caplog: pytest.LogCaptureFixture, spark_min_rows: int | None
) -> None:
    with caplog.at_level(logging.INFO, logger="aporia_provider"):
        summary = sync(WINDOW_24, spark_min_rows=spark_min_rows, **BY_UNLOAD)
    assert_delivered_exactly(stack, aporia, *WINDOW_24)
    assert summary["unloaded_to"] == try_prefix(WINDOW_24, 1) and summary["unload_seconds"] > 0
    reader = "Spark" if spark_min_rows == 0 else "this task"
    lines = [record.getMessage() for record in caplog.records]
    for kind in ("predictions", "actuals"):
        location = f"{try_prefix(WINDOW_24, 1)}{kind}/"
        assert any(
            line.startswith(f"Unloading {kind} of {MODEL} v1 to {location}, read by {reader}: ")
            and line.endswith(", at least unload_min_rows=0.")
            for line in lines
        ), lines
    assert f"Deleted the files unloaded to {try_prefix(WINDOW_24, 1)}." in lines
    assert keys_under(stack, try_prefix(WINDOW_24, 1)) == []
    # Spark starts once, while the first UNLOAD runs.
    starts = [n for n, line in enumerate(lines) if line.startswith("Starting Spark on ")]
    unloaded = next(n for n, line in enumerate(lines) if line.startswith(f"Unloaded predictions of {MODEL} v1 in "))
    assert [lines[n].endswith(" while Redshift unloads.") and n < unloaded for n in starts] == (
        [True] if spark_min_rows == 0 else []
    )


@pytest.mark.usefixtures("seeded")
def test_a_failed_try_keeps_its_files_and_the_retry_unloads_to_its_own_prefix(
    version: str, aporia: AporiaProbe, stack: LocalStack
) -> None:
    redshift_sql(stack, "DROP TABLE IF EXISTS unload_rows")
    redshift_sql(stack, "CREATE TABLE unload_rows AS SELECT * FROM model_predictions")
    redshift_sql(stack, "UPDATE unload_rows SET amount = 'NaN' WHERE prediction_id = %s", (row_id(150),))
    query = "SELECT * FROM unload_rows"

    class Try:
        def __init__(self, number: int) -> None:
            self.try_number = number

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    with pytest.raises(AirflowFailException, match=r"^1 invalid row of "):
        sync_operator(WINDOW_24, query=query, **BY_UNLOAD).execute({"ti": Try(1)})  # type: ignore[typeddict-item]
    kept = keys_under(stack, try_prefix(WINDOW_24, 1))
    assert kept and all(key.endswith(".parquet") for key in kept)
    assert aporia.count(MODEL, "v1")["total"] == 0
    redshift_sql(
        stack,
        "UPDATE unload_rows u SET amount = m.amount FROM model_predictions m "
        "WHERE u.prediction_id = m.prediction_id AND m.prediction_id = %s",
        (row_id(150),),
    )
    summary = sync_operator(WINDOW_24, query=query, **BY_UNLOAD).execute({"ti": Try(2)})  # type: ignore[typeddict-item]
    assert summary["unloaded_to"] == try_prefix(WINDOW_24, 2)
    assert keys_under(stack, try_prefix(WINDOW_24, 2)) == []
    assert keys_under(stack, try_prefix(WINDOW_24, 1)) == kept  # the failed try's, for its diagnosis
    assert_delivered_exactly(stack, aporia, *WINDOW_24)
    redshift_sql(stack, "DROP TABLE unload_rows")
