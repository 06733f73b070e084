"""Redshift as the sync engine reaches it: everything Redshift's own, behind one object (`RedshiftWarehouse`).

The type codes its driver reports, the session a sync needs, the column names it accepts, its JDBC drivers, what
its errors mean, and its lineage namespace. `RedshiftIAMHook.warehouse()` supplies the object with the hook's
credentials; the engine (`extraction`) sees only the `Warehouse` protocol.
"""

from __future__ import annotations

import math
import re
import struct
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import count
from typing import Any

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.rulebook import ColumnType

_STRING = ColumnType("string", "string")
# A time of day, as Spark's JDBC reader marks it too (`logical_time_type`), though it reads it as a timestamp.
TIME_OF_DAY = ColumnType("time", "time")
# Redshift's type codes (PostgreSQL's where they agree) as Spark's JDBC reader types them, so a refusal names
# the type the same way on both paths. Other types (varbyte, geometry, arrays) are read only by Spark.
TYPE_CODES: dict[int, ColumnType] = {
    16: ColumnType("boolean", "boolean"),
    20: ColumnType("integral", "bigint"),
    21: ColumnType("integral", "smallint"),
    23: ColumnType("integral", "int"),
    700: ColumnType("fractional", "float"),
    701: ColumnType("fractional", "double"),
    1700: ColumnType("decimal", "decimal"),
    18: _STRING,  # "char"
    25: _STRING,  # text
    1042: _STRING,  # char(n)
    1043: _STRING,  # varchar
    3802: _STRING,  # jsonb (SUPER in the local stand-in)
    4000: _STRING,  # SUPER: JSON text
    1082: ColumnType("date", "date"),
    1114: ColumnType("timestamp", "timestamp"),
    1184: ColumnType("timestamp", "timestamp"),
    1083: TIME_OF_DAY,  # time
    1266: TIME_OF_DAY,  # timetz
}
# Plain Redshift identifiers; anything else (quotes, spaces, semicolons) is refused rather than escaped.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,126}$")
# The JDBC drivers Spark can read Redshift with: PostgreSQL's (which Redshift accepts; Debian ships it) or Amazon's.
JDBC_DRIVERS = {"postgresql": "org.postgresql.Driver", "redshift": "com.amazon.redshift.jdbc42.Driver"}
# Redshift (PostgreSQL) error classes that no retry fixes: syntax or access rule violation, data exception,
# feature not supported, invalid schema/catalog, insufficient privilege is inside 42.
_REFUSED_SQLSTATE_CLASSES = ("42", "22", "0A", "3F", "3D", "2B")
_TRANSIENT_SQLSTATE_CLASSES = ("08", "57", "53", "40", "28")
_STREAMS = count(1)
# Redshift's DECLARE page ("Cursor constraints"): the results of a cluster's open cursors are capped together, by node
# type; 8,000 MB is dc2.large's single-node cap, the least of them. The connection's extra cursor_result_limit_mb
# gives a cluster's own.
DEFAULT_CURSOR_LIMIT_MB = 8_000
_SERVER_ERROR = re.compile(r"\bERROR: (.+?)(?:\n|$| Position:| Where:| Hint:)")


