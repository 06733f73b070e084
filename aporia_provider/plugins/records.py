"""The sync view's records: the sync task instances Airflow's metadata holds, with their XComs and earlier tries.

A task instance is a sync when it carries a sync's XCom (`aporia_provider.sync.outcome`): the mark every try
pushes when it starts, or the failure it pushes before it raises; so every AporiaSyncOperator is found, subclasses
and renamed imports included, and no other operator's task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aporia_provider.plugins.windows import EarlierTry, SyncRecord
from aporia_provider.sync.outcome import FAILURE_XCOM_KEY, SUMMARY_XCOM_KEY, SYNC_XCOM_KEY

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SYNC_MARKS = (SYNC_XCOM_KEY, FAILURE_XCOM_KEY)
DEFAULT_LIMIT = 2000


def readable_dag_ids(session: Session, user: Any) -> set[str]:
    """DAGs with sync tasks whose task instances and XComs this user may read."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    with_syncs = set(session.scalars(select(XComModel.dag_id).where(XComModel.key.in_(SYNC_MARKS)).distinct()))
    if not with_syncs:
        return set()
    # A mounted app's request.app is the sub-app, so the auth manager comes from get_auth_manager().
    auth = get_auth_manager()
    allowed = auth.get_authorized_dag_ids(user=user, method="GET", session=session) & with_syncs
    return {
        dag_id
        for dag_id in allowed
        if all(
            auth.is_authorized_dag(method="GET", user=user, access_entity=entity, details=DagDetails(id=dag_id))
            for entity in (DagAccessEntity.TASK_INSTANCE, DagAccessEntity.XCOM)
        )
    }


def read_records(session: Session, dag_ids: Iterable[str], limit: int = DEFAULT_LIMIT) -> list[SyncRecord]:
    """The most recent `limit` sync task instances of `dag_ids`, with their summaries or failures (if any)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rendered
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel
    from sqlalchemy import and_, exists, select
    from sqlalchemy.orm import aliased

    failure_xcom, mark = aliased(XComModel), aliased(XComModel)

    def xcom_of_the_task(xcom: Any, key: str) -> Any:
        return and_(
            xcom.dag_run_id == DagRun.id, xcom.task_id == TI.task_id, xcom.map_index == TI.map_index, xcom.key == key
        )

    dag_ids = list(dag_ids)
    if not dag_ids:
        return []
    statement = (
        select(
            TI.dag_id,
            TI.task_id,
            TI.run_id,
            TI.map_index,
            TI.state,
            TI.try_number,
            TI.start_date,
            TI.end_date,
            TI.duration,
            DagRun.data_interval_start,
            DagRun.data_interval_end,
            XComModel.value,
            failure_xcom.value.label("failure"),
            Rendered.rendered_fields,
        )
        .join(DagRun, and_(DagRun.dag_id == TI.dag_id, DagRun.run_id == TI.run_id))
        # Outer joins: a window that failed before returning a summary is shown all the same.
        .outerjoin(XComModel, xcom_of_the_task(XComModel, SUMMARY_XCOM_KEY))
        .outerjoin(failure_xcom, xcom_of_the_task(failure_xcom, FAILURE_XCOM_KEY))
        .outerjoin(
            Rendered,
            and_(
                Rendered.dag_id == TI.dag_id,
                Rendered.task_id == TI.task_id,
                Rendered.run_id == TI.run_id,
                Rendered.map_index == TI.map_index,
            ),
        )
        .where(
            TI.dag_id.in_(dag_ids),
            exists().where(
                mark.dag_run_id == DagRun.id,
                mark.task_id == TI.task_id,
                mark.map_index == TI.map_index,
                mark.key.in_(SYNC_MARKS),
            ),
        )
        .order_by(DagRun.run_after.desc(), TI.task_id, TI.map_index)
        .limit(limit)
    )
    declared = _Declared(session)
    rows = list(session.execute(statement))
    earlier = _earlier_tries(session, rows)
    records = []
    for row in rows:
        summary = _mapping(XComModel.deserialize_value(row)) if row.value is not None else None
        failure = _mapping(XComModel.deserialize_value(_Value(row.failure))) if row.failure is not None else None
        rendered = _mapping(row.rendered_fields)
        records.append(
            SyncRecord(
                dag_id=row.dag_id,
                task_id=row.task_id,
                run_id=row.run_id,
                map_index=row.map_index,
                state=str(row.state.value if hasattr(row.state, "value") else row.state) if row.state else None,
                try_number=row.try_number or 0,
                start_date=row.start_date,
                end_date=row.end_date,
                duration=row.duration,
                interval_start=row.data_interval_start,
                interval_end=row.data_interval_end,
                summary=summary,
                failure=failure,
                rendered=rendered,
                # Only needed when neither the summary (or failure) nor the rendered fields name the model version.
                declared=None if any(map(_names_version, (summary, failure, rendered))) else declared(row),
                earlier_tries=earlier.get((row.dag_id, row.task_id, row.run_id, row.map_index), ()),
            )
        )
    return records


def _earlier_tries(session: Session, rows: list[Any]) -> dict[tuple[str, str, str, int], tuple[EarlierTry, ...]]:
    """The tries before the latest of these task instances, from Airflow's task instance history, oldest first."""
    from airflow.models.taskinstancehistory import TaskInstanceHistory as TIH
    from sqlalchemy import select

    keys = {(row.dag_id, row.task_id, row.run_id, row.map_index) for row in rows}
    if not keys:
        return {}
    # By DAG, then kept by task instance here: a list of thousands of keys would pass the database's limit on
    # bound parameters.
    statement = (
        select(TIH.dag_id, TIH.task_id, TIH.run_id, TIH.map_index, TIH.try_number, TIH.state)
        .add_columns(TIH.start_date, TIH.end_date)
        .where(TIH.dag_id.in_({key[0] for key in keys}))
        .order_by(TIH.try_number)
    )
    tries: dict[tuple[str, str, str, int], list[EarlierTry]] = {}
    for row in session.execute(statement):
        key = (row.dag_id, row.task_id, row.run_id, row.map_index)
        if key in keys:
            state = str(row.state.value if hasattr(row.state, "value") else row.state) if row.state else None
            tries.setdefault(key, []).append(EarlierTry(row.try_number, state, row.start_date, row.end_date))
    return {key: tuple(earlier) for key, earlier in tries.items()}


@dataclass(frozen=True)
class _Value:
    """An XCom value as XComModel.deserialize_value reads it: from a row's `value`."""

    value: Any


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _names_version(source: Mapping[str, Any] | None) -> bool:
    return bool(source and source.get("model_id") and (source.get("model_version") or source.get("model_versions")))


class _Declared:
    """The model id and version a sync task declares in its (serialized) DAG, cached per task."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    def __call__(self, row: Any) -> dict[str, Any] | None:
        key = (row.dag_id, row.task_id)
        if key not in self.cache:
            self.cache[key] = self._load(*key)
        return self.cache[key]

    def _load(self, dag_id: str, task_id: str) -> dict[str, Any] | None:
        from airflow.models.serialized_dag import SerializedDagModel

        try:
            dag = SerializedDagModel.get_dag(dag_id, session=self.session)
            task = dag.get_task(task_id) if dag else None
        except Exception:  # a DAG that no longer deserializes still has its windows shown
            return None
        if task is None:
            return None
        return {name: getattr(task, name, None) for name in ("model_id", "model_version", "model_versions")}
