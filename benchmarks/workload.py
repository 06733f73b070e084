"""The benchmark's data: two version schemas, the seeded tables and windows, and fragments shaped like rows.

Shared by the orchestrating benchmark and the workers it runs in subprocesses (the sync, the hand-written
loop), so all agree on what is read and where it goes.

Two shapes, both with their vectors in SUPER columns (JSON text, as Redshift keeps them and as the
Redshift stand-in serves them):

- `SHAPE_16`: ten features around a 16-dim `embedding` tensor, two predictions, one delayed actual;
- `SHAPE_768`: the seed's schema (aporia_local.seed, dags/insurance_model.py): a raw input, three
  features and a 768-dim `embeddings` tensor, two predictions, one delayed actual.

Every table spreads its rows evenly over its window; every third row has an actual that arrives later in
the same window, so the sync (and the loop) read rows/3 actuals by the actual's own timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from aporia_provider.extraction.sql import Window, windowed

MODEL_ID = "bench"
MODEL_TYPE = "binary"
ID_COLUMN = "prediction_id"
TIMESTAMP_COLUMN = "prediction_timestamp"
CHANNELS = ("web", "mobile", "branch", "partner")


def _super_vector(size: int) -> str:
    """SQL building row n's vector as SUPER (JSON text): element d is ((n * 31 + d * 17) % 1000) / 1000."""
    # float8 to jsonb keeps at most 15 significant digits: 0.031, not 0.031000000000000000.
    return (
        f"to_jsonb(ARRAY(SELECT (((n * 31 + d * 17) % 1000) / 1000.0)::float8 "
        f"FROM generate_series(1, {size}) AS d))::super"
    )


@dataclass(frozen=True)
class Shape:
    """A model version's schema and the table layout that feeds it (columns named as its fields)."""

    label: str
    version: str
    dimensions: int
    features: dict[str, Any]
    predictions: dict[str, Any]
    raw_inputs: dict[str, Any]
    actuals: dict[str, str]  # prediction field -> column of its actual
    actuals_timestamp_column: str
    # (column, SQL type, SELECT expression over n, the row number) of the prediction columns, in order.
    columns: tuple[tuple[str, str, str], ...]
    actual_value: str = "n % 4 = 0"

    @property
    def vector_field(self) -> str:
        return next(name for name, spec in self.features.items() if isinstance(spec, dict))

    def fields(self) -> dict[str, list[str]]:
        """Field names by fragment group (the columns of the same names hold them)."""
        return {
            "features": list(self.features),
            "predictions": list(self.predictions),
            "rawInputs": list(self.raw_inputs),
        }


SHAPE_16 = Shape(
    label="16-dim",
    version="v16",
    dimensions=16,
    features={
        "embedding": {"type": "tensor", "dimensions": [16]},
        "amount": "numeric",
        "score": "numeric",
        "tenure_months": "numeric",
        "is_new": "boolean",
        "has_discount": "boolean",
        "owner": "string",
        "channel": "string",
        "segment": "categorical",
        "region": "categorical",
    },
    predictions={"will_buy": "boolean", "proba": "numeric"},
    raw_inputs={},
    actuals={"will_buy": "actual_label"},
    actuals_timestamp_column="actual_at",
    columns=(
        ("embedding", "SUPER", _super_vector(16)),
        ("amount", "DOUBLE PRECISION", "round((100 + (n * 7919) % 10000 / 10.0)::numeric, 2)::float8"),
        ("score", "DOUBLE PRECISION", "((n * 37) % 1000) / 1000.0"),
        ("tenure_months", "INTEGER", "(n % 120)::int"),
        ("is_new", "BOOLEAN", "n % 5 = 0"),
        ("has_discount", "BOOLEAN", "n % 7 = 0"),
        ("owner", "VARCHAR(64)", "'owner-' || (n % 17)"),
        ("channel", "VARCHAR(16)", f"(ARRAY[{', '.join(repr(c) for c in CHANNELS)}])[1 + n % {len(CHANNELS)}]"),
        ("segment", "INTEGER", "(n % 8)::int"),
        ("region", "INTEGER", "(n % 50)::int"),
        ("will_buy", "BOOLEAN", "n % 2 = 0"),
        ("proba", "DOUBLE PRECISION", "((n * 53) % 1000) / 1000.0"),
    ),
)
SHAPE_768 = Shape(
    label="768-dim (seed schema)",
    version="v768",
    dimensions=768,
    features={
        "amount": "numeric",
        "owner": "string",
        "is_new": "boolean",
        "embeddings": {"type": "tensor", "dimensions": [768]},
    },
    predictions={"will_buy_insurance": "boolean", "proba": "numeric"},
    raw_inputs={"raw_text": "text"},
    actuals={"will_buy_insurance": "did_buy_insurance"},
    actuals_timestamp_column="actual_timestamp",
    columns=(
        ("raw_text", "TEXT", "'customer note ' || n"),
        ("amount", "DOUBLE PRECISION", "round((100 + (n * 7919) % 10000 / 10.0)::numeric, 2)::float8"),
        ("owner", "VARCHAR(64)", "'owner-' || (n % 17)"),
        ("is_new", "BOOLEAN", "n % 5 = 0"),
        ("embeddings", "SUPER", _super_vector(768)),
        ("will_buy_insurance", "BOOLEAN", "n % 2 = 0"),
        ("proba", "DOUBLE PRECISION", "((n * 37) % 1000) / 1000.0"),
    ),
)
SHAPES = (SHAPE_16, SHAPE_768)


