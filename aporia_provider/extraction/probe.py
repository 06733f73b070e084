"""What a sync learns of a source before reading it: its query's column types, and its window's rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aporia_provider.extraction.rulebook import ColumnType
from aporia_provider.extraction.sql import Window, derived, windowed
from aporia_provider.extraction.warehouse import Warehouse


class Probe(Protocol):
    """Who learns a query's column types and counts a window: the task's connection, or Spark."""

    def column_types(self, query: str) -> dict[str, ColumnType | None]: ...

    def count(self, query: str, timestamp_column: str, window: Window) -> int: ...


@dataclass
class TaskProbe:
    """The task's own connection as a probe."""

    cursor: Callable[[], Any]
    warehouse: Warehouse

    def column_types(self, query: str) -> dict[str, ColumnType | None]:
        cursor = self.cursor()
        cursor.execute(f"SELECT * FROM {derived(query)} LIMIT 0")
        return self.warehouse.column_types(cursor.description)

    def count(self, query: str, timestamp_column: str, window: Window) -> int:
        cursor = self.cursor()
        cursor.execute(f"SELECT count(*) FROM {windowed(query, timestamp_column, window)}")
        return int(cursor.fetchone()[0])
