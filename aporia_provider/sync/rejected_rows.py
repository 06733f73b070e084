"""The rejected-rows file: every row a window's try left out, kept where ``rejected_rows_path`` says."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from aporia_provider.sync.unload import try_key

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from aporia_provider.extraction.sql import Window


class RejectedRowsFile:
    """A JSON-lines object of rejected rows, written as they come; created with the first one."""

    def __init__(self, path: ObjectStoragePath) -> None:
        self.path = path
        self.rows = 0
        self._file: IO[str] | None = None

    def __call__(self, row: Mapping[str, Any]) -> None:
        if self._file is None:
            if self.path.protocol == "file":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w")
        self._file.write(json.dumps(row) + "\n")
        self.rows += 1

    @property
    def url(self) -> str:
        """Where it is, as a URL without the connection id the path carries."""
        return f"{self.path.protocol}://{self.path.path}"

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def rejected_rows_file(base_url: str, aws_conn_id: str | None, key: str) -> RejectedRowsFile:
    """Where one window's try (`key`, `unload.try_key`) keeps its rejected rows: ``<key>.jsonl`` under `base_url`."""
    from airflow.sdk import ObjectStoragePath

    base = ObjectStoragePath(base_url, conn_id=aws_conn_id if base_url.startswith("s3") else None)
    return RejectedRowsFile(base / f"{key}.jsonl")


def rejected_rows_files(
    base_url: str | None,
    aws_conn_id: str | None,
    model_id: str,
    versions: Sequence[str],
    window: Window,
    attempt: int,
    other: str | None = None,
) -> dict[str, RejectedRowsFile]:
    """Each version's file for one window's try (none without `base_url`); with `other`, under "" the file of the
    rows naming another version, kept under `other` in place of a version."""
    if not base_url:
        return {}

    def of(version: str) -> RejectedRowsFile:
        return rejected_rows_file(base_url, aws_conn_id, try_key(model_id, version, window, attempt))

    files = {version: of(version) for version in versions}
    if other is not None:
        files[""] = of(other)
    return files
