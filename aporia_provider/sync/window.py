"""Which window a sync task covers: the bounds it was given, else its run's data interval, else its timetable's."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from aporia_provider.extraction.sql import Window

if TYPE_CHECKING:
    from airflow.sdk import Context

    from aporia_provider.sync import TaskLog


def window_of_run(
    context: Context, window_start: str | datetime | None, window_end: str | datetime | None, log: TaskLog
) -> Window:
    """The window of this run: ``window_start``/``window_end`` where given, else the run's data interval, else
    (a run without one: a manual trigger in Airflow 3, which has no logical date) the last complete interval
    of the DAG's timetable before the run was triggered."""
    start: datetime | str | None = given(window_start) or context.get("data_interval_start")
    end: datetime | str | None = given(window_end) or context.get("data_interval_end")
    if start is None or end is None:
        interval = last_complete_interval(context)
        if interval is not None:
            start, end = start or interval[0], end or interval[1]
            log.info(
                "This run has no data interval (a manual trigger without a logical date): syncing the last "
                "complete interval of the DAG's timetable before %s.",
                context["dag_run"].run_after.isoformat(),
            )
    return Window.of(start, end)


def given(bound: str | datetime | None) -> str | datetime | None:
    """A bound typed by a person or rendered from a template; empty means not given."""
    if not isinstance(bound, str):
        return bound
    if not bound.strip():
        return None
    bound = bound.strip()
    # ISO-8601's "Z" for UTC, as browsers write it (Python 3.10's fromisoformat does not read it).
    return bound[:-1] + "+00:00" if bound.endswith("Z") else bound


def last_complete_interval(context: Context) -> tuple[datetime, datetime] | None:
    """What the DAG's timetable would give a manual run with a logical date: for an interval timetable, the last
    complete interval before the run. None when there is no DAG run or the timetable cannot say."""
    import pendulum

    dag, dag_run = context.get("dag"), context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None)
    if dag is None or run_after is None:
        return None
    timetable: Any = dag.timetable
    if not hasattr(timetable, "infer_manual_data_interval"):
        # Airflow >= 3.2 gives DAG files the Task SDK's timetables; the scheduler's own (core) ones know intervals.
        try:
            from airflow.serialization.encoders import coerce_to_core_timetable
        except ImportError:
            return None
        timetable = coerce_to_core_timetable(timetable)
    try:
        interval = timetable.infer_manual_data_interval(run_after=pendulum.instance(run_after))
    except NotImplementedError:
        return None
    return interval.start, interval.end
