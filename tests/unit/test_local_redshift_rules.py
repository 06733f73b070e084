"""The Redshift stand-in's statement rules and UNLOAD grammar, without a server (the integration tier runs them
through redshift_connector, psql and the JDBC driver)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aporia_local import unload as unload_writer
from aporia_local.redshift_rules import Refusal, Rules, split_statements
from aporia_local.unload_grammar import Unload, parse_unload

ROLE = "arn:aws:iam::123456789012:role/r"


def test_split_statements_keeps_semicolons_inside_literals_comments_and_dollar_bodies() -> None:
    sql = "BEGIN; SELECT ';' AS x -- a; comment\n; DO $body$ BEGIN PERFORM 1; END $body$;; SELECT \"a;b\" FROM t"
    assert split_statements(sql) == [
        "BEGIN",
        " SELECT ';' AS x -- a; comment\n",
        " DO $body$ BEGIN PERFORM 1; END $body$",
        ' SELECT "a;b" FROM t',
    ]


@pytest.mark.parametrize(
    ("nodes", "fetch", "refused"),
    [
        (1, "FETCH FORWARD 1000 FROM c", None),
        (1, "fetch 1000 in c", None),
        (1, "FETCH NEXT FROM c", None),
        (1, "FETCH FORWARD 1001 FROM c", "22023"),
        (1, "/* a comment */ FETCH 5000 FROM c", "22023"),
        (1, "FETCH ALL FROM c", "0A000"),
        (1, "FETCH FORWARD ALL FROM c", "0A000"),
        (2, "FETCH FORWARD 5000 FROM c", None),
        (2, "FETCH ALL FROM c", None),
    ],
)
def test_fetch_limits_by_cluster_shape(nodes: int, fetch: str, refused: str | None) -> None:
    rules = Rules(nodes=nodes)
    assert rules.check(1, "DECLARE c CURSOR FOR SELECT 1") is None
    answer = rules.check(1, fetch)
    assert (answer.code if answer else None) == refused


def test_cursor_state_follows_close_commit_and_savepoints() -> None:
    rules = Rules()
    assert rules.check(1, "DECLARE a CURSOR FOR SELECT 1") is None
    assert isinstance(rules.check(1, "DECLARE b CURSOR FOR SELECT 1"), Refusal)
    assert rules.check(2, "DECLARE b CURSOR FOR SELECT 1") is None  # another session
    rules.check(1, "ROLLBACK TO SAVEPOINT s")
    assert isinstance(rules.check(1, "DECLARE b CURSOR FOR SELECT 1"), Refusal)
    rules.check(1, "CLOSE a")
    assert rules.check(1, "DECLARE b CURSOR FOR SELECT 1") is None
    rules.check(1, "COMMIT")
    assert rules.check(1, "DECLARE c CURSOR FOR SELECT 1") is None
    rules.transaction_ended(1)
    assert rules.check(1, "DECLARE d CURSOR FOR SELECT 1") is None


def test_the_cursor_limit_counts_every_session_s_open_cursor() -> None:
    rules = Rules(cursor_limit_bytes=100)
    for session in (1, 2):
        rules.check(session, f"DECLARE c{session} CURSOR FOR SELECT 1")
        rules.fetched(session, 60)
    answer = rules.check(1, "FETCH 10 FROM c1")
    assert answer is not None and answer.code == "54000"
    rules.transaction_ended(2)
    assert rules.check(1, "FETCH 10 FROM c1") is None


def test_a_refusal_runs_as_the_stand_in_s_procedure_with_its_quotes_doubled() -> None:
    assert Refusal("42601", 'syntax error at or near "it\'s"').as_sql() == (
        "CALL public.redshift_refusal('42601', 'syntax error at or near \"it''s\"')"
    )


def test_unload_quoting_and_options() -> None:
    sql = (
        "unload ('select * from t where a = ''x'' and b = \\'y\\' and c = ''\\\\''') "
        f"to 's3://bucket/some/prefix_' iam_role '{ROLE}' format as parquet parallel false "
        "maxfilesize as 1.5 gb manifest verbose cleanpath;"
    )
    assert parse_unload(sql) == Unload(
        query="select * from t where a = 'x' and b = 'y' and c = '\\'",
        bucket="bucket",
        prefix="some/prefix_",
        role=ROLE,
        parallel=False,
        max_file_bytes=1_500_000_000,
        manifest=True,
        verbose=True,
        cleanpath=True,
    )


@pytest.mark.parametrize(
    ("tail", "code", "message"),
    [
        ("PARQUET", "42601", "UNLOAD needs an authorization: IAM_ROLE 'arn:aws:iam::<account-id>:role/<role-name>'"),
        (f"IAM_ROLE '{ROLE}'", "0A000", "the Redshift stand-in unloads FORMAT PARQUET only"),
        (f"IAM_ROLE '{ROLE}' FORMAT JSON", "0A000", "the Redshift stand-in unloads FORMAT PARQUET only"),
        (f"IAM_ROLE '{ROLE}' PARQUET MAXFILESIZE 7 GB", "22023", "MAXFILESIZE must be between 5 MB and 6.2 GB"),
        (f"IAM_ROLE '{ROLE}' PARQUET PARTITION BY (a)", "42601", 'syntax error at or near "PARTITION"'),
    ],
)
def test_unload_refusals(tail: str, code: str, message: str) -> None:
    assert parse_unload(f"UNLOAD ('SELECT 1') TO 's3://b/p/' {tail}") == Refusal(code, message)


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("select * from t limit 10", True),
        ("select * from t where id in (select id from t order by id desc limit 10)", False),
        ("select ''limit'' as word, \"limit\" from t", False),
    ],
)
def test_unload_refuses_a_limit_in_the_outer_select(query: str, refused: bool) -> None:
    answer = parse_unload(f"UNLOAD ('{query}') TO 's3://b/p/' IAM_ROLE '{ROLE}' PARQUET")
    assert isinstance(answer, Refusal) == refused


def test_unload_writes_row_groups_of_rowgroupsize_s_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unload_writer, "ROW_GROUP_BYTES", 1_000_000)
    files = unload_writer._SliceFiles(tmp_path, lambda part: f"0000_part_{part:02d}.parquet")
    batch = pa.record_batch({"pad": pa.array(["x" * 96] * 2_500)})  # ~250 kB in Arrow
    for _ in range(10):
        files.write(batch, max_bytes=6_200_000_000)
    files.close()
    metadata = pq.read_metadata(tmp_path / files.names[0])
    assert files.names == ["0000_part_00.parquet"] and files.rows == [25_000]
    assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == [10_000, 10_000, 5_000]