@dataclass(frozen=True)
class Table:
    """One seeded table: `rows` predictions spread evenly over `window`, ids prefixed to stay distinct."""

    name: str
    shape: Shape
    rows: int
    window: Window
    id_prefix: str
    # Windows synced separately (default: the whole window).
    parts: int = 1

    @property
    def query(self) -> str:
        return f"SELECT * FROM {self.name}"

    def windows(self) -> list[Window]:
        return self.window.split(self.parts)

    def copy_sql(self) -> str:
        # The very derived table the sync pushes down to Redshift, so COPY reads what Spark reads.
        return f"COPY (SELECT * FROM {windowed(self.query, TIMESTAMP_COLUMN, self.window)}) TO STDOUT"

    def seed_sql(self) -> list[str]:
        """Statements that (re)create and fill the table inside PostgreSQL (generate_series, like seed.py).

        Row n sits at start + n * span / rows; every third row gets an actual that arrives later in the
        same window (half-way between its prediction and the window's end).
        """
        shape = self.shape
        start = self.window.start.isoformat()
        span = (self.window.end - self.window.start).total_seconds()
        offset = f"(n * {span} / {self.rows})"
        [actual_column] = shape.actuals.values()
        columns = ",\n".join(f"{name} {sql_type}" for name, sql_type, _ in shape.columns)
        values = ",\n".join(expression for _, _, expression in shape.columns)
        return [
            f"DROP TABLE IF EXISTS {self.name}",
            f"""CREATE TABLE {self.name} (
                {ID_COLUMN} VARCHAR(64) NOT NULL,
                {TIMESTAMP_COLUMN} TIMESTAMPTZ NOT NULL,
                {columns},
                {actual_column} BOOLEAN,
                {shape.actuals_timestamp_column} TIMESTAMPTZ
            )""",
            # bigint n: n * 7919 overflows int4 at 10M rows.
            f"""INSERT INTO {self.name}
            SELECT
                '{self.id_prefix}' || lpad(n::text, 10, '0'),
                '{start}'::timestamptz + {offset} * interval '1 second',
                {values},
                CASE WHEN n % 3 = 0 THEN {shape.actual_value} END,
                CASE WHEN n % 3 = 0
                    THEN '{start}'::timestamptz + (({offset} + {span}) / 2) * interval '1 second' END
            FROM generate_series(0::bigint, {self.rows - 1}) AS n""",
        ]

    def sync_arguments(self, window: Window | None = None, task_id: str | None = None) -> dict[str, Any]:
        """AporiaSyncOperator arguments for a window of this table (spark settings are added by the caller)."""
        window = window or self.window
        return {
            "task_id": task_id or f"sync_{self.name}",
            "model_id": MODEL_ID,
            "model_version": self.shape.version,
            "query": self.query,
            "id_column": ID_COLUMN,
            "timestamp_column": TIMESTAMP_COLUMN,
            "actuals": self.shape.actuals,
            "actuals_timestamp_column": self.shape.actuals_timestamp_column,
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
        }

    def loop_arguments(self, window: Window | None = None) -> dict[str, Any]:
        """What the loops users write need to read and send the same window (benchmarks.loop_worker, sdk_worker):
        the very window queries the sync pushes down, predictions by their timestamp, actuals by theirs."""
        window = window or self.window
        shape = self.shape
        actual_columns = ", ".join(shape.actuals.values())
        return {
            "model_id": MODEL_ID,
            "model_version": shape.version,
            "predictions_sql": f"SELECT * FROM {windowed(self.query, TIMESTAMP_COLUMN, window)}",
            "actuals_sql": f"SELECT {ID_COLUMN}, {actual_columns} FROM "
            f"{windowed(self.query, shape.actuals_timestamp_column, window)}",
            "id_column": ID_COLUMN,
            "timestamp_column": TIMESTAMP_COLUMN,
            "fields": shape.fields(),
            "vector_field": shape.vector_field,
            "actuals": shape.actuals,
        }


def _hour(day: int, hour: int = 0, hours: int = 1) -> Window:
    start = datetime(2026, 11, day, hour, tzinfo=timezone.utc)
    return Window(start, start + timedelta(hours=hours))


# The windows of the user's comparison (issue 19): the seed's 768-dim schema up to 200,000 rows, 16-dim above
# (1M rows of 768-dim vectors would be 7 GB of JSON).
SIZES = (1_000, 10_000, 50_000, 200_000, 1_000_000)
LARGEST_768 = 200_000
HISTORY_ROWS = 10_000_000


def _count_label(rows: int) -> str:
    for unit, name in ((1_000_000, "m"), (1_000, "k")):
        if rows >= unit and rows % unit == 0:
            return f"{rows // unit}{name}"
    return str(rows)


def window_table(rows: int) -> Table:
    """A table of `rows` predictions over one day, in the seed's schema up to LARGEST_768 rows, 16-dim above; from
    HISTORY_ROWS on, a model's history: thirty days, synced in one manual run."""
    shape = SHAPE_768 if rows <= LARGEST_768 else SHAPE_16
    label = _count_label(rows)
    window = _hour(1, hours=30 * 24) if rows >= HISTORY_ROWS else _hour(20, hours=24)
    return Table(f"bench{shape.dimensions}_{label}", shape, rows, window, f"w{shape.dimensions}-{label}-")


# Twenty hours of 2,000 rows (768-dim): each synced alone, then all twenty at once; two of them on the cluster.
CONCURRENT_TABLE = Table("bench768_20x2k", SHAPE_768, 40_000, _hour(22, hours=20), "c768-", parts=20)
# The throwaway sync that warms the Spark Connect server (and the local Aporia's decoders) first.
WARM_UP_TABLE = Table("bench768_warm_up", SHAPE_768, 300, _hour(24), "warm-")
