"""What a scan found: verdicts, findings, and the report stored with each model version.

The grades, worst first: ``unsafe`` (a known-dangerous callable: process execution, ``eval``/``exec``,
import machinery, file or network access), ``error`` (a file that could not be scanned), ``suspicious``
(a global outside the allowlist of ML libraries), ``clean``. ``error`` ranks above ``suspicious`` and is
never taken for clean. A report's verdict is its worst file's.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "ScanReport", "ScannedFile", "Verdict", "worst"]


class Verdict(enum.StrEnum):
    CLEAN = "clean"
    SUSPICIOUS = "suspicious"
    ERROR = "error"
    UNSAFE = "unsafe"

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)


def worst(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=lambda verdict: verdict.rank, default=Verdict.CLEAN)


def storable(text: str) -> str:
    """``text`` with what a database cannot store (NUL, lone surrogates) as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


@dataclass(frozen=True)
class Finding:
    """One thing found in one file: ``path`` is the file (``a.zip!inner/data.pkl`` inside archives)."""

    path: str
    verdict: Verdict
    detail: str  # e.g. "calls os.system", "imports pandas.core.frame.DataFrame (not allowlisted)"

    def __post_init__(self) -> None:
        # Names read out of a hostile file may hold NULs and lone surrogates, which neither PostgreSQL
        # nor UTF-8 can store: keep them visible as escapes, so the verdict is always recorded.
        object.__setattr__(self, "path", storable(self.path))
        object.__setattr__(self, "detail", storable(self.detail))

    def line(self) -> str:
        return f"{self.path}: {self.detail}"


@dataclass(frozen=True)
class ScannedFile:
    """A file of the model as stored, with the SHA-256 a consumer can check its download against."""

    path: str
    size: int
    sha256: str
    kind: str  # what its content is (pickle, zip, numpy, safetensors, text, ...), not its name
    verdict: Verdict

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", storable(self.path))  # an archive member's name, as stored


@dataclass(frozen=True)
class ScanReport:
    scanner: str  # name and version of every library that looked, e.g. "modelaudit 0.2.54"
    files: list[ScannedFile] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return worst([finding.verdict for finding in self.findings] + [file.verdict for file in self.files])

    def summary(self, limit: int = 400) -> str:
        """The worst findings in one line, as MLflow's ``status_message`` (500 characters) carries it."""
        ranked = sorted(self.findings, key=lambda finding: -finding.verdict.rank)
        if not ranked:
            return f"{self.verdict.value}: {len(self.files)} files, no findings"
        text = f"{self.verdict.value}: " + "; ".join(finding.line() for finding in ranked)
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def to_json(self) -> str:
        return json.dumps({"verdict": self.verdict.value, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ScanReport:
        data: dict[str, Any] = json.loads(text)
        return cls(
            scanner=data["scanner"],
            files=[ScannedFile(**{**item, "verdict": Verdict(item["verdict"])}) for item in data["files"]],
            findings=[Finding(**{**item, "verdict": Verdict(item["verdict"])}) for item in data["findings"]],
        )
