"""The installed PySpark is one release: `pyspark` and `pyspark-client` install the same modules (pyproject.toml)."""

from __future__ import annotations

from importlib import metadata


def test_pyspark_and_pyspark_client_are_one_release() -> None:
    assert metadata.version("pyspark") == metadata.version("pyspark-client")
