"""Operators that register models and versions in Aporia and connect their data sets to Redshift.

The sync of prediction windows is a transfer: `aporia_provider.transfers.redshift_to_aporia`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from warnings import warn

from aporia_provider.compat import AirflowFailException
from aporia_provider.extraction.layout import mapped_fields
from aporia_provider.extraction.sql import derived, single_statement
from aporia_provider.links.aporia import AporiaModelVersionLink
from aporia_provider.operators.base import (
    ALL_CONNECTIONS,
    APORIA_CONNECTION,
    AporiaBaseOperator,
    model_version_asset,
)
from aporia_provider.redshift import identifier
from aporia_provider.schema import VersionSchema, check_model_type

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

    from aporia_provider.datasources import JDBCDataSource

__all__ = [
    "AporiaConnectActualsOperator",
    "AporiaConnectDatasetOperator",
    "AporiaConnectServingOperator",
    "AporiaConnectTestingOperator",
    "AporiaConnectTrainingOperator",
    "AporiaCreateModelOperator",
    "AporiaCreateModelVersionOperator",
    "model_version_asset",
]


class AporiaCreateModelOperator(AporiaBaseOperator):
    """Create a model in Aporia; an existing model with the same id is left as it is.

    :param model_id: the model's id in Aporia (templated).
    :param model_name: its display name; defaults to the id (templated).
    :param description: a description shown in Aporia (templated).
    :param model_owner: the model's owner in Aporia, e.g. an e-mail address (templated; not ``owner``, which is
        the Airflow task's owner).
    :param color: the model's color in Aporia's UI; Aporia's SDK default ``blue`` when not given.
    :param icon: the model's icon in Aporia's UI; the SDK default ``general`` when not given.
    :param tags: string tags, name -> value (templated).
    """

    template_fields: Sequence[str] = (
        "model_id",
        "model_name",
        "description",
        "model_owner",
        "tags",
        *APORIA_CONNECTION,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"tags": "json"}

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
        created = self.aporia_hook.create_model(
            self.model_id,
            self.model_name or self.model_id,
            description=self.description,
            owner=self.model_owner,
            color=self.color,
            icon=self.icon,
            tags=self.tags,
        )
        return {"model_id": self.model_id, "created": created}


class AporiaCreateModelVersionOperator(AporiaBaseOperator):
    """Create a model version, idempotently.

    The same name with the same schema is already done. The same name with another schema fails with
    the differing fields, or, with ``on_schema_change="new_version"``, creates (or reuses) the first free
    name ``<version>-2``, ``<version>-3``, ... The version actually used is returned to XCom.

    :param model_id: the model's id in Aporia (templated).
    :param model_version: the version's name (templated).
    :param model_type: ``regression``, ``binary``, ``multiclass``, ``multi-label`` or ``ranking`` (templated).
    :param features: feature name -> field type (``numeric``, ``categorical``, ``string``, ``boolean``,
        ``datetime``, ``vector``, ``text``, ``dict``) or ``{"type": "tensor", "dimensions": [...]}`` (templated).
    :param predictions: prediction name -> field type, as for features (templated).
    :param raw_inputs: raw input name -> field type, as for features (templated).
    :param feature_importance: feature name -> importance, shown in Aporia.
    :param on_schema_change: what an existing version with another schema means: ``fail`` (default) or
        ``new_version`` (the first free ``<version>-N``).
    """

    template_fields: Sequence[str] = (
        "model_id",
        "model_version",
        "model_type",
        "features",
        "predictions",
        "raw_inputs",
        *APORIA_CONNECTION,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "features": "json",
        "predictions": "json",
        "raw_inputs": "json",
    }
    operator_extra_links = (AporiaModelVersionLink(),)

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
        # The version actually used (another name with on_schema_change="new_version"), for the extra link.
        self.linked_model_version: str | None = None

    def run(self, context: Context) -> dict[str, Any]:
        check_model_type(self.model_type)
        wanted = VersionSchema.parse(self.features, self.predictions, self.raw_inputs)
        name, attempt = self.model_version, 1
        while (existing := self.aporia_hook.get_model_version_schema(self.model_id, name)) is not None:
            differences = existing.differences(wanted)
            if not differences:
                self.log.info("Version %s of %s already exists with this schema; nothing to do.", name, self.model_id)
                self.linked_model_version = name
                return {"model_id": self.model_id, "model_version": name, "created": False}
            if self.on_schema_change == "fail":
                raise AirflowFailException(
                    f"Version {name!r} of {self.model_id!r} already exists with another schema "
                    f"({'; '.join(differences)}); use a new version name or on_schema_change='new_version'."
                )
            attempt += 1
            name = f"{self.model_version}-{attempt}"
        self.aporia_hook.create_model_version(
            self.model_id,
            name,
            self.model_type,
            features=self.features,
            predictions=self.predictions,
            raw_inputs=self.raw_inputs,
            feature_importance=self.feature_importance,
        )
        self.linked_model_version = name
        return {"model_id": self.model_id, "model_version": name, "created": True}


class AporiaConnectDatasetOperator(AporiaBaseOperator):
    """Connect a data set of a model version to Redshift (or to a given data source).

    By default the data source is the IAM JDBC URL built from the Redshift and AWS connections. Before
    Aporia is called, a ``LIMIT 0`` of the query checks that the id, timestamp and every mapped column exist.

    :param model_id: the model's id in Aporia (templated).
    :param model_version: the version whose data set this is (templated).
    :param query: the SELECT Aporia reads the data set with, or a path to a ``.sql`` file (templated).
    :param id_column: the column holding each prediction's id (templated).
    :param timestamp_column: the column holding each prediction's timestamp (templated).
    :param data_source: a data source to connect instead of the Redshift IAM JDBC URL (the query must be in it).
    :param features: feature name -> column, where they differ; other features read same-named columns
        (templated).
    :param predictions: prediction name -> column, likewise (templated).
    :param labels: prediction name -> column of its actual (label) (templated).
    :param raw_inputs: raw input name -> column, likewise (templated).
    :param select_expr: Spark SQL expressions Aporia applies to the rows before mapping (templated).
    :param read_options: extra JDBC read options for Aporia's reader.
    :param schedule: a cron expression for Aporia's own sync of the data set (templated).
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
        *ALL_CONNECTIONS,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "query": "sql",
        "features": "json",
        "predictions": "json",
        "labels": "json",
        "raw_inputs": "json",
        "select_expr": "json",
    }
    template_ext: Sequence[str] = (".sql",)
    operator_extra_links = (AporiaModelVersionLink(),)
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
            url=self.redshift_hook.iam_jdbc_url(),
            query=query,
            select_expr=self.select_expr,
            read_options=dict(self.read_options) if self.read_options else None,
        )
        self.aporia_hook.connect_dataset(
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

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the Redshift tables the data set's query reads, and the Aporia model version it feeds.
        A data source passed in (not the Redshift connection) has no Redshift input to name."""
        from aporia_provider.lineage import aporia_dataset, warehouse_lineage

        output = aporia_dataset(self.aporia_hook, self.model_id, self.model_version)
        queries = [] if self.data_source is not None else [single_statement(self.query)]
        return warehouse_lineage(self.redshift_hook.warehouse(), queries, [output])

    def _needed_columns(self, schema: VersionSchema) -> set[str]:
        needed = {identifier(self.id_column, "id_column"), identifier(self.timestamp_column, "timestamp_column")}
        mappings = {"features": self.features, "predictions": self.predictions, "raw_inputs": self.raw_inputs}
        for group, spec, column in mapped_fields(schema.group, {g: m or {} for g, m in mappings.items()}):
            needed.add(identifier(column, f"{group} mapping for {spec.name!r}"))
        for name, column in (self.labels or {}).items():
            needed.add(identifier(column, f"labels mapping for {name!r}"))
        return needed

    def _check_columns(self, query: str, needed: set[str]) -> None:
        with self.redshift_hook.get_conn() as conn:
            cursor = conn.cursor()
            cursor.execute(f"SELECT * FROM {derived(query)} LIMIT 0")
            present = {column[0] for column in cursor.description or []}
        missing = sorted(needed - present)
        if missing:
            raise AirflowFailException(
                f"The {self.dataset} query for {self.model_id} {self.model_version} lacks column(s) "
                f"{', '.join(missing)}; add them to the query or map the fields to existing columns "
                f"(it returns {', '.join(sorted(present))})."
            )


class AporiaConnectServingOperator(AporiaConnectDatasetOperator):
    """Connect the serving data set of a model version; the arguments are AporiaConnectDatasetOperator's."""

    dataset = "serving"


class AporiaConnectTrainingOperator(AporiaConnectDatasetOperator):
    """Connect the training data set of a model version; the arguments are AporiaConnectDatasetOperator's."""

    dataset = "training"


class AporiaConnectTestingOperator(AporiaConnectDatasetOperator):
    """Connect the testing data set of a model version; the arguments are AporiaConnectDatasetOperator's."""

    dataset = "testing"


class AporiaConnectActualsOperator(AporiaConnectDatasetOperator):
    """Connect the actuals data set of a model version; the arguments are AporiaConnectDatasetOperator's."""

    dataset = "actuals"


def __getattr__(name: str) -> Any:
    # AporiaSyncOperator lived here until 0.2.0; the old path keeps working for one release. `warn` is bound
    # by name: Airflow's operator metaclass swaps this module's `warnings` for one that shifts stacklevel.
    if name == "AporiaSyncOperator":
        from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

        warn(
            "Import AporiaSyncOperator from aporia_provider.transfers.redshift_to_aporia; "
            "aporia_provider.operators.aporia stops providing it in 0.3.0.",
            DeprecationWarning,
            stacklevel=2,
        )
        return AporiaSyncOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
