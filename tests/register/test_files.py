"""The manifest the round trip is checked against."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hokusai_registry.register.files import FileRecord, manifest


def test_manifest_lists_every_file_sorted_with_size_and_sha256(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.bin").write_bytes(b"\x00" * 3_000_000)
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert manifest(tmp_path) == (
        FileRecord("MLmodel", 12, hashlib.sha256(b"flavors: {}\n").hexdigest()),
        FileRecord("sub/weights.bin", 3_000_000, hashlib.sha256(b"\x00" * 3_000_000).hexdigest()),
    )
