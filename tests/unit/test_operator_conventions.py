"""Airflow conventions every operator keeps: documented arguments, renderers, .sql files, templated connections."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

from aporia_provider.operators.aporia import (
    AporiaConnectActualsOperator,
    AporiaConnectDatasetOperator,
    AporiaConnectServingOperator,
    AporiaConnectTestingOperator,
    AporiaConnectTrainingOperator,
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
)
from aporia_provider.operators.base import APORIA_UI_COLOR
from aporia_provider.sensors.aporia import AporiaSyncStatusSensor
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

OPERATORS = [
    AporiaCreateModelOperator,
    AporiaCreateModelVersionOperator,
    AporiaConnectDatasetOperator,
    AporiaConnectServingOperator,
    AporiaConnectTrainingOperator,
    AporiaConnectTestingOperator,
    AporiaConnectActualsOperator,
    AporiaSyncOperator,
    AporiaSyncStatusSensor,
]


def documented(cls: type) -> set[str]:
    """The names of the `:param name:` lines in the class's docstring and its Aporia bases'."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("aporia_provider"):
            for line in (klass.__doc__ or "").splitlines():
                if line.strip().startswith(":param "):
                    names.add(line.strip()[len(":param ") :].split(":", 1)[0])
    return names


def arguments(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("aporia_provider") and "__init__" in vars(klass):
            parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names |= {p.name for p in parameters if p.name != "self" and p.kind != p.VAR_KEYWORD}
    return names


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda cls: cls.__name__)
def test_every_argument_is_documented(cls: type) -> None:
    assert arguments(cls) - documented(cls) == set()


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda cls: cls.__name__)
def test_renderers_name_template_fields_and_the_connections_are_templated(cls: Any) -> None:
    assert set(cls.template_fields_renderers) <= set(cls.template_fields)
    assert "aporia_conn_id" in cls.template_fields
    assert cls.ui_color == APORIA_UI_COLOR
    if "query" in cls.template_fields:
        assert cls.template_fields_renderers["query"] == "sql"
        assert tuple(cls.template_ext) == (".sql",)
        assert {"redshift_conn_id", "aws_conn_id"} <= set(cls.template_fields)
    for mapping in ("features", "predictions", "raw_inputs", "labels", "actuals", "tags"):
        if mapping in cls.template_fields:
            assert cls.template_fields_renderers[mapping] == "json"


def test_a_query_may_live_in_a_sql_file_and_connections_follow_params(tmp_path: Path) -> None:
    (tmp_path / "predictions.sql").write_text("SELECT * FROM {{ params.schema }}.predictions\n")
    params = {"schema": "ml", "env": "staging"}
    with DAG("d", schedule=None, template_searchpath=[str(tmp_path)], params=params) as dag:
        sync = AporiaSyncOperator(
            task_id="sync",
            model_id="fraud",
            model_version="v1",
            query="predictions.sql",
            id_column="id",
            timestamp_column="ts",
            aporia_conn_id="aporia_{{ params.env }}",
            redshift_conn_id="redshift_{{ params.env }}",
        )
    sync.render_template_fields({"params": params, "dag": dag})  # type: ignore[typeddict-item]
    assert sync.query == "SELECT * FROM ml.predictions"
    assert (sync.aporia_conn_id, sync.redshift_conn_id) == ("aporia_staging", "redshift_staging")


def test_a_dag_with_a_sync_can_be_copied_as_airflow_copies_it() -> None:
    """Airflow deep-copies tasks (partial_subset for clearing, backfills, tests); a sync must survive it."""
    with DAG("d", schedule=None) as dag:
        AporiaSyncOperator(
            task_id="sync",
            model_id="fraud",
            model_version="v1",
            query="SELECT 1",
            id_column="id",
            timestamp_column="ts",
        )
    subset = dag.partial_subset(task_ids=["sync"])
    assert copy.deepcopy(subset.task_dict["sync"]).model_id == "fraud"
