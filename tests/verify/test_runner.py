"""The plan and how one check's outcome, failure or crash becomes a ``CheckResult`` (no server needed)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console

from hokusai_registry.verify import diagnose
from hokusai_registry.verify.checks import Context, Failed, Outcome
from hokusai_registry.verify.runner import Check, plan, run_one, verify


@pytest.fixture
def ctx() -> Iterator[Context]:
    context = Context("http://127.0.0.1:9", "hk_test")
    yield context
    context.close()


def test_the_plan_runs_the_documented_checks_in_order() -> None:
    assert [c.id for c in plan()] == [
        "reachability", "authentication", "artifact_round_trip", "artifact_locations", "registration",
        "model_scanning", "large_artifact",
    ]  # fmt: skip


def test_skip_reasons_follow_what_earlier_checks_found(ctx: Context) -> None:
    checks = {c.id: c for c in plan(skip_registration=True)}
    assert checks["reachability"].skip_reason(ctx) is None
    assert checks["authentication"].skip_reason(ctx) == "server not reachable"
    assert checks["artifact_round_trip"].skip_reason(ctx) == "authentication did not pass"
    ctx.reachable = ctx.authenticated = True
    assert checks["authentication"].skip_reason(ctx) is None
    assert checks["large_artifact"].skip_reason(ctx) == "artifact round trip did not pass"
    ctx.artifacts_ok = True
    assert checks["large_artifact"].skip_reason(ctx) is None
    assert checks["registration"].skip_reason(ctx) == "--skip-registration"
    assert checks["model_scanning"].skip_reason(ctx) == "--skip-registration"
    ctx.large_mb = 0
    assert checks["large_artifact"].skip_reason(ctx) == "--large-mb 0"


def test_an_outcome_becomes_a_pass_with_its_detail_and_metrics(ctx: Context) -> None:
    result = run_one(ctx, Check("x", "X check", lambda ctx: Outcome("done", {"x_mb_s": 12.5})))
    assert (result.id, result.title, result.status) == ("x", "X check", "pass")
    assert (result.detail, result.metrics) == ("done", {"x_mb_s": 12.5})
    assert run_one(ctx, Check("y", "Y", lambda ctx: Outcome("no metrics"))).metrics == {}


def test_failed_carries_its_status_and_diagnosis(ctx: Context) -> None:
    def warns(ctx: Context) -> Outcome:
        raise Failed("3 experiments elsewhere", diagnose.entry("F3", "s3://"), status="warn")

    result = run_one(ctx, Check("locations", "Locations", warns))
    assert (result.status, result.detail) == ("warn", "3 experiments elsewhere")
    assert result.diagnosis.startswith("F3: ") and result.fix == diagnose.CATALOGUE["F3"][1]


def test_a_crash_in_a_check_is_a_fail_not_an_exception(ctx: Context) -> None:
    def crashes(ctx: Context) -> Outcome:
        raise KeyError("experiment_id")

    result = run_one(ctx, Check("c", "C", crashes))
    assert result.status == "fail" and result.detail == "KeyError: 'experiment_id'"
    assert result.diagnosis.startswith("verify error")


def test_verify_hands_what_the_checks_observed_to_the_report(ctx: Context) -> None:
    """Recommendations come from ``ctx.observed`` and never change the verdict (here: nothing listens)."""
    ctx.observed.database = "sqlite"
    report = verify(ctx, console=Console(file=io.StringIO()))
    assert [r.id for r in report.recommendations] == ["sqlite_backend"]
    assert report.to_json()["recommendations"][0]["id"] == "sqlite_backend"
    assert not report.passed and report.checks[0].diagnosis.startswith("F11")
