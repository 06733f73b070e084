"""SQLite storage of the local Aporia server: models, versions, datasets and merged fragments.

Transport-free: the HTTP/GraphQL layer (`aporia_server`) turns `StoreError`s into responses.
One connection guarded by a lock serves every thread; SQLite runs in WAL mode with
synchronous=NORMAL, and each `logPredictions` batch is one transaction with one `executemany`.
Batches that fit the version schema without a warning take `log_fragments_json` (see fast_ingest);
the others `log_fragments`, which words every warning.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from aporia_local.fast_ingest import FastBatch
from aporia_local.rules import Field, RuleError, Schema, parse_schema, parse_version
from aporia_provider.vocabulary import DATA_SOURCE_TYPES, DATASET_NAMES, FIELD_GROUPS, FRAGMENT_KEYS, wire_group

MAX_WARNINGS = 100
# Fragment parts checked against the schema: (wire key, stored key, schema group, label in warnings).
# Actuals are keyed by prediction names, so they are checked against the predictions group.
_CHECKED_PARTS = (
    *((wire_group(group), group, group, label) for group, (_, label) in FIELD_GROUPS.items()),
    ("actuals", "actuals", "predictions", "actual"),
)
_FRAGMENT_KEYS = frozenset(FRAGMENT_KEYS)
_RECORD_PARTS = ("features", "predictions", "raw_inputs", "actuals", "metrics")
_CANONICAL_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
# The same instant written with Z (as Spark writes UTC): only the zone designator differs.
_CANONICAL_UTC_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _dumps(value: Any) -> str:
    # orjson: encoding stored records is a fifth of the ingest cost with the standard library.
    return orjson.dumps(value).decode()


_DDL = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, body TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    model_id TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (model_id, name)
);
CREATE TABLE IF NOT EXISTS datasets (
    model_id TEXT NOT NULL, version TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    connected_at TEXT NOT NULL,
    PRIMARY KEY (model_id, version, name)
);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY, model_id TEXT NOT NULL, model_version TEXT NOT NULL, environment TEXT NOT NULL,
    UNIQUE (model_id, model_version, environment)
);
CREATE TABLE IF NOT EXISTS records (
    stream INTEGER NOT NULL, id TEXT NOT NULL, occurred_at TEXT, has_predictions INTEGER NOT NULL,
    has_actuals INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (stream, id)
) WITHOUT ROWID;
CREATE VIEW IF NOT EXISTS fragments AS
    SELECT s.model_id, s.model_version, s.environment, r.id, r.occurred_at, r.has_predictions, r.has_actuals, r.data
    FROM records AS r JOIN streams AS s ON s.id = r.stream;
"""
# Rows per fragment are what ingest costs most: a small integer key instead of three repeated strings.
_MIGRATE_FRAGMENTS_TABLE = """
ALTER TABLE fragments RENAME TO fragments_before_streams;
"""
# The batch is already merged in Python (under the store lock), so the upsert just overwrites.
_UPSERT = """
INSERT INTO records (stream, id, occurred_at, has_predictions, has_actuals, data) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (stream, id) DO UPDATE SET
    occurred_at = excluded.occurred_at, has_predictions = excluded.has_predictions,
    has_actuals = excluded.has_actuals, data = excluded.data
"""
# A batch of new ids: one insert each; any id already stored is left alone and counted out.
_INSERT_NEW = """
INSERT OR IGNORE INTO records (stream, id, occurred_at, has_predictions, has_actuals, data) VALUES (?, ?, ?, ?, ?, ?)
"""
_SELECT_EXISTING = """
SELECT id, occurred_at, data FROM records WHERE stream = ? AND id IN (SELECT value FROM json_each(?))
"""


