"""The sync operator's parts beside the operator: its window, failure report and rejected rows."""

from __future__ import annotations

from typing import Any, Protocol


class TaskLog(Protocol):
    """What these parts log through: the operator's log (the Task SDK's, or a standard library logger in a test)."""

    def info(self, event: Any, *args: Any) -> Any: ...
    def warning(self, event: Any, *args: Any) -> Any: ...
    def error(self, event: Any, *args: Any) -> Any: ...
