"""The installed PySpark is one release: `pyspark` and `pyspark-client` install the same modules (pyproject.toml)."""

from __future__ import annotations

from importlib import metadata

import pytest

from aporia_provider.exceptions import SyncInputError
from aporia_provider.extraction.spark import check_one_pyspark


def test_pyspark_and_pyspark_client_are_one_release() -> None:
    assert metadata.version("pyspark") == metadata.version("pyspark-client")


def test_a_mixed_pyspark_install_is_refused_in_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"pyspark": "4.2.0", "pyspark-client": "4.1.1"}
    monkeypatch.setattr(metadata, "version", versions.__getitem__)
    with pytest.raises(SyncInputError) as raised:
        check_one_pyspark()
    assert str(raised.value) == (
        "pyspark 4.2.0 and pyspark-client 4.1.1 are both installed and overwrite each other's pyspark package; "
        "install one release of both, e.g. pip install 'pyspark[connect]==4.2.0' 'pyspark-client==4.2.0'."
    )
