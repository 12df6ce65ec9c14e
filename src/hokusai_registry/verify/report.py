"""The report in two forms: JSON for machines (schema in docs/verify.md) and Markdown for the runbook."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hokusai_registry.verify.checks import CheckResult
from hokusai_registry.verify.recommend import Recommendation

SCHEMA_KEYS = ("url", "passed", "started_at", "duration_ms", "checks", "metrics")


@dataclass
class Report:
    """All check results; ``passed`` is true when no check failed (warn and skip do not fail, nor do
    ``recommendations``: what the deployment showed that production should not run with)."""

    url: str
    started_at: str
    duration_ms: float
    checks: list[CheckResult]
    notes: list[str] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.status != "fail" for c in self.checks)

    def metrics(self) -> dict[str, float]:
        """Every check's duration, what checks measured (MB/s, registration steps) and the totals."""
        out: dict[str, float] = {f"{c.id}_ms": c.duration_ms for c in self.checks}
        for c in self.checks:
            out.update(c.metrics)
        out["total_ms"] = self.duration_ms
        out["checks_ms"] = round(sum(c.duration_ms for c in self.checks), 1)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url, "passed": self.passed, "started_at": self.started_at,
            "duration_ms": self.duration_ms, "checks": [c.to_json() for c in self.checks],
            "metrics": self.metrics(), "notes": self.notes,
            "recommendations": [r.to_json() for r in self.recommendations],
        }  # fmt: skip

    def to_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# Registry verification: {verdict}",
            "",
            f"- URL: `{self.url}`",
            f"- Started: {self.started_at}",
            f"- Duration: {self.duration_ms / 1000:.1f} s",
            "",
            "## Verification steps",
            "",
            "| check | status | ms | detail |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c.title} | {c.status} | {c.duration_ms:.0f} | {_cell(c.detail)} |" for c in self.checks
        ]
        problems = [c for c in self.checks if c.status in ("fail", "warn")]
        lines += ["", "## Errors encountered", ""]
        lines += [f"- **{c.title}** ({c.status}): {c.detail}" for c in problems] or ["None."]
        lines += ["", "## Performance metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.metrics().items()]
        lines += ["", "## Recommendations for production", ""]
        fixes = [f"- {c.diagnosis}. Fix: {c.fix}." for c in problems if c.diagnosis]
        said = {c.fix for c in problems if c.diagnosis}  # a warn the checks gave already (the key's)
        fixes += [
            f"- **{r.title}**: {r.detail}. Fix: {r.fix}." for r in self.recommendations if r.fix not in said
        ]
        lines += fixes or [
            "- No problems found. Re-run verify after every deployment "
            "(`scripts/verify_mlflow_deployment.sh`)."
        ]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
