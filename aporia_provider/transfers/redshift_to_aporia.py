"""The sync of prediction windows and delayed actuals from Redshift to Aporia."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from aporia_provider.assets.aporia import describe_sync_events, sync_outlets
from aporia_provider.extraction.options import DEFAULT_BATCH_SIZE, SyncOptions
from aporia_provider.links.aporia import AporiaModelVersionLink
from aporia_provider.metrics import emit_sync_metrics
from aporia_provider.operators.base import ALL_CONNECTIONS, AporiaBaseOperator
from aporia_provider.redshift import table_query
from aporia_provider.sync.failure import report_failure
from aporia_provider.sync.outcome import SYNC_XCOM_KEY, SyncSummary, warnings_logged
from aporia_provider.sync.rejected_rows import rejected_rows_files
from aporia_provider.sync.unload import DEFAULT_UNLOAD_MIN_ROWS, try_key, unload_of
from aporia_provider.sync.versions import (
    OTHER_VERSIONS,
    PREFIX_ARGUMENTS,
    VERSION_ARGUMENTS,
    named_versions,
    routing_of,
    served,
    sync_options,
    sync_plan,
    sync_versions,
    synced_versions,
    version_records,
    version_result,
    versions_result,
)
from aporia_provider.sync.window import window_of_run

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Asset, AssetAlias, Context
    from pyspark.sql import SparkSession

    from aporia_provider.extraction.sql import Window


class AporiaSyncOperator(AporiaBaseOperator):
    """Sync one window of predictions, and the delayed actuals that arrived in it, from Redshift to Aporia.

    The window is the run's data interval unless ``window_start``/``window_end`` are given; it is half-open,
    in UTC, and pushed down to Redshift. Delivery is idempotent by prediction id, so retries, backfills and
    ``lookback`` re-reads never duplicate data. Returns its summary (`aporia_provider.sync.outcome`) to XCom and
    Airflow's metrics; each try first pushes the XCom ``aporia_sync`` the sync view finds sync tasks by. A failing
    sync logs its reason in one ERROR line and pushes it, with its counts so far, to the XCom
    ``aporia_sync_failure`` (where the sync view reads it) before it raises.

    :param model_id: the model's id in Aporia (templated).
    :param model_version: the version the rows belong to (templated; templated ids reach the Asset through an
        alias at run time); or give ``model_version_column``.
    :param model_version_column: the column naming each row's version (templated): the window is read once (task or
        Spark) and each row (actuals too) goes to its version, with a summary, metrics and Asset event per version.
    :param model_versions: with ``model_version_column``, the versions this sync serves (a list, templated).
    :param on_unknown_version: a row naming another version is an invalid row (``reject``, the default; kept in
        ``rejected_rows_path`` under ``other-versions``) or is left out (``ignore``); counted as ``other_version_rows``.
    :param id_column: the column holding each prediction's id (templated).
    :param timestamp_column: the TIMESTAMP/TIMESTAMPTZ column the window selects predictions by (templated).
    :param query: the SELECT returning the predictions, or a path to a ``.sql`` file (templated); or give
        ``table``.
    :param table: a table (``table`` or ``schema.table``) to read instead of a query (templated).
    :param features: feature name -> column, where they differ; other features read same-named columns
        (templated).
    :param predictions: prediction name -> column, likewise (templated).
    :param raw_inputs: raw input name -> column, likewise (templated).
    :param features_prefix: the prefix of the feature columns (templated): ``"f_"`` maps ``f_amount`` to the feature
        ``amount``; explicit ``features`` win. Prefixed columns the schema lacks are logged as schema drift (WARNING).
    :param predictions_prefix: likewise for predictions (templated).
    :param raw_inputs_prefix: likewise for raw inputs (templated).
    :param actuals: prediction name -> column of its delayed actual (templated); actuals are read by
        ``actuals_timestamp_column`` in the same window, from ``actuals_query`` or the same query.
    :param actuals_timestamp_column: the column saying when each actual arrived (templated).
    :param actuals_query: a separate SELECT for the actuals (templated); default: ``query``.
    :param select_expr: Spark SQL expressions applied to the rows first (templated).
    :param read_options: extra Spark JDBC read options.
    :param window_start: the window's start, a timezone-aware ISO-8601 timestamp (templated); default: the run's
        data interval, or for a manual run without one the last complete interval of the DAG's timetable. Empty
        means not given.
    :param window_end: the window's end, likewise (templated).
    :param lookback: also re-read rows this much before the window's start (late rows); idempotent.
    :param on_invalid_rows: ``fail`` (default: nothing is sent) or ``skip`` (invalid rows are counted and left
        out).
    :param max_invalid_rows: with ``fail``, a limit instead of none at all: a count, or a fraction of the window's
        rows (a float between 0 and 1). At or under it invalid rows are left out and counted with a WARNING; over
        it nothing is sent. ``on_invalid_rows="skip"`` is the same with no limit.
    :param rejected_rows_path: where every rejected row is kept (id, column, reason, an excerpt of the value), an
        ObjectStoragePath URL (templated): ``s3://bucket/prefix`` through ``aws_conn_id`` (the Amazon provider's
        ``s3fs`` extra), or ``file:///dir``. Each window and try that rejects rows writes one JSON-lines object,
        ``<model id>/<version>/<window start>--<window end>/try-<n>.jsonl``; the summary names it.
    :param unload_s3_prefix: ``s3://bucket/prefix`` (templated; default: the Redshift connection's extra of that
        name): a window of ``unload_min_rows`` or more is unloaded there as Parquet, not read through a cursor (which
        Redshift materializes on its leader node), to ``<prefix>/<model id>/<version>/<start>--<end>/try-<n>/``, read
        through ``aws_conn_id``, deleted after success and kept after a failure (one version a sync).
    :param unload_iam_role: the ARN of the role Redshift assumes to write there (templated; default: the extra).
    :param unload_min_rows: the fewest rows a window needs to go by UNLOAD.
    :param min_rows: the fewest predictions each window should deliver (its own, not the lookback's re-reads): a
        window with fewer — a silent upstream outage — fails (retried: the rows may still come) or, with
        ``on_low_volume="warn"``, logs a WARNING and sends what there is.
    :param on_low_volume: ``fail`` (default) or ``warn``.
    :param validate_only: read, validate and count, but send nothing (a dry run; ``dry_run`` is taken by
        BaseOperator). Emits no Asset event.
    :param batch_size: fragments per request to Aporia (default 5,000).
    :param num_partitions: JDBC partitions of the timestamp range Spark reads in parallel; default: one per
        50,000 rows of the window.
    :param spark_conn_id: an Airflow connection of the Spark provider (templated): ``spark`` (its host and port
        are the master URL, e.g. ``spark://host:7077``; extras named ``spark.*`` are Spark settings) or
        ``spark_connect`` (a Spark Connect server, ``sc://host:15002``). Without one the sync runs on ``local[*]``.
    :param spark_conf: Spark settings, over those of the connection (templated; ``spark.master`` picks a master
        without a connection). A Spark Connect server keeps its own settings; only session settings apply there.
    :param spark_min_rows: a source's window (predictions, or actuals) of at least this many rows is read by
        Spark; a smaller one is streamed, checked and sent by the task itself over the Redshift connection, without
        starting Spark (same checks, same guarantees; the task's memory does not grow with the window). 0 sends
        every window through Spark; so does ``select_expr`` (Spark SQL). Default: none, the task reads every window:
        on the local stack's Spark Connect server and 2-worker cluster Spark took 3.4 times the task's time for
        1,000,000 rows (``make bench``); set it when ``spark_conn_id`` names a cluster with many more cores than
        the worker.
    :param jdbc_driver: ``postgresql`` (default, accepted by Redshift) or ``redshift`` when that driver is on
        Spark's class path.
    """

    template_fields: Sequence[str] = (
        "model_id",
        "model_version",
        *VERSION_ARGUMENTS,
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
        *PREFIX_ARGUMENTS,
        "actuals",
        "select_expr",
        "spark_conf",
        "spark_conn_id",
        "rejected_rows_path",
        "unload_s3_prefix",
        "unload_iam_role",
        *ALL_CONNECTIONS,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "query": "sql",
        "actuals_query": "sql",
        "features": "json",
        "predictions": "json",
        "raw_inputs": "json",
        "actuals": "json",
        "select_expr": "json",
        "spark_conf": "json",
    }
    template_ext: Sequence[str] = (".sql",)
    operator_extra_links = (AporiaModelVersionLink(),)

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str | None = None,
        id_column: str,
        timestamp_column: str,
        query: str | None = None,
        table: str | None = None,
        features: Mapping[str, str] | None = None,
        predictions: Mapping[str, str] | None = None,
        raw_inputs: Mapping[str, str] | None = None,
        features_prefix: str | None = None,
        predictions_prefix: str | None = None,
        raw_inputs_prefix: str | None = None,
        model_version_column: str | None = None,
        model_versions: Sequence[str] | None = None,
        on_unknown_version: str = "reject",
        actuals: Mapping[str, str] | None = None,
        actuals_timestamp_column: str | None = None,
        actuals_query: str | None = None,
        select_expr: list[str] | str | None = None,
        read_options: Mapping[str, str] | None = None,
        window_start: str | datetime | None = None,
        window_end: str | datetime | None = None,
        lookback: timedelta | None = None,
        on_invalid_rows: str = "fail",
        max_invalid_rows: int | float | None = None,
        rejected_rows_path: str | None = None,
        min_rows: int | None = None,
        on_low_volume: str = "fail",
        validate_only: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        num_partitions: int | None = None,
        spark_conf: Mapping[str, str] | None = None,
        spark_conn_id: str | None = None,
        spark_min_rows: int | None = None,
        jdbc_driver: str = "postgresql",
        unload_s3_prefix: str | None = None,
        unload_iam_role: str | None = None,
        unload_min_rows: int = DEFAULT_UNLOAD_MIN_ROWS,
        **kwargs: Any,
    ) -> None:
        if (query is None) == (table is None):
            raise ValueError("Pass exactly one of query and table to AporiaSyncOperator.")
        super().__init__(**kwargs)
        self.model_id, self.model_version = model_id, model_version
        self.id_column, self.timestamp_column = id_column, timestamp_column
        self.query, self.table = query, table
        self.features, self.predictions, self.raw_inputs = features, predictions, raw_inputs
        self.features_prefix, self.predictions_prefix = features_prefix, predictions_prefix
        self.raw_inputs_prefix = raw_inputs_prefix
        self.model_version_column, self.model_versions = model_version_column, model_versions
        self.on_unknown_version = on_unknown_version
        self.actuals = actuals
        self.actuals_timestamp_column = actuals_timestamp_column
        self.actuals_query = actuals_query
        self.select_expr = select_expr
        self.read_options = read_options
        self.window_start, self.window_end = window_start, window_end
        self.lookback = lookback or timedelta(0)
        self.on_invalid_rows, self.max_invalid_rows = on_invalid_rows, max_invalid_rows
        self.min_rows, self.on_low_volume = min_rows, on_low_volume
        self.rejected_rows_path, self.validate_only = rejected_rows_path, validate_only
        self.batch_size, self.num_partitions = batch_size, num_partitions
        self.spark_conf, self.spark_conn_id = spark_conf, spark_conn_id
        self.spark_min_rows = spark_min_rows
        self.jdbc_driver = jdbc_driver
        self.unload_s3_prefix, self.unload_iam_role = unload_s3_prefix, unload_iam_role
        self.unload_min_rows = unload_min_rows
        # A bad literal fails the DAG's parse here, in one sentence naming the argument. (Mapped arguments are
        # known only when Airflow builds the task to run it, and this then runs at the start of the run.)
        self._sync_options()
        # The session and tag of the running sync's Spark jobs, and its own delivery's stop, for on_kill.
        self._running: tuple[SparkSession, str] | None = None
        self._stop: threading.Event | None = None  # made per run: an Event cannot be deep-copied with the task
        self._synced: Mapping[str, Any] | None = None
        self._summaries: dict[str, SyncSummary] | None = None  # each version's, for a sync of several
        self.model_version_outlet = self._declare_asset()

    def run(self, context: Context) -> dict[str, Any]:
        started = time.monotonic()
        summary = SyncSummary()
        try:
            result = self._sync(context, summary)
        except Exception as exc:
            for each in (self._summaries or {"": summary}).values():
                each.seconds = each.seconds or round(time.monotonic() - started, 3)
            self._failed(context, exc, summary)
            raise
        for version, counts in version_records(result):
            lag = datetime.now(timezone.utc) - datetime.fromisoformat(counts["window_end"])
            emit_sync_metrics(self.model_id, version, counts, failed=False, lag=lag)
        return result

    def _sync(self, context: Context, summary: SyncSummary) -> dict[str, Any]:
        from aporia_provider.exceptions import SyncStopped
        from aporia_provider.extraction.run import run_sync
        from aporia_provider.extraction.spark import spark_session
        from aporia_provider.hooks.spark import spark_target

        ti = context.get("ti")
        routing = routing_of(self)
        versions = routing.versions if routing else (str(self.model_version),)
        if routing is not None:
            self._summaries = {version: SyncSummary() for version in versions}
        if ti is not None:  # the mark the sync view finds sync tasks by, whatever their class
            ti.xcom_push(key=SYNC_XCOM_KEY, value=named_versions(self))
        options = self._sync_options()
        window = self._resolve_window(context)
        plans = {v: sync_plan(self, v, self.existing_schema(self.model_id, v)) for v in versions}
        target = spark_target(self.spark_conn_id, self.spark_conf)
        attempt = getattr(ti, "try_number", None) or 1
        # UNLOAD serves a sync of one version (a routed read is not unloaded yet).
        unload = None if routing else unload_of(self, try_key(self.model_id, versions[0], window, attempt))
        reads = target.reads(options.spark_min_rows) + (", each read once for every version" if routing else "")
        if unload is not None:
            reads += f"; windows of {unload.min_rows:,} rows or more, or over the cursor limit, by UNLOAD"
        span = f"[{window.start.isoformat()}, {window.end.isoformat()})" + (
            f" with lookback {self.lookback}" if self.lookback else ""
        )
        only = " (validate only: nothing is sent)" if self.validate_only else ""
        self.log.info("Syncing %s %s for %s%s; %s.", self.model_id, ", ".join(versions), span, only, reads)
        tag = f"aporia-sync-{uuid.uuid4().hex}"
        self._stop = threading.Event()

        def start_spark(for_files: bool = False) -> SparkSession:
            spark = spark_session(target, for_files)
            self._running = (spark, tag)
            if self._stop is not None and self._stop.is_set():  # killed while Spark was starting
                raise SyncStopped("before Spark ran", f"{self.model_id} {served(self)}")
            return spark

        # Each version's rejected rows in its own file; with a version column, the rows naming another one apart.
        other = OTHER_VERSIONS if routing else None
        path = self.rejected_rows_path
        kept = rejected_rows_files(path, self.aws_conn_id, self.model_id, versions, window, attempt, other)
        try:
            if routing is None:
                # The WARNING lines the engine logs (rows left out, a low volume) go into the summary too.
                with warnings_logged(summary):
                    run_sync(
                        plans[versions[0]],
                        window,
                        self.redshift_hook.warehouse(self.jdbc_driver, self.execution_timeout),
                        start_spark,
                        self.aporia_hook.client,
                        options,
                        tag=tag,
                        stop=self._stop,
                        spark_where=target.describe(),
                        rejected_rows=kept.get(versions[0]),
                        summary=summary,
                        unload=unload,
                    )
            else:
                sync_versions(self, plans, routing, window, options, kept, start_spark, tag, target.describe())
        finally:
            for file in kept.values():
                file.close()
            running, self._running, self._stop = self._running, None, None
            if running and target.remote:
                running[0].stop()  # release this session on the shared server
        written = {version: file.url for version, file in kept.items() if file.rows}
        if self._summaries:
            result = versions_result(self.model_id, self._summaries, written)
        else:
            result = version_result(self.model_id, versions[0], summary, written)
        for version, counts in version_records(result):
            self.log.info("Sync summary for %s %s: %s", self.model_id, version, counts)
        # What a completed sync tells Airflow: the Asset event now, and (kept for later) its lineage.
        self._synced = result
        self._emit_asset(context, window, result)
        return result

    def _failed(self, context: Context, exc: Exception, summary: SyncSummary) -> None:
        connections = [c for c in (self.aporia_conn_id, self.redshift_conn_id, self.aws_conn_id) if c]
        if self._summaries:  # each version's counts so far
            record = versions_result(self.model_id, self._summaries, {})
        else:
            record = version_result(self.model_id, self.model_version or "", summary, {})
        report_failure(exc, context.get("ti"), record, connections, self.log)

    def _sync_options(self) -> SyncOptions:
        """The sync's settings, each checked: an InputError naming the argument (at run time, not retried)."""
        return sync_options(self)

    def on_kill(self) -> None:
        """Stop the sync's Spark jobs and its own delivery, so nothing goes on posting to Aporia after the task."""
        if self._stop is not None:
            self._stop.set()
        running = self._running
        if running is None:
            return
        from aporia_provider.extraction.spark import cancel

        spark, tag = running
        cancel(spark, tag)
        self.log.info("Stopped the Spark jobs of the sync of %s %s.", self.model_id, served(self))

    # ------------------------------------------------------------------ lineage, the window, the Asset

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the Redshift tables the query (and actuals query) read, and the Aporia model versions
        they went to, with the predictions delivered as each one's row count."""
        from aporia_provider.lineage import sync_lineage

        # A validate-only sync reads, but writes nothing to Aporia.
        versions = [] if self.validate_only else synced_versions(self)
        queries = [table_query(self.table) if self.table else self.query or "", *filter(None, [self.actuals_query])]
        warehouse = self.redshift_hook.warehouse(self.jdbc_driver)
        return sync_lineage(warehouse, queries, self.aporia_hook, self.model_id, versions)

    def _resolve_window(self, context: Context) -> Window:
        return window_of_run(context, self.window_start, self.window_end, self.log)

    def _declare_asset(self) -> Asset | AssetAlias | None:
        """The model versions' Assets (or an alias of them) as outlets, the first returned; a validate-only sync
        changes nothing and declares none."""
        if self.validate_only:
            return None
        outlets = sync_outlets(self.model_id, [v for v, _ in synced_versions(self)], self.dag_id, self.task_id)
        self.add_outlets(outlets)
        return outlets[0] if outlets else None

    def _emit_asset(self, context: Context, window: Window, summary: Mapping[str, Any]) -> None:
        """Describe this sync on each model version's Asset event: its window and what reached Aporia."""
        events = context.get("outlet_events")
        if self.model_version_outlet is not None and events is not None:
            versions = version_records(summary, self.model_version)
            describe_sync_events(events, self.model_version_outlet, self.model_id, window, versions)
