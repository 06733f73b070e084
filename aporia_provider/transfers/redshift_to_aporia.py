"""The sync of prediction windows and delayed actuals from Redshift to Aporia."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from aporia_provider.extraction.sql import Window, table_query
from aporia_provider.operators.base import AporiaBaseOperator, model_version_asset

if TYPE_CHECKING:
    from airflow.sdk import Context


class AporiaSyncOperator(AporiaBaseOperator):
    """Sync one window of predictions, and the delayed actuals that arrived in it, from Redshift to Aporia.

    The window is the run's data interval unless ``window_start``/``window_end`` are given; it is half-open,
    in UTC, and pushed down to Redshift. Delivery is idempotent by prediction id, so retries, backfills and
    ``lookback`` re-reads never duplicate data. Returns a summary (rows read, fragments and actuals sent,
    rows rejected, batches, retries, seconds) to XCom.

    :param query: the SELECT returning the predictions (or ``table``, a validated table name).
    :param features, predictions, raw_inputs: field -> column overrides; other fields read same-named columns.
    :param actuals: prediction field -> column of its delayed actual; actuals are read by
        ``actuals_timestamp_column`` in the same window, from ``actuals_query`` or the same query.
    :param on_invalid_rows: ``fail`` (nothing is sent) or ``skip`` (invalid rows are counted and left out).
    :param validate_only: read, validate and count, but send nothing (a dry run; ``dry_run`` is taken by
        BaseOperator).
    :param spark_conf: Spark settings; ``spark.master`` defaults to ``local[*]``.
    :param jdbc_driver: ``postgresql`` (default, accepted by Redshift) or ``redshift`` when that driver is on
        Spark's class path.
    """

    template_fields: Sequence[str] = (
        "model_id",
        "model_version",
        "query",
        "table",
        "actuals_query",
        "window_start",
        "window_end",
        "id_column",
        "timestamp_column",
        "actuals_timestamp_column",
        "features",
        "predictions",
        "raw_inputs",
        "actuals",
        "select_expr",
        "spark_conf",
    )

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str,
        id_column: str,
        timestamp_column: str,
        query: str | None = None,
        table: str | None = None,
        features: Mapping[str, str] | None = None,
        predictions: Mapping[str, str] | None = None,
        raw_inputs: Mapping[str, str] | None = None,
        actuals: Mapping[str, str] | None = None,
        actuals_timestamp_column: str | None = None,
        actuals_query: str | None = None,
        select_expr: list[str] | None = None,
        read_options: Mapping[str, str] | None = None,
        window_start: str | None = None,
        window_end: str | None = None,
        lookback: timedelta | None = None,
        on_invalid_rows: str = "fail",
        validate_only: bool = False,
        batch_size: int = 5000,
        num_partitions: int | None = None,
        spark_conf: Mapping[str, str] | None = None,
        jdbc_driver: str = "postgresql",
        **kwargs: Any,
    ) -> None:
        if (query is None) == (table is None):
            raise ValueError("Pass exactly one of query and table to AporiaSyncOperator.")
        if not any("{{" in v for v in (model_id, model_version)):
            kwargs.setdefault("outlets", [model_version_asset(model_id, model_version)])
        super().__init__(**kwargs)
        self.model_id = model_id
        self.model_version = model_version
        self.id_column = id_column
        self.timestamp_column = timestamp_column
        self.query = query
        self.table = table
        self.features = features
        self.predictions = predictions
        self.raw_inputs = raw_inputs
        self.actuals = actuals
        self.actuals_timestamp_column = actuals_timestamp_column
        self.actuals_query = actuals_query
        self.select_expr = select_expr
        self.read_options = read_options
        self.window_start = window_start
        self.window_end = window_end
        self.lookback = lookback or timedelta(0)
        self.on_invalid_rows = on_invalid_rows
        self.validate_only = validate_only
        self.batch_size = batch_size
        self.num_partitions = num_partitions
        self.spark_conf = spark_conf
        self.jdbc_driver = jdbc_driver

    def run(self, context: Context) -> dict[str, Any]:
        from aporia_provider.extraction.plan import SyncPlan
        from aporia_provider.extraction.run import run_sync, spark_session

        window = Window.of(
            self.window_start or context.get("data_interval_start"),
            self.window_end or context.get("data_interval_end"),
        )
        schema = self.existing_schema(self.model_id, self.model_version)
        plan = SyncPlan(
            model_id=self.model_id,
            model_version=self.model_version,
            schema=schema,
            # SyncPlan checks that the query is a single statement.
            query=table_query(self.table) if self.table else self.query or "",
            id_column=self.id_column,
            timestamp_column=self.timestamp_column,
            features=self.features or {},
            predictions=self.predictions or {},
            raw_inputs=self.raw_inputs or {},
            actuals=self.actuals or {},
            actuals_timestamp_column=self.actuals_timestamp_column,
            actuals_query=self.actuals_query,
            select_expr=tuple(self.select_expr or ()),
            read_options=dict(self.read_options or {}),
            on_invalid_rows=self.on_invalid_rows,
        )
        self.log.info(
            "Syncing %s %s for [%s, %s)%s%s.",
            self.model_id,
            self.model_version,
            window.start.isoformat(),
            window.end.isoformat(),
            f" with lookback {self.lookback}" if self.lookback else "",
            " (validate only: nothing is sent)" if self.validate_only else "",
        )
        summary = run_sync(
            spark_session(self.spark_conf),
            plan,
            window,
            partial(self.redshift_hook.spark_jdbc_options, self.jdbc_driver),
            self.aporia_hook.client,
            lookback=self.lookback,
            dry_run=self.validate_only,
            batch_size=self.batch_size,
            num_partitions=self.num_partitions,
        )
        # The model version first: the sync view groups windows by it, and a log reader wants it too.
        result = {"model_id": self.model_id, "model_version": self.model_version, **summary.to_dict()}
        self.log.info("Sync summary for %s %s: %s", self.model_id, self.model_version, result)
        return result
