"""The Redshift stand-in: the unchanged redshift_connector over a real socket, through the adapter; SUPER."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import redshift_connector

from aporia_local.credentials import issue_password
from aporia_local.seed import SeedPlan, embedding_value, seed_predictions
from aporia_local.stack import DATABASE, LocalStack
from tests.helpers import redshift_sql


def connect(stack: LocalStack, user: str, password: str) -> redshift_connector.Connection:
    return redshift_connector.connect(
        host="127.0.0.1", port=stack.settings.redshift_port, database=DATABASE, user=user, password=password, ssl=False
    )


def test_ddl_inserts_and_typed_parameterised_select(stack: LocalStack) -> None:
    with stack.master_connection() as conn:
        cur = conn.cursor()
        cur.execute("DROP TABLE IF EXISTS typed_values")
        cur.execute(
            "CREATE TABLE typed_values "
            "(id VARCHAR(16), ts TIMESTAMPTZ, flag BOOLEAN, score FLOAT8, note TEXT, vec REAL[])"
        )
        moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        cur.executemany(
            "INSERT INTO typed_values VALUES (%s, %s, %s, %s, %s, %s)",
            [
                ("a", moment, True, 0.25, "héllo", [1.5, 2.5]),
                ("b", moment + timedelta(hours=2), False, 1.0, "x", [0.0]),
            ],
        )
        conn.commit()
        cur.execute("SELECT * FROM typed_values WHERE ts >= %s AND ts < %s", (moment, moment + timedelta(hours=1)))
        rows = cur.fetchall()
    assert len(rows) == 1
    row_id, ts, flag, score, note, vec = rows[0]
    assert (row_id, ts, flag, score, note, vec) == ("a", moment, True, 0.25, "héllo", [1.5, 2.5])
    assert isinstance(ts, datetime) and isinstance(flag, bool) and isinstance(score, float)
    assert isinstance(vec, list) and all(isinstance(v, float) for v in vec)


def test_reports_a_redshift_server_version(stack: LocalStack) -> None:
    with stack.master_connection() as conn:
        statuses = dict(conn.parameter_statuses)
    assert statuses[b"server_version"] == b"8.0.2"


def test_wrong_master_password_is_refused(stack: LocalStack) -> None:
    with pytest.raises(redshift_connector.ProgrammingError, match='password authentication failed for user "awsuser"'):
        connect(stack, "awsuser", "not-the-password")


def test_temporary_password_is_bound_to_its_user_and_expiry(stack: LocalStack) -> None:
    key = stack.settings.signing_key
    valid = issue_password(key, "IAM:alice", datetime.now(timezone.utc) + timedelta(minutes=15))
    with connect(stack, "IAM:alice", valid) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 41 + 1")
        assert cur.fetchone() == [42]
    with pytest.raises(redshift_connector.ProgrammingError, match="IAM:bob"):
        connect(stack, "IAM:bob", valid)
    expired = issue_password(key, "IAM:alice", datetime.now(timezone.utc) - timedelta(seconds=1))
    with pytest.raises(redshift_connector.ProgrammingError, match="password authentication failed"):
        connect(stack, "IAM:alice", expired)


def test_seeded_embeddings_are_super_holding_json_arrays(stack: LocalStack, seeded: SeedPlan) -> None:
    rows = redshift_sql(
        stack,
        "SELECT prediction_id, embeddings, pg_typeof(embeddings)::text FROM model_predictions "
        "ORDER BY prediction_id LIMIT 3",
    )
    for prediction_id, text, type_name in rows:
        n = int(prediction_id.removeprefix("pred-"))
        assert (type_name, type(text)) == ("super", str)
        assert json.loads(text) == [embedding_value(n, d) for d in range(1, seeded.embedding_dim + 1)]


def test_json_parse_builds_super_and_refuses_malformed_json(stack: LocalStack) -> None:
    assert redshift_sql(stack, "SELECT JSON_PARSE(%s), pg_typeof(JSON_PARSE('1'))::text", ('[1.5, {"a": null}]',)) == [
        ['[1.5, {"a": null}]', "super"]
    ]
    with pytest.raises(redshift_connector.ProgrammingError, match="invalid input syntax for type json"):
        redshift_sql(stack, "SELECT JSON_PARSE('[0.1, 0.2')")


def test_the_seed_numbers_rows_past_int4_products(stack: LocalStack) -> None:
    """Row n's amount uses n * 7919, which left int4 after row 271,183: a seed of 300,000 rows (10M work the same
    way) failed with "integer out of range"."""
    plan = SeedPlan(datetime(2026, 11, 20, tzinfo=timezone.utc), hours=1, rows_per_hour=300_000, embedding_dim=1)
    with stack.master_connection() as connection:
        seed_predictions(connection, plan, table="seed_of_300k")
    [[count, amount]] = redshift_sql(
        stack, "SELECT count(*), max(amount) FILTER (WHERE prediction_id = 'pred-0000299999') FROM seed_of_300k"
    )
    assert (count, amount) == (300_000, round(100 + (299_999 * 7919) % 10000 / 10.0, 2))
    redshift_sql(stack, "DROP TABLE seed_of_300k")
