"""A sync's figures as Airflow metrics: Airflow's own `Stats`, so StatsD or OpenTelemetry as `[metrics]` configures.

Each figure goes out twice, as Airflow does with its own metrics: under one name with the model version as tags
(`model_id`, `model_version`; for DogStatsD, InfluxDB-style StatsD and OpenTelemetry), and under a name holding
the model version (for plain StatsD, which has no tags). Prefixed with `[metrics] statsd_prefix` (`airflow.`):

- ``aporia.sync.rows_read``: predictions read, the lookback's included (counter)
- ``aporia.sync.fragments_sent``: predictions delivered to Aporia, the lookback's included (counter)
- ``aporia.sync.rows_rejected``: rows that did not fit the schema, predictions and actuals (counter)
- ``aporia.sync.actuals_sent``: actuals delivered, the lookback's included (counter)
- ``aporia.sync.failed``: syncs that failed (counter)
- ``aporia.sync.lag_seconds``: when a sync ends, seconds since its window's end (gauge)
- ``aporia.sync.duration``: how long the sync took (timer, milliseconds)

and ``aporia.sync.<model_id>.<model_version>.<figure>`` likewise. The counters are the summary's figures of the same
names (`aporia_provider.sync.outcome`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from aporia_provider.compat import Stats
from aporia_provider.sync.outcome import COUNTED_FIGURES, DURATION_METRIC, FAILED_METRIC, LAG_METRIC, METRIC_PREFIX


def name_part(value: str) -> str:
    """A model id or version as one part of a metric name: StatsD's characters only, and no dot, which would start
    a new level (Airflow writes a task group's dot as `__` the same way)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", value.replace(".", "__"))


def emit_sync_metrics(
    model_id: str, model_version: str, summary: Mapping[str, Any], failed: bool, lag: timedelta | None
) -> None:
    """The summary's figures (a failed sync's: its counts so far), and its lag when it delivered its window."""
    tags = {"model_id": model_id, "model_version": model_version}
    named = f"{METRIC_PREFIX}.{name_part(model_id)}.{name_part(model_version)}"
    for figure in COUNTED_FIGURES:
        count = int(summary.get(figure) or 0)
        Stats.incr(f"{METRIC_PREFIX}.{figure}", count, tags=tags)
        Stats.incr(f"{named}.{figure}", count)
    if failed:
        Stats.incr(f"{METRIC_PREFIX}.{FAILED_METRIC}", 1, tags=tags)
        Stats.incr(f"{named}.{FAILED_METRIC}", 1)
    if lag is not None:
        Stats.gauge(f"{METRIC_PREFIX}.{LAG_METRIC}", lag.total_seconds(), tags=tags)
        Stats.gauge(f"{named}.{LAG_METRIC}", lag.total_seconds())
    duration = timedelta(seconds=float(summary.get("seconds") or 0))
    Stats.timing(f"{METRIC_PREFIX}.{DURATION_METRIC}", duration, tags=tags)
    Stats.timing(f"{named}.{DURATION_METRIC}", duration)
