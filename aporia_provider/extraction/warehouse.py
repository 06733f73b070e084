"""What the sync engine needs of the warehouse it reads: one object, supplied by the warehouse's hook.

The engine knows no warehouse by name. Everything particular to one (how to open a session and set it up, Spark's
JDBC options, what its type codes mean, which column names it accepts, what its driver's errors mean, where its
tables live for lineage) sits behind this protocol; `aporia_provider.redshift.RedshiftWarehouse` is Redshift's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from aporia_provider.extraction.rulebook import ColumnType


class Warehouse(Protocol):
    @property
    def name(self) -> str:
        """As messages say it: "Redshift refused the query ..." """

    @property
    def lineage_dialect(self) -> str:
        """OpenLineage's SQL parser dialect."""

    @property
    def database(self) -> str:
        """The database of unqualified tables, for lineage."""

    @property
    def cursor_limit_bytes(self) -> int | None:
        """The most a cursor's result may hold (the warehouse materializes it whole), or None for no limit."""

    def connect(self) -> Any:
        """A DB-API connection with fresh credentials, its session set up for the sync (UTC, autocommit)."""

    def jdbc_options(self) -> Mapping[str, str]:
        """Spark's JDBC options (url, driver, user, password) with fresh credentials."""

    def stream(self, cursor: Any, query: str, rows_per_fetch: int) -> Iterator[Sequence[Sequence[Any]]]:
        """The rows of `query` in chunks of at most `rows_per_fetch`, never more in this process at once."""

    def column_types(self, description: Sequence[Sequence[Any]]) -> dict[str, ColumnType | None]:
        """Name -> type of each column of a cursor description, as Spark names it; None where only Spark reads it."""

    def identifier(self, value: str, argument: str) -> str:
        """`value` when it is a column name the engine may quote into SQL; else SyncInputError naming `argument`."""

    def driver_failure(self, exc: BaseException) -> tuple[bool, str] | None:
        """(refused, reason) for an error of the warehouse's own driver: refused when no re-run can fix it."""

    def sql_state_refused(self, state: str) -> bool | None:
        """Whether an error of this SQLSTATE is the query's fault (True), a passing one (False), or unknown."""

    def server_error(self, text: str) -> str | None:
        """The server's own reason in a JDBC error text, when it holds one."""

    def lineage_namespace(self) -> str:
        """The OpenLineage namespace of the warehouse's tables."""
