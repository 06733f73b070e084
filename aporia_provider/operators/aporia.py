"""Operators: register models and versions, connect data sets, and sync windows of predictions and actuals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from aporia_provider.extraction.sql import SyncInputError, Window, identifier, single_statement, table_query
from aporia_provider.hooks.aporia import AporiaHook
from aporia_provider.schema import SchemaError, VersionSchema, check_model_type

if TYPE_CHECKING:
    from airflow.sdk import Context

    from aporia_provider.datasources import JDBCDataSource


def model_version_asset(model_id: str, model_version: str) -> Asset:
    """The Asset a DAG can schedule on: fresh data for one Aporia model version."""
    return Asset(name=f"aporia/{model_id}/{model_version}", uri=f"aporia://models/{model_id}/versions/{model_version}")


class _AporiaOperator(BaseOperator):
    """Shared plumbing: the hook, and bad input turned into a failure that Airflow does not retry."""

    def __init__(
        self,
        *,
        aporia_conn_id: str = AporiaHook.default_conn_name,
        redshift_conn_id: str = "redshift_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aporia_conn_id = aporia_conn_id
        self.redshift_conn_id = redshift_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> AporiaHook:
        return AporiaHook(
            aporia_conn_id=self.aporia_conn_id, redshift_conn_id=self.redshift_conn_id, aws_conn_id=self.aws_conn_id
        )

    def execute(self, context: Context) -> Any:
        try:
            return self.run(context)
        except (SchemaError, SyncInputError) as exc:
            raise AirflowFailException(str(exc)) from None

    def run(self, context: Context) -> Any:
        raise NotImplementedError

    def existing_schema(self, model_id: str, model_version: str) -> VersionSchema:
        schema = self.hook.get_model_version_schema(model_id, model_version)
        if schema is None:
            raise AirflowFailException(
                f"Model {model_id!r} has no version {model_version!r} in Aporia; create it first with "
                "AporiaCreateModelVersionOperator."
            )
        return schema


class AporiaCreateModelOperator(_AporiaOperator):
    """Create a model in Aporia; an existing model with the same id is left as it is."""

    template_fields: Sequence[str] = ("model_id", "model_name", "description", "model_owner", "tags")

    def __init__(
        self,
        *,
        model_id: str,
        model_name: str | None = None,
        description: str | None = None,
        model_owner: str | None = None,
        color: str | None = None,
        icon: str | None = None,
        tags: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.model_name = model_name
        self.description = description
        # Not `owner`: that is the Airflow task's owner.
        self.model_owner = model_owner
        self.color = color
        self.icon = icon
        self.tags = tags

    def run(self, context: Context) -> dict[str, Any]:
        created = self.hook.create_model(
            self.model_id,
            self.model_name or self.model_id,
            description=self.description,
            owner=self.model_owner,
            color=self.color,
            icon=self.icon,
            tags=self.tags,
        )
        return {"model_id": self.model_id, "created": created}


class AporiaCreateModelVersionOperator(_AporiaOperator):
    """Create a model version, idempotently.

    The same name with the same schema is already done. The same name with another schema fails with
    the differing fields, or, with ``on_schema_change="new_version"``, creates (or reuses) the first free
    name ``<version>-2``, ``<version>-3``, ... The version actually used is returned to XCom.
    """

    template_fields: Sequence[str] = (
        "model_id",
        "model_version",
        "model_type",
        "features",
        "predictions",
        "raw_inputs",
    )

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str,
        model_type: str,
        features: Mapping[str, Any] | None = None,
        predictions: Mapping[str, Any] | None = None,
        raw_inputs: Mapping[str, Any] | None = None,
        feature_importance: Mapping[str, float] | None = None,
        on_schema_change: str = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_schema_change not in ("fail", "new_version"):
            raise ValueError(f"on_schema_change {on_schema_change!r} is not supported; use 'fail' or 'new_version'.")
        self.model_id = model_id
        self.model_version = model_version
        self.model_type = model_type
        self.features = features
        self.predictions = predictions
        self.raw_inputs = raw_inputs
        self.feature_importance = feature_importance
        self.on_schema_change = on_schema_change

    def run(self, context: Context) -> dict[str, Any]:
        check_model_type(self.model_type)
        wanted = VersionSchema.parse(self.features, self.predictions, self.raw_inputs)
        name, attempt = self.model_version, 1
        while (existing := self.hook.get_model_version_schema(self.model_id, name)) is not None:
            differences = existing.differences(wanted)
            if not differences:
                self.log.info("Version %s of %s already exists with this schema; nothing to do.", name, self.model_id)
                return {"model_id": self.model_id, "model_version": name, "created": False}
            if self.on_schema_change == "fail":
                raise AirflowFailException(
                    f"Version {name!r} of {self.model_id!r} already exists with another schema "
                    f"({'; '.join(differences)}); use a new version name or on_schema_change='new_version'."
                )
            attempt += 1
            name = f"{self.model_version}-{attempt}"
        self.hook.create_model_version(
            self.model_id,
            name,
            self.model_type,
            features=self.features,
            predictions=self.predictions,
            raw_inputs=self.raw_inputs,
            feature_importance=self.feature_importance,
        )
        return {"model_id": self.model_id, "model_version": name, "created": True}


class AporiaConnectDatasetOperator(_AporiaOperator):
    """Connect a data set of a model version to Redshift (or to a given data source).

    By default the data source is the IAM JDBC URL built from the Redshift and AWS connections. Before
    Aporia is called, a ``LIMIT 0`` of the query checks that the id, timestamp and every mapped column exist.
    """

    template_fields: Sequence[str] = (
        "model_id",
        "model_version",
        "query",
        "id_column",
        "timestamp_column",
        "features",
        "predictions",
        "labels",
        "raw_inputs",
        "select_expr",
        "schedule",
    )
    dataset = ""

    def __init__(
        self,
        *,
        model_id: str,
        model_version: str,
        query: str,
        id_column: str,
        timestamp_column: str,
        data_source: JDBCDataSource | None = None,
        features: Mapping[str, str] | None = None,
        predictions: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        raw_inputs: Mapping[str, str] | None = None,
        select_expr: list[str] | None = None,
        read_options: Mapping[str, str] | None = None,
        schedule: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_id = model_id
        self.model_version = model_version
        self.query = query
        self.id_column = id_column
        self.timestamp_column = timestamp_column
        self.data_source = data_source
        self.features = features
        self.predictions = predictions
        self.labels = labels
        self.raw_inputs = raw_inputs
        self.select_expr = select_expr
        self.read_options = read_options
        self.schedule = schedule

    def run(self, context: Context) -> dict[str, Any]:
        from aporia_provider.datasources import JDBCDataSource

        schema = self.existing_schema(self.model_id, self.model_version)
        query = single_statement(self.query)
        needed = self._needed_columns(schema)
        if self.select_expr:
            # Spark SQL reshapes the columns after Redshift returns them, so Redshift cannot vouch for them.
            self.log.info("select_expr is set: Aporia checks the mapped columns after applying it.")
        else:
            self._check_columns(query, needed)
        source = self.data_source or JDBCDataSource(
            url=self.hook.redshift_iam_jdbc_url(),
            query=query,
            select_expr=self.select_expr,
            read_options=dict(self.read_options) if self.read_options else None,
        )
        self.hook.connect_dataset(
            self.model_id,
            self.model_version,
            self.dataset,
            source,
            self.id_column,
            self.timestamp_column,
            features=self.features,
            predictions=self.predictions,
            labels=self.labels,
            raw_inputs=self.raw_inputs,
            schedule=self.schedule,
        )
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "dataset": self.dataset,
            "columns": sorted(needed),
        }

    def _needed_columns(self, schema: VersionSchema) -> set[str]:
        needed = {identifier(self.id_column, "id_column"), identifier(self.timestamp_column, "timestamp_column")}
        for group, mapping in (
            ("features", self.features),
            ("predictions", self.predictions),
            ("raw_inputs", self.raw_inputs),
        ):
            for spec in schema.group(group):
                needed.add(identifier((mapping or {}).get(spec.name, spec.name), f"{group} mapping for {spec.name!r}"))
        for name, column in (self.labels or {}).items():
            needed.add(identifier(column, f"labels mapping for {name!r}"))
        return needed

    def _check_columns(self, query: str, needed: set[str]) -> None:
        with self.hook.get_redshift_conn() as conn:
            cursor = conn.cursor()
            cursor.execute(f"SELECT * FROM ({query}) AS source LIMIT 0")
            present = {column[0] for column in cursor.description or []}
        missing = sorted(needed - present)
        if missing:
            raise AirflowFailException(
                f"The {self.dataset} query for {self.model_id} {self.model_version} lacks column(s) "
                f"{', '.join(missing)}; add them to the query or map the fields to existing columns "
                f"(it returns {', '.join(sorted(present))})."
            )


class AporiaConnectServingOperator(AporiaConnectDatasetOperator):
    dataset = "serving"


class AporiaConnectTrainingOperator(AporiaConnectDatasetOperator):
    dataset = "training"


class AporiaConnectTestingOperator(AporiaConnectDatasetOperator):
    dataset = "testing"


class AporiaConnectActualsOperator(AporiaConnectDatasetOperator):
    dataset = "actuals"


class AporiaSyncOperator(_AporiaOperator):
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
        from aporia_provider.extraction.engine import SyncPlan, run_sync, spark_session

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
            partial(self.hook.spark_jdbc_options, self.jdbc_driver),
            self.hook.client,
            lookback=self.lookback,
            dry_run=self.validate_only,
            batch_size=self.batch_size,
            num_partitions=self.num_partitions,
        )
        result = summary.to_dict()
        self.log.info("Sync summary for %s %s: %s", self.model_id, self.model_version, result)
        return result
