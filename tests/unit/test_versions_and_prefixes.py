"""Tables as users keep them: columns mapped by prefix (and the drift from the schema), rows routed by a version
column: the rules, refused arguments and the outcome per version, without the stack."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from airflow.sdk import AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from aporia_provider.assets.aporia import model_version_asset
from aporia_provider.exceptions import InvalidRowsError, SyncInputError
from aporia_provider.extraction.columnar import judge_routed
from aporia_provider.extraction.layout import layout_of
from aporia_provider.extraction.mapping import map_columns, warn_of_drift
from aporia_provider.extraction.plan import Routing, SyncPlan
from aporia_provider.extraction.sql import Window
from aporia_provider.plugins.timeline import build_views
from aporia_provider.redshift import identifier
from aporia_provider.schema import VersionSchema
from aporia_provider.sync.outcome import FAILURE_XCOM_KEY, SyncSummary
from aporia_provider.sync.versions import version_records, versions_result
from aporia_provider.transfers.redshift_to_aporia import AporiaSyncOperator
from tests.unit.test_sync_outcome import WINDOW_END, FakeTaskInstance, StatsRecorder, stats, task_log
from tests.unit.test_sync_view import record, summary

VERSIONS = ["champion", "challenger"]
# The fixtures of the outcome's tests: Airflow's Stats recorded, the task's log where caplog reads it.
__all__ = ["stats", "task_log"]
SCHEMA = VersionSchema.parse({"amount": "numeric", "age": "numeric"}, {"proba": "numeric"})


def plan(**changes: Any) -> SyncPlan:
    arguments: dict[str, Any] = {
        "model_id": "fraud",
        "model_version": "v1",
        "schema": SCHEMA,
        "query": "SELECT * FROM ml.predictions",
        "id_column": "id",
        "timestamp_column": "ts",
    }
    return SyncPlan(**(arguments | changes))


# ------------------------------------------------------------------------------------------- prefixes


def test_a_prefix_maps_its_columns_to_fields_and_an_explicit_mapping_wins() -> None:
    present = ["id", "ts", "f_amount", "f_age", "age_years", "p_proba"]
    mapped = map_columns(plan(prefixes={"features": "f_", "predictions": "p_"}, features={"age": "age_years"}), present)
    assert dict(mapped.plan.features) == {"age": "age_years", "amount": "f_amount"}
    assert dict(mapped.plan.predictions) == {"proba": "p_proba"}
    # f_age matches the prefix, but the explicit mapping feeds age: a column no field reads.
    assert (mapped.missing, mapped.unknown) == ((), frozenset({"f_age"}))


def test_a_field_without_a_prefixed_column_reads_its_own_name() -> None:
    mapped = map_columns(plan(prefixes={"features": "f_"}), ["id", "ts", "f_amount", "age", "proba"])
    assert dict(mapped.plan.features) == {"amount": "f_amount", "age": "age"}


def test_two_columns_for_one_field_are_refused_naming_the_field_and_the_fix() -> None:
    with pytest.raises(SyncInputError) as raised:
        map_columns(plan(prefixes={"features": "f_"}), ["id", "ts", "f_amount", "amount", "f_age", "proba"])
    assert str(raised.value) == (
        "The feature 'amount' of fraud v1 has two columns, 'f_amount' (features_prefix) and 'amount' (its own "
        "name); map it to one of them, e.g. features={'amount': 'f_amount'}."
    )


def test_a_prefix_matching_no_column_is_refused() -> None:
    with pytest.raises(SyncInputError) as raised:
        map_columns(plan(prefixes={"raw_inputs": "r_"}), ["id", "ts", "amount", "age", "proba"])
    assert str(raised.value) == (
        "raw_inputs_prefix 'r_' matches no column of the query for fraud v1; it returns id, ts, amount, age, proba; "
        "give the prefix the columns start with, or leave raw_inputs_prefix unset."
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"prefixes": {"features": ""}}, "features_prefix '' is not a column prefix; give the text the columns"),
        (
            {"prefixes": {"features": "f_"}, "select_expr": ("*",)},
            "Column prefixes are matched against the query's columns, which select_expr changes;",
        ),
    ],
)
def test_a_bad_prefix_is_refused_when_the_plan_is_made(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SyncInputError) as raised:
        plan(**changes)
    assert str(raised.value).startswith(message)


def test_drift_is_one_warning_naming_missing_and_unknown_columns(caplog: pytest.LogCaptureFixture) -> None:
    mapped = map_columns(plan(prefixes={"features": "f_"}), ["id", "ts", "f_amount", "f_income", "f_zip", "proba"])
    assert mapped.missing == ("feature 'age' (f_age)",)
    with caplog.at_level(logging.WARNING):
        warn_of_drift("fraud v1", [mapped])
    assert [r.getMessage() for r in caplog.records] == [
        "Schema drift in the query for fraud v1: no column for feature 'age' (f_age); columns no field of the "
        "version schema reads: f_income, f_zip; a new model version may be due (or a mapping is stale)."
    ]


def test_no_drift_logs_nothing_and_a_column_one_version_reads_is_no_drift(caplog: pytest.LogCaptureFixture) -> None:
    wider = VersionSchema.parse({"amount": "numeric", "age": "numeric", "income": "numeric"}, {"proba": "numeric"})
    present = ["id", "ts", "f_amount", "f_age", "f_income", "proba"]
    champion = map_columns(plan(prefixes={"features": "f_"}), present)
    challenger = map_columns(plan(prefixes={"features": "f_"}, model_version="v2", schema=wider), present)
    with caplog.at_level(logging.WARNING):
        warn_of_drift("fraud v1, v2", [champion, challenger])
    assert caplog.records == []


# ------------------------------------------------------------------------------------------- versions


def test_rows_are_judged_by_the_layout_of_the_version_they_name() -> None:
    routing = Routing("version", ("1", "2"))
    wider = VersionSchema.parse({"amount": "numeric", "age": "numeric", "income": "numeric"}, {"proba": "numeric"})
    [one] = layout_of(plan(model_version="1"), identifier)
    [two] = layout_of(plan(model_version="2", schema=wider), identifier)
    moment = datetime(2026, 11, 20, tzinfo=timezone.utc)
    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b", "c", "d", "e"],
            "ts": pa.array([moment] * 5, pa.timestamp("us", tz="UTC")),
            "version": [1, 2, 1, 3, None],  # compared as text
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0],
            "age": [30.0] * 5,
            "income": [10.0] * 5,
            "proba": [0.5] * 5,
        }
    )
    ones, twos, others = judge_routed(batch, [one, two], routing, moment)
    assert ones.column("id").to_pylist() == ["a", "c"] and set(ones.column("version").to_pylist()) == {"1"}
    assert '"income"' not in ones.column("fragment")[0].as_py()
    assert twos.column("id").to_pylist() == ["b"] and '"income":10.0' in twos.column("fragment")[0].as_py()
    assert others.to_pylist() == [
        {
            "id": "d",
            "fragment": None,
            "problem": "version names '3', which model_versions does not list",
            "column": "version",
            "value": "3",
            "reread": False,
            "version": None,
        },
        {
            "id": "e",
            "fragment": None,
            "problem": "version is null",
            "column": "version",
            "value": None,
            "reread": False,
            "version": None,
        },
    ]


def test_an_unknown_version_row_is_named_in_the_projects_words() -> None:
    routing = Routing("model_version", ("champion", "challenger"))
    assert routing.problem("shadow") == "model_version names 'shadow', which model_versions does not list"
    assert routing.problem(None) == "model_version is null"


def sync_task(**kwargs: Any) -> AporiaSyncOperator:
    arguments = {
        "task_id": "sync",
        "model_id": "fraud",
        "query": "SELECT 1",
        "id_column": "id",
        "timestamp_column": "ts",
    }
    return AporiaSyncOperator(**(arguments | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"model_versions": ["v1"], "model_version": "v1"},
            "model_versions is set but model_version_column is not; name the column holding each row's version, "
            "or pass model_version for a sync of one version.",
        ),
        (
            {},
            "model_version is not set; pass the version the rows belong to, or model_version_column and "
            "model_versions to route each row to the version its column names.",
        ),
        (
            {"model_version": "v1", "model_version_column": "version", "model_versions": ["v1"]},
            "model_version and model_version_column are both set; the column names each row's version: list the "
            "versions to sync in model_versions and leave model_version unset.",
        ),
        (
            {"model_version_column": "version", "model_versions": "v1,v2"},
            "model_versions 'v1,v2' is not a list; give the versions this sync serves, "
            "e.g. model_versions=['champion', 'challenger'].",
        ),
        (
            {"model_version_column": "version", "model_versions": ["v1", "v1"]},
            "model_versions lists 'v1' twice; list each once.",
        ),
        (
            {"model_version_column": "version", "model_versions": ["v1"], "on_unknown_version": "drop"},
            "on_unknown_version 'drop' is not supported; use 'reject' or 'ignore'.",
        ),
    ],
)
def test_version_arguments_that_do_not_fit_are_refused_at_parse(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SyncInputError) as raised:
        sync_task(**kwargs)
    assert str(raised.value) == message


def test_a_sync_of_two_versions_declares_both_assets() -> None:
    task = sync_task(model_version_column="version", model_versions=["champion", "challenger"])
    assert [outlet.uri for outlet in task.outlets] == [
        "aporia://models/fraud/versions/champion",
        "aporia://models/fraud/versions/challenger",
    ]


def test_each_version_is_a_sync_of_its_own_in_the_view() -> None:
    champion, challenger = SyncSummary(rows_read=8), SyncSummary(rows_read=3)
    for each in (champion, challenger):
        each.window_start, each.window_end = summary(0)["window_start"], summary(0)["window_end"]
    result = versions_result("insurance-propensity", {"champion": champion, "challenger": challenger}, {})
    assert [(version, counts["rows_read"]) for version, counts in version_records(result)] == [
        ("champion", 8),
        ("challenger", 3),
    ]
    views = build_views([record(0, summary=result, rendered=None)])
    assert [(v.model_version, [w.rows_read for w in v.windows]) for v in views] == [
        ("challenger", [3]),
        ("champion", [8]),
    ]


# ------------------------------------------------------------------------------------------- per version in Airflow


def two_versions(failure: Exception | None = None) -> AporiaSyncOperator:
    """A sync of champion (10 rows) and challenger (4 rows) whose run is stubbed, failing with `failure` if given."""
    sync = sync_task(model_id="fraud.detector", model_version_column="version", model_versions=VERSIONS)

    def stubbed(context: Any, summary: SyncSummary) -> dict[str, Any]:
        sync._summaries = {version: SyncSummary() for version in VERSIONS}
        for each, rows in zip(sync._summaries.values(), (10, 4), strict=True):
            each.window_start, each.window_end = (WINDOW_END - timedelta(hours=1)).isoformat(), WINDOW_END.isoformat()
            each.rows_read = each.fragments_sent = rows
        if failure is not None:
            raise failure
        return versions_result(sync.model_id, sync._summaries, {})

    sync._sync = stubbed  # type: ignore[method-assign]
    return sync


def test_each_version_has_its_own_metrics(stats: StatsRecorder) -> None:
    result = two_versions().run({})
    assert list(result["versions"]) == VERSIONS
    for version, rows in zip(VERSIONS, (10, 4), strict=True):
        tags = {"model_id": "fraud.detector", "model_version": version}
        assert stats.named("aporia.sync.rows_read").count(("incr", rows, tags)) == 1
        assert stats.named(f"aporia.sync.fraud__detector.{version}.fragments_sent") == [("incr", rows, None)]
    assert len(stats.named("aporia.sync.lag_seconds")) == 2


def test_a_failed_sync_of_two_versions_reports_each_once_in_one_error_line(
    caplog: pytest.LogCaptureFixture, stats: StatsRecorder
) -> None:
    sentence = "1 invalid row of 5 (e.g. predictions p1: amount: not a finite number) in the window of fraud challenger"
    ti = FakeTaskInstance()
    with pytest.raises(InvalidRowsError):
        two_versions(InvalidRowsError(sentence)).run({"ti": ti})
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [sentence]
    record = ti.pushed[FAILURE_XCOM_KEY]
    assert (record["error"], record["model_versions"]) == (sentence, VERSIONS)
    assert [record["versions"][v]["rows_read"] for v in VERSIONS] == [10, 4]
    assert [tags["model_version"] for _, _, tags in stats.named("aporia.sync.failed")] == VERSIONS
    # The sync view shows each version's window as failed, with the sentence.
    views = build_views([record_of_failure(record)])
    assert [(v.model_version, v.failed[0].failure) for v in views] == [("challenger", sentence), ("champion", sentence)]


def record_of_failure(failure: dict[str, Any]) -> Any:
    return record(0, state="failed", with_summary=False, failure=failure, rendered=None)


def test_each_version_gets_its_asset_event() -> None:
    sync = two_versions()
    events = OutletEventAccessors()
    window = Window(WINDOW_END - timedelta(hours=1), WINDOW_END)
    sync._emit_asset({"outlet_events": events}, window, sync.run({}))  # type: ignore[typeddict-item]
    for version, rows in zip(VERSIONS, (10, 4), strict=True):
        assert events[model_version_asset("fraud.detector", version)].extra["rows"] == rows


def test_templated_versions_reach_their_assets_through_the_alias() -> None:
    sync = sync_task(
        model_version_column="version", model_versions=["{{ params.champion }}", "{{ params.challenger }}"]
    )
    [alias] = sync.outlets
    assert isinstance(alias, AssetAlias)
    events = OutletEventAccessors()
    window = Window(WINDOW_END - timedelta(hours=1), WINDOW_END)
    summaries = {"champion": SyncSummary(fragments_sent=3), "challenger": SyncSummary(fragments_sent=1)}
    sync._emit_asset({"outlet_events": events}, window, versions_result("fraud", summaries, {}))  # type: ignore[typeddict-item]
    added = [(e.dest_asset_key.uri, e.extra["rows"]) for e in events[alias].asset_alias_events]
    assert added == [("aporia://models/fraud/versions/champion", 3), ("aporia://models/fraud/versions/challenger", 1)]


def test_spark_may_read_a_sync_of_several_versions() -> None:
    sync = sync_task(model_version_column="version", model_versions=VERSIONS, spark_min_rows=0)
    assert sync.spark_min_rows == 0