def _migrate(db: sqlite3.Connection) -> None:
    """Move fragments stored by an earlier version (one table keyed by model, version, environment, id)."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(fragments)")]
    if (
        "model_version" not in columns
        or db.execute("SELECT type FROM sqlite_master WHERE name = 'fragments'").fetchone()[0] != "table"
    ):
        return
    db.executescript(
        _MIGRATE_FRAGMENTS_TABLE
        + _DDL
        + """
        INSERT OR IGNORE INTO streams (model_id, model_version, environment)
            SELECT DISTINCT model_id, model_version, environment FROM fragments_before_streams;
        INSERT INTO records
            SELECT s.id, f.id, f.occurred_at, f.has_predictions, f.has_actuals, f.data
            FROM fragments_before_streams AS f JOIN streams AS s
                ON s.model_id = f.model_id AND s.model_version = f.model_version AND s.environment = f.environment;
        DROP TABLE fragments_before_streams;
        """
    )


class StoreError(Exception):
    """A request the store refuses; `status` is the HTTP status the REST layer answers with."""

    status = 400


class NotFoundError(StoreError):
    status = 404


class ConflictError(StoreError):
    status = 409


class InvalidError(StoreError):
    status = 422


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def normalize_timestamp(value: str) -> str:
    """Parse an ISO-8601 string (naive means UTC) into 'YYYY-MM-DDTHH:MM:SS.ffffff+00:00'.

    Raises ValueError when `value` is not ISO-8601; the fixed format makes string order time order.
    """
    parsed = datetime.fromisoformat(value)
    if _CANONICAL_TIMESTAMP.fullmatch(value):
        return value  # already normalised (the usual case): skip re-formatting
    if _CANONICAL_UTC_Z.fullmatch(value):
        return value[:-1] + "+00:00"
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Warnings:
    """Warnings for one request, capped at MAX_WARNINGS entries plus a '... and N more' line."""

    items: list[str] = field(default_factory=list)
    more: int = 0

    def add(self, message: str) -> None:
        if len(self.items) < MAX_WARNINGS:
            self.items.append(message)
        else:
            self.more += 1

    def as_list(self) -> list[str]:
        return [*self.items, f"... and {self.more} more warnings"] if self.more else list(self.items)


def check_fragment(
    index: int, fragment: Any, schema: Schema, version: str, warnings: Warnings
) -> tuple[str, dict[str, Any]]:
    """Return (id, record) for one wire fragment, adding a warning for each value that does not fit.

    The record uses stored key names and holds only non-null parts. Raises InvalidError when the
    fragment has no id (nothing of the request is stored then).
    """
    if not isinstance(fragment, dict):
        raise InvalidError(
            f"predictions[{index}] is {'null' if fragment is None else type(fragment).__name__}; "
            "every fragment must be an object with an 'id'."
        )
    fragment_id = fragment.get("id")
    if fragment_id is None:
        raise InvalidError(
            f"predictions[{index}] has no id; give every fragment a non-empty string 'id' "
            "(the prediction id that later actuals are merged on)."
        )
    if not isinstance(fragment_id, str) or not fragment_id:
        raise InvalidError(f"predictions[{index}] has id {fragment_id!r}; ids must be non-empty strings.")
    record: dict[str, Any] = {}
    # Direct lookups rather than a loop over the fragment's keys: this runs once per fragment.
    for key, stored_key, group, label in _CHECKED_PARTS:
        value = fragment.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            warnings.add(
                f"Fragment {fragment_id!r}: {key} must be an object of field name to value, "
                f"got {type(value).__name__}; it was not stored."
            )
            continue
        specs: dict[str, Field] = schema[group]
        for name, field_value in value.items():
            spec = specs.get(name)
            if spec is None:
                warnings.add(
                    f"Fragment {fragment_id!r}: unknown {label} {name!r}, not in the schema of version {version!r}."
                )
            else:
                problem = spec.problem(field_value)
                if problem is not None:
                    warnings.add(f"Fragment {fragment_id!r}: {label} {problem}.")
        record[stored_key] = value
    occurred_at = fragment.get("occurredAt")
    if occurred_at is not None:
        try:
            record["occurred_at"] = normalize_timestamp(occurred_at)
        except (TypeError, ValueError):
            warnings.add(
                f"Fragment {fragment_id!r}: occurredAt {occurred_at!r} is not an ISO-8601 datetime; "
                "the fragment was stored without a timestamp."
            )
    elif "predictions" in record:
        warnings.add(f"Fragment {fragment_id!r}: a prediction fragment without occurredAt.")
    metrics = fragment.get("metrics")
    if isinstance(metrics, dict):
        record["metrics"] = metrics
    elif metrics is not None:
        warnings.add(
            f"Fragment {fragment_id!r}: metrics must be an object, got {type(metrics).__name__}; it was not stored."
        )
    confidence = fragment.get("confidence")
    if confidence is not None:
        record["confidence"] = confidence
    if not _FRAGMENT_KEYS.issuperset(fragment):
        for key in fragment:
            if key not in _FRAGMENT_KEYS:
                warnings.add(
                    f"Fragment {fragment_id!r}: unknown key {key!r} was ignored; fragments have "
                    "id, features, predictions, rawInputs, actuals, metrics, occurredAt, confidence."
                )
    return fragment_id, record


def merge_record(stored: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge `update` over `stored` in place: dict parts key by key, other parts replaced."""
    for key, value in update.items():
        old = stored.get(key)
        stored[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value


@dataclass(frozen=True)
class FragmentFilter:
    """Which stored fragments a read-only view means; every part optional, the window half-open."""

    model_id: str | None = None
    model_version: str | None = None
    environment: str | None = None
    occurred_from: str | None = None
    occurred_to: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column in ("model_id", "model_version", "environment"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        for op, name in ((">=", "occurred_from"), ("<", "occurred_to")):
            bound = getattr(self, name)
            if bound is not None:
                try:
                    params.append(normalize_timestamp(bound))
                except ValueError:
                    raise InvalidError(
                        f"{name} {bound!r} is not an ISO-8601 datetime; use e.g. 2024-01-31T00:00:00+00:00 "
                        "(URL-encode '+' as %2B)."
                    ) from None
                clauses.append(f"occurred_at {op} ?")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _connect(db_path: str) -> sqlite3.Connection:
    db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    # A stand-in's data need not survive the machine crashing: no fsync at commits and checkpoints.
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA busy_timeout=30000")
    return db


class AporiaStore:
    """The store; every method may be called from any thread (one connection, one lock).

    Fragments live in `records`, keyed by their stream (a model, version and environment, numbered in
    `streams`) and id; the `fragments` view joins the two back for the read-only views.
    """

    def __init__(self, db_path: str) -> None:
        self._lock = threading.Lock()
        self._db = _connect(db_path)
        _migrate(self._db)
        self._db.executescript(_DDL)
        self._schemas: dict[tuple[str, str], Schema] = {}
        self._fast: dict[tuple[str, str], tuple[Schema, FastBatch]] = {}
        self._streams: dict[tuple[str, str, str], int] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _stream(self, model_id: str, version: str, environment: str) -> int:
        """The number of a model version's environment, made on first use (call with the lock held)."""
        key = (model_id, version, environment)
        stream = self._streams.get(key)
        if stream is None:
            self._db.execute(
                "INSERT OR IGNORE INTO streams (model_id, model_version, environment) VALUES (?, ?, ?)", key
            )
            stream = self._streams[key] = self._one(
                "SELECT id FROM streams WHERE model_id = ? AND model_version = ? AND environment = ?", key
            )[0]
        return stream

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # The connection is in autocommit mode; multi-statement writes get an explicit transaction.
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        return self._db.execute(sql, params).fetchone()

    def _require_model(self, model_id: str) -> None:
        if self._one("SELECT 1 FROM models WHERE id = ?", (model_id,)) is None:
            raise NotFoundError(f"Model {model_id!r} does not exist; create it first (POST /v1beta/models).")

    def _version_body(self, model_id: str, version: str) -> dict[str, Any]:
        self._require_model(model_id)
        row = self._one("SELECT body FROM versions WHERE model_id = ? AND name = ?", (model_id, version))
        if row is None:
            raise NotFoundError(
                f"Model {model_id!r} has no version {version!r}; create it first "
                f"(POST /v1beta/models/{model_id}/versions)."
            )
        body: dict[str, Any] = json.loads(row[0])
        return body

    # Models and versions

    def create_model(self, body: Mapping[str, Any]) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO models (id, body, created_at) VALUES (?, ?, ?)",
                    (body["id"], json.dumps(dict(body)), utc_now()),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"Model {body['id']!r} already exists.") from None

    def list_models(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT body, created_at FROM models ORDER BY id").fetchall()
        return [{**json.loads(body), "created_at": created_at} for body, created_at in rows]

    def delete_model(self, model_id: str) -> None:
        with self._lock:
            self._require_model(model_id)
            with self._transaction():
                self._db.execute(
                    "DELETE FROM records WHERE stream IN (SELECT id FROM streams WHERE model_id = ?)", (model_id,)
                )
                for table in ("streams", "datasets", "versions"):
                    self._db.execute(f"DELETE FROM {table} WHERE model_id = ?", (model_id,))
                self._db.execute("DELETE FROM models WHERE id = ?", (model_id,))
            self._schemas = {k: v for k, v in self._schemas.items() if k[0] != model_id}
            self._fast = {k: v for k, v in self._fast.items() if k[0] != model_id}
            self._streams = {k: v for k, v in self._streams.items() if k[0] != model_id}

    def create_version(self, model_id: str, body: Mapping[str, Any]) -> None:
        name = body["name"]
        with self._lock:
            self._require_model(model_id)  # an unknown model is a 404 before any body check
            try:
                parse_version(body["model_type"], body["version_schema"])
            except RuleError as e:
                raise InvalidError(str(e)) from None
            try:
                self._db.execute(
                    "INSERT INTO versions (model_id, name, body, created_at) VALUES (?, ?, ?, ?)",
                    (model_id, name, json.dumps(dict(body)), utc_now()),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"Model {model_id!r} already has a version {name!r}.") from None

    def list_versions(self, model_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._require_model(model_id)
            rows = self._db.execute(
                "SELECT body, created_at FROM versions WHERE model_id = ? ORDER BY created_at, name",
                (model_id,),
            ).fetchall()
        return [{**json.loads(body), "created_at": created_at} for body, created_at in rows]

    def version_schema(self, model_id: str, version: str) -> Schema:
        with self._lock:
            return self._checked_schema(model_id, version)

    def _checked_schema(self, model_id: str, version: str) -> Schema:
        # Parsed once per version: fragments are checked against it on every batch.
        cached = self._schemas.get((model_id, version))
        if cached is None:
            body = self._version_body(model_id, version)
            cached = parse_schema(body["version_schema"])
            self._schemas[(model_id, version)] = cached
        return cached

    # Datasets

    def upsert_dataset(self, model_id: str, version: str, body: Mapping[str, Any]) -> None:
        name = body["name"]
        source_type = body["data_source"]["type"]
        with self._lock:
            self._version_body(model_id, version)
            if name not in DATASET_NAMES:
                raise InvalidError(f"Dataset name {name!r} is not supported; use one of {', '.join(DATASET_NAMES)}.")
            if source_type not in DATA_SOURCE_TYPES:
                raise InvalidError(
                    f"data_source.type {source_type!r} is not supported; use one of {', '.join(DATA_SOURCE_TYPES)}."
                )
            self._db.execute(
                "INSERT OR REPLACE INTO datasets (model_id, version, name, body, connected_at) VALUES (?, ?, ?, ?, ?)",
                (model_id, version, name, json.dumps(dict(body)), utc_now()),
            )

    def list_datasets(self, model_id: str, version: str) -> list[dict[str, Any]]:
        with self._lock:
            self._version_body(model_id, version)
            rows = self._db.execute(
                "SELECT body FROM datasets WHERE model_id = ? AND version = ? ORDER BY name",
                (model_id, version),
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def set_sync(self, model_id: str, version: str, enabled: bool) -> list[str]:
        """Set `sync.enabled` on every dataset of the version; return the dataset names."""
        with self._lock:
            self._version_body(model_id, version)
            rows = self._db.execute(
                "SELECT name, body FROM datasets WHERE model_id = ? AND version = ? ORDER BY name",
                (model_id, version),
            ).fetchall()
            updates = []
            for name, raw in rows:
                body = json.loads(raw)
                body["sync"] = {**(body.get("sync") or {}), "enabled": enabled}
                updates.append((json.dumps(body), model_id, version, name))
            with self._transaction():
                self._db.executemany(
                    "UPDATE datasets SET body = ? WHERE model_id = ? AND version = ? AND name = ?", updates
                )
        return [name for name, _ in rows]

    def sync_status(self, model_id: str, version: str, dataset: str) -> dict[str, Any]:
        with self._lock:
            self._version_body(model_id, version)
            row = self._one(
                "SELECT body, connected_at FROM datasets WHERE model_id = ? AND version = ? AND name = ?",
                (model_id, version, dataset),
            )
        if row is None:
            raise NotFoundError(
                f"Dataset {dataset!r} is not connected to model {model_id!r} version {version!r}; "
                f"connect it first (POST /v1beta/models/{model_id}/versions/{version}/datasets)."
            )
        enabled = bool((json.loads(row[0]).get("sync") or {}).get("enabled"))
        return {
            "dataset": dataset,
            "enabled": enabled,
            "status": "synced" if enabled else "disabled",
            "connected_at": row[1],
        }

    # Fragments

    def log_fragments(self, model_id: str, version: str, environment: str, fragments: Sequence[Any]) -> list[str]:
        """Check, merge and store a batch of fragments; return the warnings for the caller."""
        schema = self.version_schema(model_id, version)
        warnings = Warnings()
        batch: dict[str, dict[str, Any]] = {}
        for index, fragment in enumerate(fragments):
            fragment_id, record = check_fragment(index, fragment, schema, version, warnings)
            earlier = batch.get(fragment_id)
            if earlier is None:
                batch[fragment_id] = record
            else:
                merge_record(earlier, record)
        with self._lock:
            self._checked_schema(model_id, version)  # the version may have been deleted meanwhile
            stream = self._stream(model_id, version, environment)
            existing = self._db.execute(_SELECT_EXISTING, (stream, _dumps(list(batch)))).fetchall()
            for fragment_id, occurred_at, data in existing:
                stored = orjson.loads(data)
                if occurred_at is not None:
                    stored["occurred_at"] = occurred_at
                merge_record(stored, batch[fragment_id])
                batch[fragment_id] = stored
            rows = [
                (
                    stream,
                    fragment_id,
                    record.pop("occurred_at", None),
                    bool(record.get("predictions")),
                    bool(record.get("actuals")),
                    _dumps(record),
                )
                for fragment_id, record in batch.items()
            ]
            with self._transaction():
                self._db.executemany(_UPSERT, rows)
        return warnings.as_list()

    def log_fragments_json(self, model_id: str, version: str, environment: str, predictions: bytes) -> list[str] | None:
        """Store a batch given as the JSON text of its fragments when none needs a warning; else None.

        None means nothing was stored: `log_fragments` takes the batch then and words its warnings or its
        error. Unknown models and versions raise StoreError as there.
        """
        fast, stream = self._fast_batch(model_id, version, environment)
        rows = fast.decode(predictions, stream)
        if rows is None:
            return None
        with self._lock:
            self._checked_schema(model_id, version)  # the version may have been deleted meanwhile
            if self._streams.get((model_id, version, environment)) != stream:
                return None
            # Nearly always the ids are new (predictions): one insert each, no lookups. When one is not
            # (a re-sent batch, actuals), the batch merges instead.
            if rows and self._one("SELECT 1 FROM records WHERE stream = ? AND id = ?", rows[0][:2]) is None:
                self._db.execute("BEGIN")
                try:
                    inserted = self._db.executemany(_INSERT_NEW, rows).rowcount
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                if inserted == len(rows):
                    self._db.execute("COMMIT")
                    return []
                self._db.execute("ROLLBACK")
            return self._merge_rows(stream, rows)

    def _merge_rows(self, stream: int, rows: list[Any]) -> list[str] | None:
        """Store rows of which some ids are stored already, merging those (call with the lock held)."""
        ids = [row[1] for row in rows]
        if len(set(ids)) != len(ids):
            return None  # fragments of one id merge within the batch: log_fragments does that
        existing = {
            fragment_id: (occurred_at, data)
            for fragment_id, occurred_at, data in self._db.execute(_SELECT_EXISTING, (stream, _dumps(ids)))
        }
        inserted = [row for row in rows if row[1] not in existing]
        merged = []
        for _, fragment_id, occurred_at, _, _, data in rows:
            if fragment_id not in existing:
                continue
            stored_at, stored_data = existing[fragment_id]
            stored = orjson.loads(stored_data)
            if stored_at is not None:
                stored["occurred_at"] = stored_at
            update = orjson.loads(data)
            if occurred_at is not None:
                update["occurred_at"] = occurred_at
            merge_record(stored, update)
            merged.append(
                (
                    stream,
                    fragment_id,
                    stored.pop("occurred_at", None),
                    bool(stored.get("predictions")),
                    bool(stored.get("actuals")),
                    _dumps(stored),
                )
            )
        with self._transaction():
            self._db.executemany(_INSERT_NEW, inserted)
            self._db.executemany(_UPSERT, merged)
        return []

    def _fast_batch(self, model_id: str, version: str, environment: str) -> tuple[FastBatch, int]:
        with self._lock:
            schema = self._checked_schema(model_id, version)
            cached = self._fast.get((model_id, version))
            if cached is None or cached[0] is not schema:
                cached = self._fast[(model_id, version)] = (schema, FastBatch(schema, normalize_timestamp))
            return cached[1], self._stream(model_id, version, environment)

    def count_fragments(self, selection: FragmentFilter) -> dict[str, int]:
        where, params = selection.where()
        with self._lock:
            total, with_predictions, with_actuals = self._one(
                f"SELECT COUNT(*), SUM(has_predictions), SUM(has_actuals) FROM fragments{where}", params
            )
        return {"total": total, "with_predictions": with_predictions or 0, "with_actuals": with_actuals or 0}

    def list_fragments(self, selection: FragmentFilter, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        where, params = selection.where()
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, occurred_at, data FROM fragments{where} "
                "ORDER BY id, model_id, model_version, environment LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        records = []
        for fragment_id, occurred_at, data in rows:
            stored = json.loads(data)
            records.append(
                {
                    "id": fragment_id,
                    **{part: stored.get(part) for part in _RECORD_PARTS},
                    "occurred_at": occurred_at,
                    "confidence": stored.get("confidence"),
                }
            )
        return records

    def reset(self) -> None:
        with self._lock, self._transaction():
            for table in ("records", "streams", "datasets", "versions", "models"):
                self._db.execute(f"DELETE FROM {table}")
            self._schemas.clear()
            self._fast.clear()
            self._streams.clear()
