"""Data sources: checked on construction, serialised as {type, config}, secrets kept out of repr."""

from __future__ import annotations

from typing import Any

import pytest

from aporia_provider.datasources import JDBCDataSource, PostgresJDBCDataSource
from aporia_provider.exceptions import DataSourceError

URL = "jdbc:redshift:iam://examplecluster.abc123.us-west-2.redshift.amazonaws.com:5439/dev?SecretAccessKey=s3cr3t"
NO_HOST = (
    "The data source url has no host; use jdbc:<driver>://<host>:<port>/<database>, e.g. "
    "jdbc:redshift:iam://examplecluster.abc123.us-west-2.redshift.amazonaws.com:5439/dev."
)


def test_serialize_is_the_design_jdbc_config() -> None:
    source = JDBCDataSource(
        url=URL,
        query="SELECT * FROM ml.predictions",
        user="alice",
        password="pw",
        sample_size=0.5,
        select_expr=["*", "amount * 2 AS double_amount"],
        read_options={"fetchsize": "1000"},
    )
    assert source.serialize() == {
        "type": "jdbc",
        "config": {
            "url": URL,
            "query": "SELECT * FROM ml.predictions",
            "user": "alice",
            "password": "pw",
            "sample_size": 0.5,
            "select_expr": ["*", "amount * 2 AS double_amount"],
            "read_options": {"fetchsize": "1000"},
        },
    }


def test_defaults_serialize_as_nulls_and_full_sample() -> None:
    assert JDBCDataSource(url=URL, query="SELECT 1").serialize()["config"] == {
        "url": URL,
        "query": "SELECT 1",
        "user": None,
        "password": None,
        "sample_size": 1,
        "select_expr": None,
        "read_options": None,
    }


def test_postgres_jdbc_type() -> None:
    source = PostgresJDBCDataSource(url="jdbc:postgresql://db.internal:5432/dev", query="SELECT 1")
    assert source.serialize()["type"] == "postgres-jdbc"


def test_repr_hides_url_and_password() -> None:
    text = repr(JDBCDataSource(url=URL, query="SELECT 1", user="alice", password="hunter22"))
    assert "s3cr3t" not in text and "hunter22" not in text and "url=" not in text
    assert "user='alice'" in text


def test_url_without_jdbc_prefix_names_it_without_the_query_string() -> None:
    with pytest.raises(DataSourceError) as raised:
        JDBCDataSource(url="redshift://h:5439/dev?password=secret", query="SELECT 1")
    assert str(raised.value) == "The data source url must start with 'jdbc:', got 'redshift://h:5439/dev'."


@pytest.mark.parametrize("url", ["jdbc:redshift:iam:///dev", "jdbc:redshift", "jdbc:postgresql://:5432/dev"])
def test_url_without_host(url: str) -> None:
    with pytest.raises(DataSourceError) as raised:
        JDBCDataSource(url=url, query="SELECT 1")
    assert str(raised.value) == NO_HOST


def test_empty_query() -> None:
    with pytest.raises(DataSourceError) as raised:
        JDBCDataSource(url=URL, query=" \n ")
    assert str(raised.value) == "The data source query is empty; give the SELECT that returns the model's rows."


@pytest.mark.parametrize("sample_size", [0, -0.1, 1.5])
def test_sample_size_out_of_range(sample_size: Any) -> None:
    with pytest.raises(DataSourceError) as raised:
        JDBCDataSource(url=URL, query="SELECT 1", sample_size=sample_size)
    assert str(raised.value) == f"sample_size must be in (0, 1], got {sample_size}."


def test_data_source_error_is_a_value_error() -> None:
    assert issubclass(DataSourceError, ValueError)
