"""Data sources Aporia reads from, mirroring the Aporia SDK's classes; each serialises to {type, config}."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from aporia_provider.exceptions import DataSourceError


@dataclass(frozen=True)
class JDBCDataSource:
    url: str = field(repr=False)  # IAM URLs carry the AWS secret key
    query: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sample_size: float = 1
    select_expr: list[str] | None = None
    read_options: dict[str, Any] | None = None

    type: ClassVar[str] = "jdbc"

    def __post_init__(self) -> None:
        if not self.url.startswith("jdbc:"):
            raise DataSourceError(f"The data source url must start with 'jdbc:', got {self.url.split('?')[0]!r}.")
        _, separator, authority = self.url.partition("://")
        if not separator or not urlsplit("//" + authority).hostname:
            raise DataSourceError(
                "The data source url has no host; use jdbc:<driver>://<host>:<port>/<database>, e.g. "
                "jdbc:redshift:iam://examplecluster.abc123.us-west-2.redshift.amazonaws.com:5439/dev."
            )
        if not self.query.strip():
            raise DataSourceError("The data source query is empty; give the SELECT that returns the model's rows.")
        if not 0 < self.sample_size <= 1:
            raise DataSourceError(f"sample_size must be in (0, 1], got {self.sample_size}.")

    def serialize(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "config": {
                "url": self.url,
                "query": self.query,
                "user": self.user,
                "password": self.password,
                "sample_size": self.sample_size,
                "select_expr": self.select_expr,
                "read_options": self.read_options,
            },
        }


@dataclass(frozen=True)
class PostgresJDBCDataSource(JDBCDataSource):
    type: ClassVar[str] = "postgres-jdbc"
