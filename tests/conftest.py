from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Registry, run_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One embedded-default registry (SQLite, local artifacts, 2 workers) shared by the e2e tests."""
    with run_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def fresh_tmp(tmp_path: Path) -> Path:
    return tmp_path
