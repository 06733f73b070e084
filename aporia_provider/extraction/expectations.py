"""What a window must meet before anything is sent: the invalid-row limit, and the fewest predictions expected."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from aporia_provider.exceptions import InvalidRowsError, SyncFailed
from aporia_provider.extraction.layout import MAX_EXAMPLES
from aporia_provider.extraction.options import SyncOptions
from aporia_provider.extraction.plan import SyncPlan
from aporia_provider.sync.outcome import SyncSummary

log = logging.getLogger(__name__)


class Judged(Protocol):
    """A source's window, read and judged: what the limits look at."""

    kind: str
    rows: int
    rejected: int
    reread: int  # rows that pass, read only for the lookback
    examples: list[str]


def judge_window(summary: SyncSummary, plan: SyncPlan, options: SyncOptions, checked: Sequence[Judged]) -> None:
    """Fill in what was read; fail before anything is sent when rows are invalid and the policy says so."""
    by_kind = {rows.kind: rows for rows in checked}
    summary.rows_read = by_kind["predictions"].rows
    summary.actuals_read = by_kind["actuals"].rows if "actuals" in by_kind else 0
    summary.rows_rejected = sum(rows.rejected for rows in checked)
    summary.rejected_examples = [e for rows in checked for e in rows.examples][:MAX_EXAMPLES]
    if not summary.rows_rejected:
        return
    invalid = "1 invalid row" if summary.rows_rejected == 1 else f"{summary.rows_rejected:,} invalid rows"
    # A window's own rows, each source apart: the lookback's re-reads were judged in their own window already.
    own = {rows.kind: rows.rows - rows.reread for rows in checked}
    message = (
        f"{invalid} of {sum(own.values()):,} (e.g. {'; '.join(summary.rejected_examples)}) "
        f"in the window of {plan.model_id} {plan.model_version}"
    )
    if options.on_invalid_rows == "skip":
        log.warning("%s; skipping them as on_invalid_rows='skip' asks.", message)
        return
    if isinstance(options.max_invalid_rows, float):
        allowed = {rows.kind: options.invalid_rows_allowed(own[rows.kind]) or 0 for rows in checked}
        over = any(rows.rejected > allowed[rows.kind] for rows in checked)
        allowance = ", ".join(f"{allowed[kind]:,} of the {own[kind]:,} {kind}" for kind in own)
    else:
        limit = options.max_invalid_rows or 0
        over, allowance = summary.rows_rejected > limit, f"{limit:,}"
    if over:
        if options.max_invalid_rows is None:
            fix = "fix the rows or the mapping, or pass on_invalid_rows='skip'"
        else:
            limit_text = f"max_invalid_rows={options.max_invalid_rows!r}"
            fix = f"more than {limit_text} allows ({allowance}): fix the rows or the mapping"
        raise InvalidRowsError(f"{message}; nothing was sent: {fix}.")
    log.warning("%s; left out, within max_invalid_rows=%r (%s).", message, options.max_invalid_rows, allowance)


def expect_volume(summary: SyncSummary, subject: str, options: SyncOptions) -> None:
    """Turn a window with fewer predictions than min_rows (a silent upstream outage) into a failure or a warning."""
    summary.min_rows = options.min_rows
    if options.min_rows is None or summary.predictions_in_window >= options.min_rows:
        return
    summary.low_volume = True
    found = "No predictions" if not summary.predictions_in_window else f"Only {summary.predictions_in_window:,}"
    message = (
        f"{found} in the window [{summary.window_start}, {summary.window_end}) of {subject}, fewer than "
        f"min_rows={options.min_rows:,}: check that the upstream job wrote this window's predictions"
    )
    if options.on_low_volume == "fail":
        raise SyncFailed(f"{message}; nothing was sent (on_low_volume='warn' would send what there is).")
    log.warning("%s; sending what there is, as on_low_volume='warn' asks.", message)
