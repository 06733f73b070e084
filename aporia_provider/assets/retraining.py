"""Retraining-triggered versions: the version names a run's training events ask for, one per event.

Airflow batches asset events into one run, so a DAG that creates a version per training must read all of a
run's events, not the last one; `trained_version_names` does, for `AporiaCreateModelVersionOperator.partial(...)
.expand(model_version=...)`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from aporia_provider.compat import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Asset, Context

__all__ = ["new_version_name", "trained_version_names"]

log = logging.getLogger(__name__)


class _TrainingEvent(Protocol):
    """What is read of an Airflow asset event (a run's triggering event or an inlet event) that marks a training."""

    @property
    def extra(self) -> Mapping[str, Any] | None: ...

    @property
    def timestamp(self) -> datetime: ...

    @property
    def source_dag_id(self) -> str | None: ...

    @property
    def source_run_id(self) -> str | None: ...


def new_version_name(moment: datetime) -> str:
    """A new, readable version name from a training's moment: ``retrain-20261120-153000.123`` (UTC)."""
    utc = moment.astimezone(timezone.utc)
    # Milliseconds keep two trainings started in the same second apart.
    return f"retrain-{utc:%Y%m%d-%H%M%S}.{utc.microsecond // 1000:03d}"


def trained_version_names(context: Context, asset: Asset, key: str = "model_version") -> list[str]:
    """One version name per training event this run should handle, in event order, each logged.

    Call it from a task that has ``asset`` in its inlets, and expand ``AporiaCreateModelVersionOperator``
    over the result. A version is named by the event's extra under ``key``; an event without one (made in the
    UI or through the REST API, say) gets a new name from its own time, so it never lands on an existing version.
    An asset-triggered run handles every event Airflow gave it; a manual run handles the asset's latest event.
    """
    events = _training_events(context, asset)
    if not events:
        raise AirflowFailException(
            f"No {asset.name} event yet, so no version to create; run the training that emits it first."
        )
    names: list[str] = []
    for number, event in enumerate(events, 1):
        named = (event.extra or {}).get(key)
        name = str(named) if named else new_version_name(event.timestamp)
        source = f"{event.source_dag_id} run {event.source_run_id}" if event.source_dag_id else "the UI or the REST API"
        log.info(
            "Training event %d of %d, from %s at %s: version %s%s.",
            number,
            len(events),
            source,
            event.timestamp.isoformat(),
            name,
            "" if named else f" (the event names no {key!r}, so a new name)",
        )
        names.append(name)
    return names


def _training_events(context: Context, asset: Asset) -> list[_TrainingEvent]:
    """The events of ``asset`` this run handles, oldest first."""
    triggering: list[_TrainingEvent] = sorted(
        context["triggering_asset_events"].get(asset) or [], key=lambda event: event.timestamp
    )
    if not triggering:
        return list(context["inlet_events"][asset].ascending(False).limit(1))
    # Airflow (3.3 at least) gives a run the events up to the moment the run was queued; an event arriving
    # between that moment and the run's creation is given to no run until yet another event comes
    # (apache/airflow#54659), which may be the next retraining, days later. Such events are handled here too:
    # creating a version is idempotent, so the run that eventually receives them only confirms them.
    dag_id = context["dag"].dag_id
    later = context["inlet_events"][asset].after(triggering[-1].timestamp.isoformat())
    waiting = [event for event in later if not any(run.dag_id == dag_id for run in event.created_dagruns)]
    if waiting:
        log.info(
            "%d later %s event(s) are attached to no run of %s yet; handling them in this run too.",
            len(waiting),
            asset.name,
            dag_id,
        )
    return triggering + waiting
