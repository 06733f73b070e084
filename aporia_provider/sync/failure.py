"""A failed sync's report: one ERROR line saying why and what happens next, its metrics and its failure XCom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aporia_provider.compat import AirflowFailException
from aporia_provider.exceptions import InputError, SyncStopped
from aporia_provider.metrics import emit_sync_metrics
from aporia_provider.sync.outcome import FAILURE_XCOM_KEY
from aporia_provider.sync.versions import version_records

if TYPE_CHECKING:
    from aporia_provider.sync import TaskLog


def report_failure(exc: Exception, ti: Any, record: dict[str, Any], connections: Sequence[str], log: TaskLog) -> None:
    """Say why the sync failed, in the task's log (one ERROR line), its metrics and its failure XCom (where the sync
    view reads it); `record` names the model version and holds the summary's counts so far (or, for a sync of several
    versions, each version's: `sync.versions`)."""
    sentence = str(exc) or type(exc).__name__
    then = next_step(exc, ti, connections)
    log.error("%s", f"{sentence.rstrip('.')}. {then}" if then else sentence)
    for version, counts in version_records(record):  # each version's, for a sync of several
        emit_sync_metrics(record["model_id"], version, counts, failed=True, lag=None)
    if ti is None:  # run outside a task instance (a test, a script): no XCom to push to
        return
    record |= {"error": sentence, "next_step": then, "try_number": ti.try_number}
    try:
        ti.xcom_push(key=FAILURE_XCOM_KEY, value=record)
    except Exception as push_error:  # the failure itself matters more: it is raised all the same
        log.warning("Could not record the failure for the sync view: %s", push_error)


def next_step(exc: Exception, ti: Any, connections: Sequence[str]) -> str:
    """What happens next and what to check, for a failure a later try can fix; nothing for bad input, which the
    sentence itself says how to fix (Airflow does not retry it)."""
    if isinstance(exc, InputError | AirflowFailException | SyncStopped):
        return ""
    check = f"check what the error names and the connections {', '.join(connections)}"
    if ti is None:
        return f"A later try can succeed; if it keeps failing, {check}."
    tries = f"try {ti.try_number} of up to {ti.max_tries + 1}"
    if ti.try_number <= ti.max_tries:
        return f"Airflow will retry the task ({tries}); if it keeps failing, {check}."
    return (
        f"That was the last try ({tries}): {check}, then clear the task to run it again (delivery is "
        "idempotent: nothing is duplicated)."
    )
