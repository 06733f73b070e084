"""The local Aporia store's fast path stores exactly what the slow path stores, or declines the batch.

Every batch goes to two stores: one through `log_fragments` (parsed, checked and worded in Python, as
strawberry's resolver does) and one through `log_fragments_json` (the fast path). When the fast path
takes a batch, both stores must then hold the same records and counts and the slow path must have had no
warning; when it declines (None), nothing may have been stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# The stand-in's own dependencies come with the [local] extra, which the minimum-Airflow check does not install.
pytest.importorskip("orjson")

from aporia_local.aporia_store import AporiaStore, FragmentFilter, InvalidError, normalize_timestamp

SCHEMA = {
    "features": {
        "amount": "numeric",
        "segment": "categorical",
        "owner": "string",
        "note": "text",
        "is_new": "boolean",
        "seen_at": "datetime",
        "scores": "vector",
        "weights": "dict",
        "embedding": {"type": "tensor", "dimensions": [3]},
        "grid": {"type": "tensor", "dimensions": [2, 2]},
        "odd name-1": "numeric",
    },
    "predictions": {"proba": "numeric", "label": "boolean"},
    "raw_inputs": {"text": "text"},
}


def _prediction(fragment_id: str, **changes: Any) -> dict[str, Any]:
    fragment: dict[str, Any] = {
        "id": fragment_id,
        "features": {"amount": 12.5, "segment": 3, "embedding": [0.1, 0.2, 0.3], "owner": "ann"},
        "predictions": {"proba": 0.8, "label": True},
        "occurredAt": "2024-03-01T10:00:00.000000Z",
    }
    fragment.update(changes)
    return {k: v for k, v in fragment.items() if v is not ...}


# Batches the fast path takes: what the sync sends, and the other shapes a clean batch may have.
TAKEN = [
    [_prediction(f"p{i}") for i in range(5)],
    [{"id": "p1", "actuals": {"label": False}}, {"id": "p2", "actuals": {"proba": 1}}],
    [_prediction("p1", occurredAt="2024-03-01T12:00:00+02:00")],
    [_prediction("p1", occurredAt="2024-03-01T10:00:00.000000+00:00")],
    [_prediction("p1", occurredAt="2024-03-01T10:00:00")],  # naive means UTC
    [_prediction("p1", confidence=0.9, rawInputs={"text": "hi"}, metrics={"latency_ms": 3})],
    [_prediction("p1", features={"amount": None, "owner": None, "segment": 2})],  # explicit nulls are kept
    [_prediction("p1", features=None)],  # a null part is no part
    [_prediction("p1", features={})],
    [_prediction("p1", predictions={})],  # an empty prediction is stored but counts as none
    [{"id": "p1", "actuals": {}}],
    [_prediction("p1", features={"amount": 7, "segment": -4, "scores": [1, 2.5], "weights": {"a": 1.5}})],
    [_prediction("p1", features={"grid": [[1, 2], [3, 4.5]], "seen_at": "2024-01-01T00:00:00Z", "odd name-1": 1})],
    [_prediction("p1", features={"note": "null is a word", "owner": 'quote " and \\u00e9'})],
    [{"id": "p1", "features": {"amount": 1.0}}],  # features alone need no occurredAt
    [{"id": "p1"}],
]
# Batches that need a warning or an error: the fast path declines them.
DECLINED = [
    [_prediction("p1", features={"amount": "12"})],
    [_prediction("p1", features={"amount": True})],
    [_prediction("p1", features={"segment": 2.0})],
    [_prediction("p1", features={"embedding": [0.1, 0.2]})],
    [_prediction("p1", features={"grid": [[1, 2], [3]]})],
    [_prediction("p1", features={"colour": "red"})],
    [_prediction("p1", features={"seen_at": "yesterday"})],
    [_prediction("p1", features={"amount": 2**70})],  # beyond what orjson (over HTTP) reads: refused
    [_prediction("p1", features="amount")],
    [_prediction("p1", occurredAt="yesterday")],
    [_prediction("p1", occurredAt="2024-02-30T10:00:00.000000Z")],
    [_prediction("p1", occurredAt=...)],
    [_prediction("p1", prediction={"proba": 0.1})],
    [_prediction("p1", metrics=[1])],
    [{"id": "p1", "actuals": {"churned": 1}}],
    [_prediction("p1"), {"actuals": {"proba": 1.0}}],
    [_prediction("")],
    [{**_prediction("p1"), "id": 17}],
    [_prediction("p1"), None],
    [_prediction("p1"), 7],
]


def _store(path: Path) -> AporiaStore:
    store = AporiaStore(str(path))
    store.create_model({"id": "m1", "name": "M"})
    store.create_version("m1", {"name": "v1", "model_type": "binary", "version_schema": SCHEMA})
    return store


@pytest.fixture
def stores(tmp_path: Path) -> tuple[AporiaStore, AporiaStore]:
    return _store(tmp_path / "slow.sqlite"), _store(tmp_path / "fast.sqlite")


def _held(store: AporiaStore) -> tuple[list[dict[str, Any]], dict[str, int]]:
    everything = FragmentFilter()
    return store.list_fragments(everything, 1000), store.count_fragments(everything)


def _slow(store: AporiaStore, batch: list[Any]) -> list[str] | str:
    try:
        return store.log_fragments("m1", "v1", "prod", json.loads(json.dumps(batch)))
    except (InvalidError, TypeError) as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("batch", TAKEN)
def test_a_clean_batch_is_stored_as_the_slow_path_stores_it(
    stores: tuple[AporiaStore, AporiaStore], batch: list[Any]
) -> None:
    slow, fast = stores
    # Sent twice, after a first prediction: new ids insert, known ids merge.
    for store in stores:
        store.log_fragments("m1", "v1", "prod", [_prediction("p1", features={"segment": 9, "note": "first"})])
    for _ in range(2):
        assert _slow(slow, batch) == []
        assert fast.log_fragments_json("m1", "v1", "prod", json.dumps(batch).encode()) == []
        assert _held(fast) == _held(slow)


@pytest.mark.parametrize("batch", DECLINED)
def test_a_batch_needing_words_is_declined_and_nothing_is_stored(
    stores: tuple[AporiaStore, AporiaStore], batch: list[Any]
) -> None:
    slow, fast = stores
    assert _slow(slow, batch) != [], "the slow path warns about or refuses this batch"
    assert fast.log_fragments_json("m1", "v1", "prod", json.dumps(batch).encode()) is None
    assert _held(fast)[1]["total"] == 0


def test_spark_timestamps_normalise_like_any_other() -> None:
    assert normalize_timestamp("2026-11-22T00:00:01.250000Z") == "2026-11-22T00:00:01.250000+00:00"
    assert normalize_timestamp("2026-11-22T02:00:01.250000+02:00") == "2026-11-22T00:00:01.250000+00:00"


def test_fragments_of_one_id_in_a_batch_are_left_to_the_slow_path(stores: tuple[AporiaStore, AporiaStore]) -> None:
    _, fast = stores
    batch = [_prediction("p1"), _prediction("p1", features={"segment": 4})]
    assert fast.log_fragments_json("m1", "v1", "prod", json.dumps(batch).encode()) is None
    assert _held(fast)[1]["total"] == 0


def test_fragments_stored_by_an_earlier_version_are_moved(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE fragments (
            model_id TEXT NOT NULL, model_version TEXT NOT NULL, environment TEXT NOT NULL, id TEXT NOT NULL,
            occurred_at TEXT, has_predictions INTEGER NOT NULL, has_actuals INTEGER NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (model_id, model_version, environment, id)
        ) WITHOUT ROWID;
        INSERT INTO fragments VALUES
            ('m1', 'v1', 'prod', 'p1', '2024-03-01T10:00:00.000000+00:00', 1, 1,
             '{"predictions": {"proba": 0.5}, "actuals": {"proba": 1.0}}');
        """
    )
    old.commit()
    old.close()
    store = AporiaStore(str(path))
    assert store.count_fragments(FragmentFilter(model_id="m1", environment="prod")) == {
        "total": 1,
        "with_predictions": 1,
        "with_actuals": 1,
    }
    [record] = store.list_fragments(FragmentFilter())
    assert (record["id"], record["predictions"], record["actuals"]) == ("p1", {"proba": 0.5}, {"proba": 1.0})