def identifier(value: str, argument: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise SyncInputError(
            f"{argument} {value!r} is not a plain column name; use letters, digits and underscores "
            "(rename the column in the query with AS if needed)."
        )
    return value


def table_query(table: str) -> str:
    """SELECT * from a `table` or `schema.table` name, validated part by part."""
    parts = table.split(".") if isinstance(table, str) else [table]
    if not 1 <= len(parts) <= 2:
        raise SyncInputError(f"table {table!r} is not a table name; use table or schema.table.")
    for part in parts:
        if not isinstance(part, str) or not _IDENTIFIER.match(part):
            raise SyncInputError(
                f"table {table!r} is not a plain table name; use letters, digits and underscores, "
                "or pass a query instead."
            )
    return "SELECT * FROM " + ".".join(f'"{part}"' for part in parts)


def column_types(description: Sequence[Sequence[Any]]) -> dict[str, ColumnType | None]:
    """Name -> type of each column of a cursor description; None for the types only Spark reads."""
    return {str(column[0]): TYPE_CODES.get(int(column[1])) for column in description}


def jdbc_driver(name: str) -> str:
    """`name` when it is a JDBC driver Spark can read Redshift with; else one sentence naming the choices."""
    if name not in JDBC_DRIVERS:
        choices = " or ".join(repr(known) for known in JDBC_DRIVERS)
        raise SyncInputError(f"jdbc_driver {name!r} is not supported; use {choices}.")
    return name


@dataclass(frozen=True)
class RedshiftWarehouse:
    """Redshift for the sync engine (the `Warehouse` protocol), over a hook's credentials."""

    open_connection: Callable[[], Any] = field(repr=False)  # a redshift_connector connection
    spark_options: Callable[[], Mapping[str, str]] = field(repr=False)
    namespace: Callable[[], str] = field(repr=False)
    database: str = ""
    # Redshift cancels a statement running longer (its statement_timeout page), so a window query Airflow gave up
    # on does not keep its WLM slot: the task's execution_timeout.
    statement_timeout: timedelta | None = None
    cursor_limit_mb: float = DEFAULT_CURSOR_LIMIT_MB
    name = "Redshift"
    lineage_dialect = "redshift"

    @property
    def cursor_limit_bytes(self) -> int:
        return int(self.cursor_limit_mb * 1_000_000)

    def connect(self) -> Any:
        connection = self.open_connection()
        # Each statement its own transaction, so no lock on the source tables outlives its query; bounds compared
        # in UTC, as Spark's JDBC sessions compare them, whatever the user's time zone.
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        if self.statement_timeout:
            cursor.execute(f"SET statement_timeout TO {math.ceil(self.statement_timeout.total_seconds() * 1000)}")
        return connection

    def jdbc_options(self) -> Mapping[str, str]:
        options = dict(self.spark_options())
        if self.statement_timeout:
            # The JDBC driver cancels a statement running longer, on the server as well.
            options["queryTimeout"] = str(math.ceil(self.statement_timeout.total_seconds()))
        return options

    def stream(self, cursor: Any, query: str, rows_per_fetch: int) -> Iterator[Sequence[Sequence[Any]]]:
        # redshift_connector keeps a whole result in memory when it is executed; a cursor declared on the server
        # hands it out a chunk at a time. Redshift allows one only inside a transaction block. Each stream names
        # its cursor anew: the driver caches a statement's result columns by its text, and FETCH FROM the same name
        # would be taken for the previous query's.
        name = f"aporia_sync_rows_{next(_STREAMS)}"
        fetch = f"FETCH FORWARD {int(rows_per_fetch)} FROM {name}"
        cursor.execute("BEGIN")
        try:
            # Redshift's grammar (its DECLARE page): DECLARE cursor_name CURSOR FOR query, no NO SCROLL.
            cursor.execute(f"DECLARE {name} CURSOR FOR {query}")
            while True:
                cursor.execute(fetch)
                rows: Sequence[Sequence[Any]] = cursor.fetchall()
                if not rows:
                    break
                yield rows
            cursor.execute(f"CLOSE {name}")
        except BaseException:
            with suppress(Exception):  # the original failure is the one to report
                cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")

    def column_types(self, description: Sequence[Sequence[Any]]) -> dict[str, ColumnType | None]:
        return column_types(description)

    def identifier(self, value: str, argument: str) -> str:
        return identifier(value, argument)

    def driver_failure(self, exc: BaseException) -> tuple[bool, str] | None:
        if isinstance(exc, struct.error | EOFError):
            # redshift_connector reading an answer cut short: the connection broke mid-message.
            return False, "the connection to Redshift broke mid-answer"
        if "redshift_connector" not in sys.modules:  # not loaded: none of its errors can have been raised
            return None
        import redshift_connector

        if not isinstance(exc, redshift_connector.Error):
            return None
        # The server's fields (SQLSTATE `C`, message `M`) when it answered.
        fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        state, reason = str(fields.get("C") or ""), str(fields.get("M") or exc)
        return self.sql_state_refused(state) is not False if state else False, reason

    def sql_state_refused(self, state: str) -> bool | None:
        if state[:2] in _REFUSED_SQLSTATE_CLASSES:
            return True
        if state[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            return False
        return None

    def server_error(self, text: str) -> str | None:
        found = _SERVER_ERROR.search(text)
        return found.group(1) if found else None

    def lineage_namespace(self) -> str:
        return self.namespace()
