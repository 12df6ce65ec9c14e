"""A model version's files as stored: under a local artifact destination, or in S3 (any store MLflow reads).

Local files are scanned where they lie. Remote ones are downloaded one at a time to a temporary
file and deleted after their scan, so disk use is bounded by the largest file, memory by the scanner's
read size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hokusai_registry.settings import SERVED_ARTIFACT_ROOT

__all__ = ["ModelFiles", "StoredFile", "artifact_prefix"]


def artifact_prefix(storage_location: str, destination: str) -> str | None:
    """The path under the artifact destination where a version's files are, or None if not under it.

    ``mlflow-artifacts:/1/models/m-1/artifacts`` is served from the destination itself; a location
    spelled with the destination's own URI (``s3://bucket/root/1/...``) is under it too.
    """
    if storage_location.startswith(SERVED_ARTIFACT_ROOT.rstrip("/")):
        path = urlsplit(storage_location).path
        return path.strip("/") or None
    root = destination.rstrip("/")
    local_root = urlsplit(root).path if root.startswith("file:") else root
    location = urlsplit(storage_location).path if storage_location.startswith("file:") else storage_location
    for base in {root, local_root}:
        if location.startswith(base + "/"):
            return location[len(base) + 1 :].strip("/") or None
    return None


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the version's root, with "/" separators
    size: int


class ModelFiles:
    """The files under ``prefix`` of the artifact destination ``destination`` (a path or a URI).

    Listed once per object: a version's files do not change while it is scanned, and in S3 every
    listing is a round trip per directory (a scan used to list three times, plus twice per file).
    """

    def __init__(self, destination: str, prefix: str) -> None:
        self.destination = destination.rstrip("/")
        self.prefix = prefix.strip("/")
        scheme = urlsplit(self.destination).scheme
        self.local_root = (
            None if scheme not in ("", "file") else Path(urlsplit(self.destination).path) / self.prefix
        )
        self._listed: tuple[list[StoredFile], bool] | None = None  # the files; whether the prefix is one

    def listing(self) -> list[StoredFile]:
        """Every file under the prefix; a prefix that is itself one file (a version registered from a
        single file) lists that file, by its name."""
        return list(self._list()[0])

    def open_each(self) -> Iterator[tuple[StoredFile, Path]]:
        """Each file with a local path to read it from, valid until the next one is asked for."""
        files, single = self._list()
        if self.local_root is not None:
            for stored in files:
                yield stored, self.local_root if single else self.local_root / stored.path
            return
        from hokusai_registry.server.mlflow_adapter import download_one_file

        repository = self._repository(self._parent() if single else self.prefix)
        for stored in files:
            with tempfile.TemporaryDirectory(prefix="hokusai-scan-") as scratch:
                local = Path(scratch) / stored.path.rsplit("/", 1)[-1]
                download_one_file(repository, stored.path, str(local))
                yield stored, local

    def _list(self) -> tuple[list[StoredFile], bool]:
        if self._listed is None:
            self._listed = self._list_now()
        return self._listed

    def _list_now(self) -> tuple[list[StoredFile], bool]:
        if self.local_root is not None:
            if self.local_root.is_file():
                return [StoredFile(self.local_root.name, self.local_root.stat().st_size)], True
            found = [
                StoredFile(path.relative_to(self.local_root).as_posix(), path.stat().st_size)
                for path in sorted(self.local_root.rglob("*"))
                if path.is_file() and not path.is_symlink()
            ]
            return found, False
        found = sorted(self._remote_listing(""), key=lambda stored: stored.path)
        return (found, False) if found else (self._remote_single(), True)

    def _repository(self, prefix: str | None = None) -> Any:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        prefix = self.prefix if prefix is None else prefix
        return get_artifact_repository(f"{self.destination}/{prefix}".rstrip("/"))

    def _parent(self) -> str:
        return self.prefix.rsplit("/", 1)[0] if "/" in self.prefix else ""

    def _remote_single(self) -> list[StoredFile]:
        name = self.prefix.rsplit("/", 1)[-1]
        for info in self._repository(self._parent()).list_artifacts(None):
            if not info.is_dir and info.path.rsplit("/", 1)[-1] == name:
                return [StoredFile(name, int(info.file_size or 0))]
        return []

    def _remote_listing(self, path: str) -> Iterator[StoredFile]:
        repository = self._repository()
        for info in repository.list_artifacts(path or None):
            if info.is_dir:
                yield from self._remote_listing(info.path)
            else:
                yield StoredFile(info.path.replace(os.sep, "/"), int(info.file_size or 0))
