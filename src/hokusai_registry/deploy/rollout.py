"""One deploy, start to finish: preflight, plan, (build + push), register, update, wait, verify, roll back.

The order of steps and the rollback promise live here, apart from what they call: the pure rules
(:mod:`~hokusai_registry.deploy.plan`), the AWS calls (:mod:`~hokusai_registry.deploy.ecs`) and docker/ECR
(:mod:`~hokusai_registry.deploy.image`), so each of those is tested without the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.console import Console
from rich.markup import escape

from hokusai_registry.client import MISSING_KEY
from hokusai_registry.deploy.ecs import Deployer
from hokusai_registry.deploy.errors import AWS_ERRORS, LATER_ERRORS, DeployError, DeployRefused
from hokusai_registry.deploy.image import ImageBuilder
from hokusai_registry.deploy.plan import Plan, make_plan, pick_container, short

VerifyFn = Callable[[str, str], tuple[bool, str]]


def verify_in_process(url: str, api_key: str) -> tuple[bool, str]:
    """Run ``hokusai-registry verify`` in this process; (passed, which checks failed)."""
    from hokusai_registry.verify import Context, verify

    report = verify(Context(url, api_key, large_mb=1), console=Console(stderr=True))
    failed = [f"{c.title}: {c.diagnosis or c.detail}" for c in report.checks if c.status == "fail"]
    return report.passed, "; ".join(failed) or "all checks passed"


def deploy(
    deployer: Deployer,
    *,
    cluster: str,
    service: str,
    image: str | None = None,
    builder: ImageBuilder | None = None,
    container: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
    timeout: float = 600.0,
    dry_run: bool = False,
    verify_fn: VerifyFn = verify_in_process,
) -> Plan:
    """Preflight, plan, (unless dry run) build + push when given a ``builder``, register, update, wait,
    verify; roll back on failure.

    Exactly one of ``image`` and ``builder``. Raises DeployRefused when preflight or the plan says no
    (nothing changed), else DeployError naming the failed step; when the service had been updated, the
    message says whether it was rolled back.
    """
    if (image is None) == (builder is None):
        raise ValueError("pass exactly one of image and builder")
    console = deployer.console
    if url and not api_key:
        raise DeployRefused("preflight", f"--url runs verify, which needs a key: {MISSING_KEY}")
    current = deployer.preflight(cluster, service)
    build = builder.preflight(str(pick_container(current, container).get("image"))) if builder else None
    plan = make_plan(cluster, service, current, build.ref if build else str(image), container)
    if build:
        _print(console, "build", build.lines())
    _print(console, "plan", plan.lines())
    if dry_run:
        console.print(
            "[yellow]dry run:[/yellow] nothing " + ("built, pushed or " if build else "") + "changed"
        )
        return plan
    if builder and build:
        plan = make_plan(cluster, service, current, builder.build_and_push(build), container)
        console.print(f"pushed {plan.new_image}", highlight=False)

    try:
        new_arn = deployer.register(plan)
    except AWS_ERRORS as exc:
        raise DeployError("register", f"register task definition failed: {exc}") from None
    console.print(f"registered {short(new_arn)}", highlight=False)
    step = "update service"
    try:
        deployer.point_service_at(plan, new_arn)
        console.print(f"service {service} now points at {short(new_arn)}", highlight=False)
        step = "rollout"
        ok, why = deployer.wait(plan, new_arn, timeout)
    except LATER_ERRORS as exc:
        ok, why = False, str(exc)
    if not ok and step == "rollout":
        _print(console, f"why {short(new_arn)} did not come up", deployer.diagnose(plan, new_arn))
    if ok and url and api_key:
        console.print(f"verifying {url}", highlight=False)
        step = "verify"
        ok, why = verify_fn(url, api_key)
    if ok:
        console.print(f"[green]deployed[/green] {plan.new_image} as {short(new_arn)}", highlight=False)
        return plan
    console.print(f"[red]{step} failed:[/red] {escape(why)}")
    raise DeployError(step, f"{step} failed: {why}; {roll_back(deployer, plan, timeout)}", changed=True)


def roll_back(deployer: Deployer, plan: Plan, timeout: float) -> str:
    """Point the service back at the revision it ran before, if it moved; a phrase saying what happened."""
    previous = short(plan.current_arn)
    try:
        if deployer.describe(plan.cluster, plan.service).get("taskDefinition") == plan.current_arn:
            return f"the service points at {previous}, nothing to roll back"
        deployer.console.print(f"rolling back to {previous}", highlight=False)
        deployer.point_service_at(plan, plan.current_arn)
        back, why = deployer.wait(plan, plan.current_arn, timeout)
    except LATER_ERRORS as exc:
        return f"rollback to {previous} failed ({exc}); check the service now"
    if back:
        return f"rolled back to {previous}"
    return f"rollback to {previous} did not complete ({why}); check the service now"


def _print(console: Console, title: str, lines: Iterable[str]) -> None:
    console.print(f"[bold]{title}[/bold]")
    for line in lines:
        console.print(f"  {escape(line)}", highlight=False)
