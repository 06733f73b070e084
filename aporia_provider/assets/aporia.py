"""The `aporia` Asset scheme: fresh data for one Aporia model version.

``aporia://models/<model id>/versions/<version>`` (each part percent-encoded), named ``aporia/<model id>/<version>``.
A sync emits it with the extra ``{window_start, window_end, rows, actuals}``; a DAG can schedule on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from airflow.sdk import Asset, AssetAlias

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from aporia_provider.extraction.sql import Window


def create_asset(*, model_id: str, model_version: str, extra: dict[str, Any] | None = None) -> Asset:
    """The Asset of a model version (the factory Airflow finds through the provider info)."""
    uri = f"aporia://models/{quote(model_id, safe='')}/versions/{quote(model_version, safe='')}"
    return Asset(name=f"aporia/{model_id}/{model_version}", uri=uri, extra=extra or {})


def model_version_asset(model_id: str, model_version: str) -> Asset:
    """The Asset a DAG can schedule on: fresh data for one Aporia model version."""
    return create_asset(model_id=model_id, model_version=model_version)


def sync_outlet(model_id: str, model_version: str, dag_id: str, task_id: str) -> Asset | AssetAlias:
    """The outlet a sync task declares: the model version's Asset; when the ids are templates (known only at run
    time), an alias the run resolves to the Asset."""
    if any("{{" in value for value in (model_id, model_version)):
        return AssetAlias(name=f"aporia-sync/{dag_id}/{task_id}")
    return model_version_asset(model_id, model_version)


def sync_outlets(model_id: str, versions: Sequence[str], dag_id: str, task_id: str) -> list[Asset | AssetAlias]:
    """The outlets of a sync task serving these versions: each one's Asset, or their one alias when ids are
    templates."""
    outlets: list[Asset | AssetAlias] = []
    for version in versions:
        outlet = sync_outlet(model_id, version, dag_id, task_id)
        if outlet not in outlets:
            outlets.append(outlet)
    return outlets


def describe_sync_events(
    events: Any,
    outlet: Asset | AssetAlias,
    model_id: str,
    window: Window,
    versions: Sequence[tuple[str, Mapping[str, Any]]],
) -> None:
    """Put each version's description on its Asset event (through `outlet` when it is the alias of them)."""
    for version, summary in versions:
        target = outlet if isinstance(outlet, AssetAlias) else model_version_asset(model_id, version)
        describe_sync_event(events, target, model_id, version, window, summary)


def describe_sync_event(
    events: Any,
    outlet: Asset | AssetAlias,
    model_id: str,
    model_version: str,
    window: Window,
    summary: Mapping[str, Any],
) -> None:
    """Put a sync's description (its window and what reached Aporia) on the outlet's Asset event."""
    extra = {
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "rows": summary.get("fragments_sent", 0),
        "actuals": summary.get("actuals_sent", 0),
    }
    if isinstance(outlet, AssetAlias):
        events[outlet].add(model_version_asset(model_id, model_version), extra=extra)
    else:
        events[outlet].extra = extra


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Check an ``aporia://`` Asset URI names one model version."""
    parts = uri.path.split("/")
    if uri.netloc != "models" or len(parts) != 4 or parts[0] or parts[2] != "versions" or not all(parts[1::2]):
        raise ValueError(
            f"Aporia asset URI {uri.geturl()!r} does not name a model version; use "
            "aporia://models/<model id>/versions/<version> (model_version_asset builds it)."
        )
    if any(unquote(part) != part and quote(unquote(part), safe="") != part for part in parts[1::2]):
        raise ValueError(f"Aporia asset URI {uri.geturl()!r} is not percent-encoded as model_version_asset does.")
    return uri
