"""One sync in its own process, as an Airflow task runs it: `python -m benchmarks.sync_worker '<json>' [--gated]`.

The JSON argument holds the AporiaSyncOperator's keyword arguments (with `spark_conn_id`, Spark is the one of
that connection). The operator's module (and with it Airflow) is imported before the clock starts, as in an
Airflow task process; `execute()` is timed and sampled (benchmarks.worker.Sampler: RSS of the process tree, of
its JVM and Python workers, CPU of each). The result also names the path the sync took for each source, from
the sync's own log line ("Reading predictions of ... with Spark" / "... in this task", "Unloading ... read by
Spark" / "... read by this task").
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from benchmarks.worker import Sampler, measured, serve

PATH_LOGGER = "aporia_provider"


class PathLines(logging.Handler):
    """Keeps the sync's log lines that name the path it read a source on."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(("Reading ", "Unloading ")):
            self.lines.append(message)


def main(arguments: dict[str, Any]) -> dict[str, Any]:
    from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

    operator = AporiaSyncOperator(**arguments)
    paths = PathLines()
    logger = logging.getLogger(PATH_LOGGER)
    logger.addHandler(paths)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    result = measured(lambda: operator.execute({}), Sampler())
    result["paths"] = paths.lines
    result["spark"] = any("with Spark" in line or "read by Spark" in line for line in paths.lines)
    from pyspark.sql import SparkSession

    with contextlib.suppress(Exception):
        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    return result


if __name__ == "__main__":
    serve(main)
