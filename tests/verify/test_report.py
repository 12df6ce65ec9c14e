"""The report's JSON schema (from the issue) and the Markdown sections the runbook asks for."""

from __future__ import annotations

import json

from hokusai_registry.verify.checks import CheckResult
from hokusai_registry.verify.recommend import Recommendation
from hokusai_registry.verify.report import SCHEMA_KEYS, Report

CHECK_KEYS = {"id", "title", "status", "duration_ms", "detail", "diagnosis", "fix"}


def sample(*statuses: str) -> Report:
    results = [
        CheckResult(f"c{i}", f"Check {i}", s, 10.0 * (i + 1), "saw | this",
                    "F1: cause" if s in ("fail", "warn") else "", "do that" if s != "pass" else "")
        for i, s in enumerate(statuses)
    ]  # fmt: skip
    results[0].metrics = {"large_upload_mb_s": 100.0}
    return Report("http://registry", "2026-01-01T00:00:00+00:00", 123.0, results, ["clean-up: deleted model"])


def test_json_schema() -> None:
    data = json.loads(json.dumps(sample("pass", "skip").to_json()))
    assert set(SCHEMA_KEYS) <= set(data)
    assert data["passed"] is True
    assert all(set(c) == CHECK_KEYS for c in data["checks"])
    assert data["metrics"] == {
        "c0_ms": 10.0, "c1_ms": 20.0, "large_upload_mb_s": 100.0, "total_ms": 123.0, "checks_ms": 30.0,
    }  # fmt: skip


def test_warn_passes_fail_fails_and_empty_fails() -> None:
    assert sample("pass", "warn").passed
    assert not sample("pass", "fail").passed
    assert not Report("u", "t", 0, []).passed


def test_markdown_has_the_runbook_sections() -> None:
    text = sample("pass", "fail", "warn").to_markdown()
    assert text.startswith("# Registry verification: FAILED")
    for heading in ("Verification steps", "Errors encountered", "Performance metrics",
                    "Recommendations for production", "Notes"):  # fmt: skip
        assert f"## {heading}" in text
    assert "saw \\| this" in text  # table cells escaped
    assert "F1: cause. Fix: do that." in text
    assert "- No problems found" in sample("pass").to_markdown()


def recommended(*found: Recommendation, statuses: tuple[str, ...] = ("pass",)) -> Report:
    report = sample(*statuses)
    report.recommendations = list(found)
    return report


SQLITE = Recommendation(
    "sqlite_backend", "SQLite backend store", "the backend store is SQLite", "use PostgreSQL"
)


def test_recommendations_are_json_objects_and_never_fail_the_report() -> None:
    report = recommended(SQLITE)
    data = json.loads(json.dumps(report.to_json()))
    assert data["passed"] is True
    assert data["recommendations"] == [
        {"id": "sqlite_backend", "title": "SQLite backend store", "detail": "the backend store is SQLite",
         "fix": "use PostgreSQL"},
    ]  # fmt: skip
    assert sample("pass").to_json()["recommendations"] == []


def test_markdown_lists_recommendations_and_no_problems_only_when_there_are_none() -> None:
    text = recommended(SQLITE).to_markdown()
    section = text.split("## Recommendations for production", 1)[1].split("## Notes", 1)[0]
    assert "- **SQLite backend store**: the backend store is SQLite. Fix: use PostgreSQL." in section
    assert "No problems found" not in section
    assert text.startswith("# Registry verification: PASSED")


def test_a_recommendation_a_check_already_gave_is_said_once() -> None:
    """The authentication check's key warning is also the key recommendation: one line, the check's."""
    key = Recommendation("key_expiring", "The key expires soon", "key k_1 expires in 3 days", "do that")
    text = recommended(key, SQLITE, statuses=("pass", "warn")).to_markdown()
    section = text.split("## Recommendations for production", 1)[1]
    assert section.count("do that") == 1 and "F1: cause. Fix: do that." in section
    assert "SQLite backend store" in section
