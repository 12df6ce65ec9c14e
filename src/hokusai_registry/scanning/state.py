"""What scanning one stored file may do, and what it has found so far.

``Limits`` bound the work a stored file can make the scanner do; ``Scan`` carries one file's findings,
and its decompression budget through every scanner, and leads back to the
per-file dispatch (engine.py) for what a scanner finds inside: an archive member, an inflated
stream, bytes a nested loader would open. So the scanners never import the dispatch, nor each other
for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from hokusai_registry.scanning.report import Finding, Verdict

__all__ = ["READ_BYTES", "Bomb", "GiB", "KiB", "Limits", "MiB", "Scan", "human_size"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
READ_BYTES = 1 * MiB  # hashing, copying and inflating chunk


@dataclass(frozen=True)
class Limits:
    """What one stored file may make the scanner do; past any of them the file is an ``error``."""

    max_depth: int = 3  # containers (zip, tar, gzip, ...) around the innermost member
    max_members: int = 10_000  # per archive
    max_expanded: int = 8 * GiB  # bytes produced by decompression, per stored file
    max_ratio: int = 1_000  # decompressed : compressed, checked once past ratio_floor
    ratio_floor: int = 64 * MiB
    max_document: int = 16 * MiB  # JSON the scanner parses (Keras configs, safetensors headers)
    max_directory: int = 64 * MiB  # a zip's central directory, which zipfile holds in memory


class Bomb(Exception):
    """Decompression went past a limit: the whole stored file is an error."""


@dataclass
class Scan:
    """The state of scanning one stored file: its findings and its decompression budget.

    ``dispatch`` scans a file found inside this one (``nested``): sniff it, hand it to its kind's
    scanner."""

    limits: Limits
    dispatch: Callable[[Scan, str, IO[bytes], int], object]
    findings: list[Finding] = field(default_factory=list)
    expanded: int = 0
    _seen: set[Finding] = field(default_factory=set)

    def add(self, path: str, verdict: Verdict, detail: str) -> None:
        finding = Finding(path, verdict, detail)
        if finding not in self._seen:
            self._seen.add(finding)
            self.findings.append(finding)

    def expand(self, count: int) -> None:
        self.expanded += count
        if self.expanded > self.limits.max_expanded:
            raise Bomb(f"expands past {human_size(self.limits.max_expanded)} (a decompression bomb?)")

    def nested(self, path: str, stream: IO[bytes], depth: int) -> None:
        """Scan a member, an inflated stream or embedded bytes, ``depth`` containers down."""
        self.dispatch(self, path, stream, depth)

    def too_deep(self, path: str, depth: int) -> bool:
        """Whether opening a container at ``depth`` goes past ``max_depth`` (an error finding if so)."""
        if depth + 1 <= self.limits.max_depth:
            return False
        self.add(path, Verdict.ERROR, f"nested too deep (more than {self.limits.max_depth} archive levels)")
        return True


def human_size(count: int) -> str:
    return f"{count / GiB:.1f} GiB" if count >= GiB else f"{count / MiB:.0f} MiB"
