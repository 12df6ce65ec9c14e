"""What was uploaded, file by file: the record the round trip is checked against."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FileRecord:
    """One model file: its path inside the model directory (POSIX), size in bytes and SHA-256."""

    path: str
    size: int
    sha256: str


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def manifest(directory: Path) -> tuple[FileRecord, ...]:
    """Every file under ``directory``, sorted, so two registrations of one model list the same."""
    records = []
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        sha256, size = sha256_file(file)
        records.append(FileRecord(file.relative_to(directory).as_posix(), size, sha256))
    return tuple(records)
