"""The sync's Airflow side without Spark: its window for manual runs, its Asset and the `aporia` URI scheme."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG, Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow.timetables.trigger import CronTriggerTimetable

from aporia_provider.assets.aporia import create_asset, model_version_asset
from aporia_provider.compat import AirflowFailException
from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.sql import Window
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator

UTC = timezone.utc
TRIGGERED = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)


def operator(**kwargs: Any) -> AporiaSyncOperator:
    arguments = {"task_id": "sync", "model_id": "fraud", "model_version": "v1", "query": "SELECT 1"}
    return AporiaSyncOperator(id_column="id", timestamp_column="ts", **(arguments | kwargs))


def manual_run(schedule: Any = None, **context: Any) -> dict[str, Any]:
    """The context of a run triggered by hand in Airflow 3 without a logical date: no data interval."""
    dag = DAG("sync", schedule=schedule or CronDataIntervalTimetable("0 * * * *", timezone="UTC"))
    run = SimpleNamespace(run_after=TRIGGERED, run_type="manual")
    return {"dag": dag, "dag_run": run, "data_interval_start": None, "data_interval_end": None} | context


# ---------------------------------------------------------------------------------------------- windows


def test_a_manual_run_syncs_the_last_complete_interval_of_the_timetable() -> None:
    window = operator()._resolve_window(manual_run())
    assert window == Window(datetime(2026, 11, 20, 6, tzinfo=UTC), datetime(2026, 11, 20, 7, tzinfo=UTC))


def test_a_daily_timetable_gives_yesterday() -> None:
    daily = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
    window = operator()._resolve_window(manual_run(daily))
    assert window == Window(datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC))


def test_bounds_typed_into_the_trigger_form_win() -> None:
    # The example DAG renders its params into window_start/window_end; empty means "not given".
    typed = operator(window_start="2026-11-19T22:00:00Z", window_end="2026-11-20T01:00:00+01:00")
    assert typed._resolve_window(manual_run()) == Window(
        datetime(2026, 11, 19, 22, tzinfo=UTC), datetime(2026, 11, 20, 0, tzinfo=UTC)
    )
    empty = operator(window_start="", window_end=" ")
    assert empty._resolve_window(manual_run()).end == datetime(2026, 11, 20, 7, tzinfo=UTC)


def test_a_scheduled_run_keeps_its_data_interval() -> None:
    start, end = datetime(2026, 11, 20, 1, tzinfo=UTC), datetime(2026, 11, 20, 2, tzinfo=UTC)
    context = manual_run(data_interval_start=start, data_interval_end=end)
    assert operator()._resolve_window(context) == Window(start, end)


def test_a_manual_run_of_a_zero_width_timetable_is_refused_with_the_fix() -> None:
    with pytest.raises(SyncInputError) as raised:
        operator()._resolve_window(manual_run(CronTriggerTimetable("0 * * * *", timezone="UTC")))
    assert "zero-width data intervals; schedule the DAG with CronDataIntervalTimetable" in str(raised.value)


def test_outside_a_dag_run_the_bounds_are_needed() -> None:
    with pytest.raises(AirflowFailException) as raised:
        operator().execute({})
    assert str(raised.value) == "window_start is not set; pass it, or run the task in a DAG run with a data interval."


# ---------------------------------------------------------------------------------------------- the Asset


def emitted(sync: AporiaSyncOperator) -> OutletEventAccessors:
    events = OutletEventAccessors()
    window = Window(datetime(2026, 11, 20, 6, tzinfo=UTC), datetime(2026, 11, 20, 7, tzinfo=UTC))
    summary = {"rows_read": 12, "fragments_sent": 12, "actuals_read": 4, "actuals_sent": 3}
    sync._emit_asset({"outlet_events": events}, window, summary)  # type: ignore[typeddict-item]
    return events


EXTRA = {"window_start": "2026-11-20T06:00:00+00:00", "window_end": "2026-11-20T07:00:00+00:00", "rows": 12}


def test_the_sync_describes_its_window_on_the_asset_event() -> None:
    events = emitted(operator())
    assert events[model_version_asset("fraud", "v1")].extra == EXTRA | {"actuals": 3}


def test_templated_ids_reach_the_asset_through_the_alias() -> None:
    sync = operator(model_id="{{ params.model }}", model_version="{{ params.version }}")
    assert isinstance(sync.model_version_outlet, AssetAlias)
    sync.model_id, sync.model_version = "fraud", "v2"  # as rendered at run time
    [event] = emitted(sync)[sync.model_version_outlet].asset_alias_events
    assert event.dest_asset_key.uri == "aporia://models/fraud/versions/v2"
    assert event.extra == EXTRA | {"actuals": 3}


def test_the_aporia_scheme_is_checked_by_airflow() -> None:
    assert create_asset(model_id="fraud/eu", model_version="v 1").uri == "aporia://models/fraud%2Feu/versions/v%201"
    assert Asset(uri="aporia://models/fraud/versions/v1").uri == "aporia://models/fraud/versions/v1"
    for bad in ("aporia://models/fraud", "aporia://fraud/versions/v1", "aporia://models/fraud/versions/v1/x"):
        with pytest.raises(ValueError) as raised:
            Asset(uri=bad)
        assert str(raised.value) == (
            f"Aporia asset URI {bad!r} does not name a model version; use "
            "aporia://models/<model id>/versions/<version> (model_version_asset builds it)."
        )


def test_lookback_does_not_change_the_asset_window() -> None:
    sync = operator(lookback=timedelta(minutes=15))
    assert emitted(sync)[model_version_asset("fraud", "v1")].extra["window_start"] == EXTRA["window_start"]
