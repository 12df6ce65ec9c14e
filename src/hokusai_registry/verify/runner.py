"""Run the checks in order, live in a rich table, and stop early when going on would prove nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from hokusai_registry.verify import checks
from hokusai_registry.verify.checks import CheckResult, Context, Failed, Outcome
from hokusai_registry.verify.recommend import recommend
from hokusai_registry.verify.report import Report

STYLE = {"pass": "green", "fail": "red", "warn": "yellow", "skip": "dim", "run": "cyan"}


def _always_due(ctx: Context) -> str | None:
    return None


@dataclass(frozen=True)
class Check:
    """One step of the plan: ``run`` does the check; ``skip_reason``, asked when the check is due, says
    why it cannot prove anything now (None: run it)."""

    id: str
    title: str
    run: Callable[[Context], Outcome]
    skip_reason: Callable[[Context], str | None] = _always_due


def plan(skip_registration: bool = False) -> list[Check]:
    """The checks in priority order."""

    def needs_auth(ctx: Context) -> str | None:
        return None if ctx.authenticated else "authentication did not pass"

    def needs_artifacts(ctx: Context) -> str | None:
        return needs_auth(ctx) or (None if ctx.artifacts_ok else "artifact round trip did not pass")

    def registration_due(ctx: Context) -> str | None:
        return "--skip-registration" if skip_registration else needs_artifacts(ctx)

    return [
        Check("reachability", "Reachability (DNS, TCP, TLS, /health, version)", checks.reachability),
        Check("authentication", "Authentication (no key, made-up key, given key)", checks.authentication,
              lambda ctx: None if ctx.reachable else "server not reachable"),
        Check("artifact_round_trip", "Artifact serving round trip", checks.artifact_round_trip, needs_auth),
        Check("artifact_locations", "Experiment artifact locations", checks.artifact_locations, needs_auth),
        Check("registration", "Model registration as a third party", checks.registration, registration_due),
        Check("model_scanning", "Model scanning quarantines a dangerous pickle", checks.model_scanning,
              registration_due),
        Check("large_artifact", "Large artifact transfer", checks.large_artifact,
              lambda ctx: "--large-mb 0" if ctx.large_mb <= 0 else needs_artifacts(ctx)),
    ]  # fmt: skip


def run_one(ctx: Context, check: Check) -> CheckResult:
    """Run one check; any exception becomes a fail with a diagnosis, so the report is always written."""
    started = time.monotonic()
    result = CheckResult(check.id, check.title, "pass")
    try:
        outcome = check.run(ctx)
        result.detail, result.metrics = outcome.detail, dict(outcome.metrics)
    except Failed as exc:
        result.status, result.detail = exc.status, exc.detail
        if exc.found:
            result.diagnosis, result.fix = exc.found.text, exc.found.fix
    except Exception as exc:  # a network error mid-check, or an answer we could not parse
        from hokusai_registry.verify import diagnose

        result.status, result.detail = "fail", f"{type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.TransportError):
            found = diagnose.transport(exc)
            result.diagnosis, result.fix = found.text, found.fix
        else:
            result.diagnosis = "verify error: an unexpected answer or a bug in verify"
            result.fix = "read the detail; re-run with --keep and inspect what was created"
    result.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return result


def table(results: list[CheckResult], running: str | None) -> Table:
    grid = Table("check", "status", "ms", "detail / diagnosis", expand=True)
    for r in results:
        text = escape(r.detail) + (
            f"\n[bold]{escape(r.diagnosis)}[/bold]\nfix: {escape(r.fix)}" if r.diagnosis else ""
        )
        grid.add_row(r.title, f"[{STYLE[r.status]}]{r.status}[/]", f"{r.duration_ms:.0f}", text)
    if running:
        grid.add_row(running, "[cyan]running[/]", "", "")
    return grid


def verify(ctx: Context, *, skip_registration: bool = False, console: Console | None = None) -> Report:
    """All checks, then clean-up; the clean-up's outcome goes into the report as a note, and what the
    checks observed into its recommendations (which never fail it)."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    results: list[CheckResult] = []
    console = console or Console(stderr=True)
    with Live(table(results, None), console=console, refresh_per_second=8, transient=False) as live:
        for check in plan(skip_registration):
            if reason := check.skip_reason(ctx):
                results.append(CheckResult(check.id, check.title, "skip", detail=f"skipped: {reason}"))
            else:
                live.update(table(results, check.title))
                results.append(run_one(ctx, check))
            live.update(table(results, None))
        if ctx.experiment_id is not None:
            try:
                ctx.notes.append(f"clean-up: {checks.clean_up(ctx)}")
            except Exception as exc:  # the report matters more than a clean-up error
                ctx.notes.append(f"clean-up failed: {exc}; delete experiments named {ctx.name!r}")
    ctx.close()
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    return Report(ctx.url, started_at, duration_ms, results, ctx.notes, recommend(ctx.observed))
