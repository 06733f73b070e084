"""The sync view: an Airflow UI plugin showing every synced window per Aporia model version.

A FastAPI app mounted on Airflow's API server at ``/aporia-sync`` plus an entry in the Browse menu. It reads
only Airflow's metadata database: the task instances whose operator is ``AporiaSyncOperator``, their XCom
``return_value`` (the sync summary) or, for a failed try, the failure XCom it pushed, their rendered template
fields and their DAG runs' data intervals. No second store: what Airflow keeps is what the view shows.

Registered through the ``airflow.plugins`` entry point (see pyproject.toml), not the provider info's
``plugins`` list: Airflow reads that list only with ``[core] lazy_discover_providers = False``.

Access follows Airflow's auth manager: every route needs a signed-in user (a Bearer token or the UI's
``_token`` cookie; anonymous requests get 401), and only DAGs whose task instances and XComs the user may
read are shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response

from aporia_provider.plugins.chart import sync_chart
from aporia_provider.plugins.windows import (
    Gap,
    SyncRecord,
    VersionView,
    WindowRow,
    build_views,
    human_duration,
    window_label,
)
from aporia_provider.sync.outcome import FAILURE_XCOM_KEY

if TYPE_CHECKING:
    from jinja2 import Environment
    from sqlalchemy.orm import Session

URL_PREFIX = "/aporia-sync"
OPERATOR = "AporiaSyncOperator"
DEFAULT_LIMIT = 2000
MAX_LIMIT = 50_000

app = FastAPI(
    title="Aporia sync view",
    description="Windows synced from Redshift to Aporia, per model version, from Airflow's metadata.",
    dependencies=[Depends(requires_authenticated())],
    docs_url=None,
    redoc_url=None,
)


def readable_dag_ids(session: Session, user: Any) -> set[str]:
    """DAGs with sync tasks whose task instances and XComs this user may read."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    with_syncs = set(session.scalars(select(TaskInstance.dag_id).where(TaskInstance.operator == OPERATOR).distinct()))
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
    from sqlalchemy import and_, select
    from sqlalchemy.orm import aliased

    failure_xcom = aliased(XComModel)

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
        .outerjoin(XComModel, xcom_of_the_task(XComModel, "return_value"))
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
        .where(TI.operator == OPERATOR, TI.dag_id.in_(dag_ids))
        .order_by(DagRun.run_after.desc(), TI.task_id, TI.map_index)
        .limit(limit)
    )
    declared = _Declared(session)
    records = []
    for row in session.execute(statement):
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
            )
        )
    return records


@dataclass(frozen=True)
class _Value:
    """An XCom value as XComModel.deserialize_value reads it: from a row's `value`."""

    value: Any


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _names_version(source: Mapping[str, Any] | None) -> bool:
    return bool(source and source.get("model_id") and source.get("model_version"))


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
        return {name: getattr(task, name, None) for name in ("model_id", "model_version")}


@cache
def templates() -> Environment:
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(
        loader=PackageLoader("aporia_provider.plugins", "templates"), autoescape=select_autoescape(default=True)
    )
    environment.filters.update(
        duration=human_duration,
        count=lambda value: "—" if value is None else f"{value:,}",
        utc=lambda value: value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—",
    )
    environment.globals.update(window_label=window_label, is_gap=lambda item: isinstance(item, Gap))
    return environment


def render_page(
    views: list[VersionView], *, airflow_base: str, static_base: str, now: datetime, shown_limit: int, records: int
) -> str:
    from markupsafe import Markup

    template = templates().get_template("sync_view.html")
    return template.render(
        # The chart is markup built from escaped parts (chart.py), so it is not escaped again.
        sections=[(view, Markup(sync_chart(view))) for view in views],  # noqa: S704
        airflow_base=airflow_base,
        static_base=static_base,
        now=now,
        truncated=records >= shown_limit,
        limit=shown_limit,
    )


def _select(views: list[VersionView], model_id: str | None, model_version: str | None) -> list[VersionView]:
    return [
        view
        for view in views
        if (model_id is None or view.model_id == model_id)
        and (model_version is None or view.model_version == model_version)
    ]


def _load_views(
    session: Session, user: Any, model_id: str | None, model_version: str | None, limit: int
) -> tuple[list[VersionView], int]:
    records = read_records(session, readable_dag_ids(session, user), limit)
    return _select(build_views(records), model_id, model_version), len(records)


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many of the latest sync task instances to read.")]


@app.get("/", response_class=HTMLResponse)
def sync_view(
    request: Request,
    session: SessionDep,
    user: GetUserDep,
    model_id: str | None = None,
    model_version: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> HTMLResponse:
    views, records = _load_views(session, user, model_id, model_version, limit)
    root = str(request.scope.get("root_path", "")).rstrip("/")
    page = render_page(
        views,
        airflow_base=root.removesuffix(URL_PREFIX),
        static_base=root + "/static",
        now=datetime.now(timezone.utc),
        shown_limit=limit,
        records=records,
    )
    return HTMLResponse(page)


@app.get("/api/windows")
def sync_windows(
    session: SessionDep,
    user: GetUserDep,
    model_id: str | None = None,
    model_version: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """The same data as JSON: per model version its windows (with counts, state, lag) and gaps."""
    views, _ = _load_views(session, user, model_id, model_version, limit)
    return [view_json(view) for view in views]


def view_json(view: VersionView) -> dict[str, Any]:
    def window(row: WindowRow) -> dict[str, Any]:
        return {
            "window_start": row.start.isoformat() if row.start else None,
            "window_end": row.end.isoformat() if row.end else None,
            "state": row.state,
            "dag_id": row.dag_id,
            "task_id": row.task_id,
            "run_id": row.run_id,
            "map_index": row.map_index,
            "rows_read": row.rows_read,
            "fragments_sent": row.fragments_sent,
            "predictions_sent": row.predictions_sent,
            "predictions_reread": row.predictions_reread,
            "actuals_read": row.actuals_read,
            "actuals_sent": row.actuals_sent,
            "actuals_reread": row.actuals_reread,
            "rows_rejected": row.rows_rejected,
            "rejected_examples": list(row.rejected_examples),
            "failure": row.failure,
            "task_retries": row.task_retries,
            "delivery_retries": row.delivery_retries,
            "warnings": row.warnings,
            "seconds": row.seconds,
            "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
            "lag_seconds": row.lag.total_seconds() if row.lag is not None else None,
            "dry_run": row.dry_run,
            "other_syncs": [window(other) for other in row.other_syncs],
        }

    return {
        "model_id": view.model_id,
        "model_version": view.model_version,
        "windows": [window(row) for row in view.windows],
        "gaps": [{"start": gap.start.isoformat(), "end": gap.end.isoformat()} for gap in view.gaps],
        "unplaced": [window(row) for row in view.unplaced],
    }


@app.get("/static/sync_view.css")
def stylesheet() -> Response:
    css = files("aporia_provider.plugins").joinpath("static", "sync_view.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "private, max-age=300"})


class AporiaSyncViewPlugin(AirflowPlugin):
    """The sync view on Airflow's API server, and its entry in the Browse menu."""

    name = "aporia_sync_view"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Aporia sync view"}]  # noqa: RUF012 (AirflowPlugin declares these as class lists)
    external_views = [  # noqa: RUF012
        {
            "name": "Aporia syncs",
            # Relative to Airflow's base URL; shown inside the UI (in an iframe) at /plugin/aporia-sync.
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "aporia-sync",
        }
    ]
