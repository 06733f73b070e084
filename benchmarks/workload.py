"""The benchmark's data: the version schema, the seeded tables and windows, and fragments shaped like its rows.

Shared by the orchestrating benchmark and the sync worker it runs in a subprocess, so both agree on
what is read and where it goes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aporia_provider.extraction.sql import Window, windowed

MODEL_ID = "bench"
VERSION = "v1"
MODEL_TYPE = "binary"
ID_COLUMN = "prediction_id"
TIMESTAMP_COLUMN = "prediction_timestamp"
ACTUALS_TIMESTAMP_COLUMN = "actual_at"
TENSOR_SIZE = 16
FEATURES: dict[str, Any] = {
    "embedding": {"type": "tensor", "dimensions": [TENSOR_SIZE]},
    "amount": "numeric",
    "score": "numeric",
    "tenure_months": "numeric",
    "is_new": "boolean",
    "has_discount": "boolean",
    "owner": "string",
    "channel": "string",
    "segment": "categorical",
    "region": "categorical",
}
PREDICTIONS: dict[str, Any] = {"will_buy": "boolean", "proba": "numeric"}
ACTUALS = {"will_buy": "actual_label"}
CHANNELS = ("web", "mobile", "branch", "partner")


@dataclass(frozen=True)
class Table:
    """One seeded table: `rows` predictions spread evenly over `window`, ids prefixed to stay distinct."""

    name: str
    rows: int
    window: Window
    id_prefix: str

    @property
    def query(self) -> str:
        return f"SELECT * FROM {self.name}"

    def copy_sql(self) -> str:
        # The very derived table the sync pushes down to Redshift, so COPY reads what Spark reads.
        return f"COPY (SELECT * FROM {windowed(self.query, TIMESTAMP_COLUMN, self.window)}) TO STDOUT"

    def seed_sql(self) -> list[str]:
        """Statements that (re)create and fill the table inside PostgreSQL (generate_series, like seed.py).

        Row n sits at start + n * span / rows; every third row gets an actual that arrives later in the
        same window (half-way between its prediction and the window's end).
        """
        start = self.window.start.isoformat()
        span = (self.window.end - self.window.start).total_seconds()
        offset = f"(n * {span} / {self.rows})"
        tensor = ", ".join(f"((n * 31 + {d * 17}) % 1000) / 1000.0" for d in range(1, TENSOR_SIZE + 1))
        channels = ", ".join(f"'{c}'" for c in CHANNELS)
        return [
            f"DROP TABLE IF EXISTS {self.name}",
            f"""CREATE TABLE {self.name} (
                {ID_COLUMN} VARCHAR(64) NOT NULL,
                {TIMESTAMP_COLUMN} TIMESTAMPTZ NOT NULL,
                embedding REAL[],
                amount DOUBLE PRECISION,
                score DOUBLE PRECISION,
                tenure_months INTEGER,
                is_new BOOLEAN,
                has_discount BOOLEAN,
                owner VARCHAR(64),
                channel VARCHAR(16),
                segment INTEGER,
                region INTEGER,
                will_buy BOOLEAN,
                proba DOUBLE PRECISION,
                actual_label BOOLEAN,
                {ACTUALS_TIMESTAMP_COLUMN} TIMESTAMPTZ
            )""",
            # bigint n: n * 7919 overflows int4 at 10M rows.
            f"""INSERT INTO {self.name}
            SELECT
                '{self.id_prefix}' || lpad(n::text, 10, '0'),
                '{start}'::timestamptz + {offset} * interval '1 second',
                ARRAY[{tensor}]::real[],
                round((100 + (n * 7919) % 10000 / 10.0)::numeric, 2)::float8,
                ((n * 37) % 1000) / 1000.0,
                (n % 120)::int,
                n % 5 = 0,
                n % 7 = 0,
                'owner-' || (n % 17),
                (ARRAY[{channels}])[1 + n % {len(CHANNELS)}],
                (n % 8)::int,
                (n % 50)::int,
                n % 2 = 0,
                ((n * 53) % 1000) / 1000.0,
                CASE WHEN n % 3 = 0 THEN n % 4 = 0 END,
                CASE WHEN n % 3 = 0
                    THEN '{start}'::timestamptz + (({offset} + {span}) / 2) * interval '1 second' END
            FROM generate_series(0::bigint, {self.rows - 1}) AS n""",
        ]

    def sync_arguments(self) -> dict[str, Any]:
        """AporiaSyncOperator arguments for this table's window (spark settings are added by the caller)."""
        return {
            "task_id": f"sync_{self.name}",
            "model_id": MODEL_ID,
            "model_version": VERSION,
            "query": self.query,
            "id_column": ID_COLUMN,
            "timestamp_column": TIMESTAMP_COLUMN,
            "actuals": ACTUALS,
            "actuals_timestamp_column": ACTUALS_TIMESTAMP_COLUMN,
            "window_start": self.window.start.isoformat(),
            "window_end": self.window.end.isoformat(),
        }


def big_table(rows: int) -> Table:
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    return Table("bench_predictions", rows, Window(start, start + timedelta(days=1)), "bench-")


SMALL_TABLE = Table(
    "bench_predictions_small",
    1000,
    Window(datetime(2026, 11, 22, tzinfo=timezone.utc), datetime(2026, 11, 22, 1, tzinfo=timezone.utc)),
    "small-",
)


def fragment_json(n: int, id_prefix: str) -> str:
    """A prediction fragment for row n, as the sync's Spark tasks serialise it (same keys, types, formats)."""
    occurred_at = SMALL_TABLE.window.start + timedelta(seconds=n % 3600)
    fragment = {
        "id": f"{id_prefix}{n:010d}",
        "features": {
            "embedding": [((n * 31 + d * 17) % 1000) / 1000.0 for d in range(1, TENSOR_SIZE + 1)],
            "amount": round(100 + (n * 7919) % 10000 / 10.0, 2),
            "score": ((n * 37) % 1000) / 1000.0,
            "tenure_months": float(n % 120),  # numeric fields are cast to double by the sync
            "is_new": n % 5 == 0,
            "has_discount": n % 7 == 0,
            "owner": f"owner-{n % 17}",
            "channel": CHANNELS[n % len(CHANNELS)],
            "segment": n % 8,
            "region": n % 50,
        },
        "predictions": {"will_buy": n % 2 == 0, "proba": ((n * 53) % 1000) / 1000.0},
        "occurredAt": occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),  # Spark's XXX pattern writes UTC as Z
    }
    return json.dumps(fragment, separators=(",", ":"))
