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


SERVER_FILES = ("tests/e2e/", "tests/test_cli.py")  # each starts servers and takes minutes


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files that start servers first: with one worker per core (`make test`) the quick unit
    tests then fill the end, instead of one long file running alone while the other worker idles."""
    items.sort(key=lambda item: not item.nodeid.startswith(SERVER_FILES))
