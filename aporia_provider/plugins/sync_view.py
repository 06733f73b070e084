"""The sync view: an Airflow UI plugin showing every synced window per Aporia model version.

A FastAPI app mounted on Airflow's API server at ``/aporia-sync`` plus an entry in the Browse menu. It reads
only Airflow's metadata database (`records.py`): the sync task instances, found by the XCom every sync pushes,
their XCom ``return_value`` (the sync summary) or, for a failed try, the failure XCom it pushed, their earlier
tries (Airflow's task instance history), their rendered template fields and their DAG runs' data intervals. No
second store: what Airflow keeps is what the view shows.

Registered through the ``airflow.plugins`` entry point (see pyproject.toml), not the provider info's
``plugins`` list: Airflow reads that list only with ``[core] lazy_discover_providers = False``.

Access follows Airflow's auth manager: every route needs a signed-in user (a Bearer token or the UI's
``_token`` cookie; anonymous requests get 401), and only DAGs whose task instances and XComs the user may
read are shown.
"""

from __future__ import annotations

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
from aporia_provider.plugins.records import DEFAULT_LIMIT, read_records, readable_dag_ids
from aporia_provider.plugins.timeline import build_views
from aporia_provider.plugins.windows import Gap, VersionView, WindowRow, human_duration, window_label

if TYPE_CHECKING:
    from jinja2 import Environment
    from sqlalchemy.orm import Session

URL_PREFIX = "/aporia-sync"
MAX_LIMIT = 50_000

app = FastAPI(
    title="Aporia sync view",
    description="Windows synced from Redshift to Aporia, per model version, from Airflow's metadata.",
    dependencies=[Depends(requires_authenticated())],
    docs_url=None,
    redoc_url=None,
)


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


# The summary's figures a window row carries, by the summary's names.
FIGURES = (
    "rows_read",
    "fragments_sent",
    "predictions_in_window",
    "predictions_reread",
    "actuals_read",
    "actuals_sent",
    "actuals_in_window",
    "actuals_reread",
    "rows_rejected",
    "min_rows",
    "low_volume",
    "retries",
    "warnings",
    "seconds",
    "dry_run",
)


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
            "try_number": row.try_number,
            **{figure: getattr(row, figure) for figure in FIGURES},
            "rejected_examples": list(row.rejected_examples),
            "logged_warnings": list(row.logged_warnings),
            "failure": row.failure,
            "task_retries": row.task_retries,
            "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
            "lag_seconds": row.lag.total_seconds() if row.lag is not None else None,
            "overlaps": [{"start": start.isoformat(), "end": end.isoformat()} for start, end in row.overlaps],
            "other_syncs": [window(other) for other in row.other_syncs],
        }

    return {
        "model_id": view.model_id,
        "model_version": view.model_version,
        "windows": [window(row) for row in view.windows],
        "overlapping": [window(row) for row in view.overlapping],
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
