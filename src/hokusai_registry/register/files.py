"""What was uploaded, file by file: the record the round trip is checked against."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hokusai_registry.client import Digest, hash_file


@dataclass(frozen=True)
class FileRecord:
    """One model file: its path inside the model directory (POSIX), size in bytes and SHA-256."""

    path: str
    size: int
    sha256: str

    @property
    def digest(self) -> Digest:
        return Digest(self.sha256, self.size)


def manifest(directory: Path) -> tuple[FileRecord, ...]:
    """Every file under ``directory``, sorted, so two registrations of one model list the same."""
    records = []
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hash_file(file)
        records.append(FileRecord(file.relative_to(directory).as_posix(), digest.size, digest.sha256))
    return tuple(records)
