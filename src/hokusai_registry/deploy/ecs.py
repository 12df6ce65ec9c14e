"""Deploy a new image to an ECS service: a new task-definition revision, a watched rollout, verify, rollback.

The planning functions at the top are pure (dicts in, dicts out); :class:`Deployer` makes the AWS calls,
all through boto3, so ``AWS_ENDPOINT_URL`` points every one of them at an emulator. ``--build`` (docker
build and ECR push) lives in :mod:`hokusai_registry.deploy.image`.
"""

from __future__ import annotations

import difflib
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.markup import escape

from hokusai_registry.settings import SERVED_ARTIFACT_ROOT

if TYPE_CHECKING:
    from hokusai_registry.deploy.image import ImageBuilder

# What register_task_definition accepts; describe_task_definition adds read-only fields
# (taskDefinitionArn, revision, status, requiresAttributes, compatibilities, registeredAt, ...).
REGISTRABLE = (
    "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
    "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode",
    "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform",
)  # fmt: skip
FALSE = {"0", "false", "no", "off"}
NO_SERVE, ROOT_FLAG = "--no-serve-artifacts", "--default-artifact-root"
AWS_ERRORS = (BotoCoreError, ClientError)
LOG_LINES, TASKS_SHOWN, TARGETS_SHOWN = 20, 3, 10

Service = dict[str, Any]
Describe = Callable[[str, str], Service]
VerifyFn = Callable[[str, str], tuple[bool, str]]


class DeployError(Exception):
    """A deploy step failed; ``step`` names it, ``changed`` says whether the service was touched."""

    def __init__(self, step: str, message: str, *, changed: bool = False) -> None:
        super().__init__(message)
        self.step, self.changed = step, changed

    @property
    def refused(self) -> bool:
        """Preflight or plan said no: nothing was built, pushed or changed."""
        return self.step in ("preflight", "plan")


# After preflight, describe_service's "service not found" is one more AWS answer, not a refusal.
LATER_ERRORS = (*AWS_ERRORS, DeployError)


# --- pure planning -------------------------------------------------------------------------------------


def pick_container(definition: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The container to update: the one named, else the only one, else the first essential one."""
    containers: list[dict[str, Any]] = definition.get("containerDefinitions") or []
    if not containers:
        raise DeployError("plan", "the current task definition has no containers")
    if name:
        for container in containers:
            if container.get("name") == name:
                return container
        names = ", ".join(str(c.get("name")) for c in containers)
        raise DeployError("plan", f"no container named {name!r} in the task definition (have: {names})")
    essential = [c for c in containers if c.get("essential", True)]
    return (essential or containers)[0]


def derive_task_definition(
    current: dict[str, Any], image: str, container: str | None = None
) -> dict[str, Any]:
    """register_task_definition arguments: the current definition's registrable fields, new image."""
    new = {key: _copy(current[key]) for key in REGISTRABLE if current.get(key) not in (None, [], {})}
    target = pick_container(new, container)
    target["image"] = image
    return new


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def command_line(container: dict[str, Any]) -> list[str]:
    """entryPoint + command as one argv (either may be missing: then the image's own applies)."""
    return [*(container.get("entryPoint") or []), *(container.get("command") or [])]


def artifact_serving_problems(container: dict[str, Any]) -> list[str]:
    """Why this container would not serve artifacts; empty when it does (or leaves it to the default)."""
    problems: list[str] = []
    argv = [word for part in command_line(container) for word in _split(part)]
    for i, word in enumerate(argv):
        if word == NO_SERVE:
            problems.append(f"the command passes {NO_SERVE}")
        root = None
        if word.startswith(ROOT_FLAG + "="):
            root = word.split("=", 1)[1]
        elif word == ROOT_FLAG and i + 1 < len(argv):
            root = argv[i + 1]
        if root is not None and root.rstrip("/") != SERVED_ARTIFACT_ROOT.rstrip("/"):
            problems.append(f"the command sets {ROOT_FLAG} {root} (must be {SERVED_ARTIFACT_ROOT})")
    env = {e.get("name"): str(e.get("value", "")) for e in container.get("environment") or []}
    if env.get("HOKUSAI_REGISTRY_SERVE_ARTIFACTS", "").strip().lower() in FALSE:
        problems.append("the environment sets HOKUSAI_REGISTRY_SERVE_ARTIFACTS=false")
    root_env = env.get("HOKUSAI_REGISTRY_DEFAULT_ARTIFACT_ROOT")
    if root_env and root_env.rstrip("/") != SERVED_ARTIFACT_ROOT.rstrip("/"):
        problems.append(f"the environment sets HOKUSAI_REGISTRY_DEFAULT_ARTIFACT_ROOT={root_env}")
    return problems


def _split(part: str) -> list[str]:
    """A shell-form command ("sh -c '... --no-serve-artifacts'") hides flags in one string: split it."""
    try:
        return shlex.split(part) if " " in part else [part]
    except ValueError:
        return part.split()


def command_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Unified diff of image, entryPoint+command and environment; empty lines mean no change there."""

    def lines(c: dict[str, Any]) -> list[str]:
        env = sorted(f"env {e.get('name')}={e.get('value', '')}" for e in c.get("environment") or [])
        return [f"image {c.get('image')}", f"command {shlex.join(command_line(c))}", *env]

    return list(difflib.unified_diff(lines(old), lines(new), "current", "new", lineterm="", n=1))


def rollout_status(service: Service, target_arn: str) -> tuple[str, str]:
    """("completed" | "failed" | "in_progress", why) for the rollout of ``target_arn``.

    Completed when the PRIMARY deployment runs the target and either reports rolloutState COMPLETED or is
    the only deployment with runningCount == desiredCount; failed when it reports FAILED.
    """
    deployments: list[dict[str, Any]] = service.get("deployments") or []
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None or primary.get("taskDefinition") != target_arn:
        shown = primary.get("taskDefinition") if primary else "none"
        return "in_progress", f"waiting for a PRIMARY deployment of {short(target_arn)} (now {short(shown)})"
    state = primary.get("rolloutState")
    running, desired = primary.get("runningCount", 0), primary.get("desiredCount", 0)
    counts = f"running {running}/{desired}, {len(deployments)} deployment(s)"
    if primary.get("failedTasks"):
        counts += f", {primary['failedTasks']} failed task(s)"
    if state == "FAILED":
        return "failed", f"rollout FAILED: {primary.get('rolloutStateReason') or counts}"
    if state == "COMPLETED" or (state is None and len(deployments) == 1 and running == desired):
        return "completed", counts
    return "in_progress", f"{state or 'IN_PROGRESS'}: {counts}"


def short(arn: str | None) -> str:
    """family:revision from a task-definition ARN."""
    return (arn or "?").rsplit("/", 1)[-1]


@dataclass
class Plan:
    cluster: str
    service: str
    current_arn: str
    family: str
    current_revision: int
    container: str
    old_image: str
    new_image: str
    definition: dict[str, Any]
    diff: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"cluster      {self.cluster}",
            f"service      {self.service}",
            f"container    {self.container}",
            f"old image    {self.old_image}",
            f"new image    {self.new_image}",
            f"revision     {self.family}:{self.current_revision} -> {self.family}:{self.current_revision + 1}"
            " (new revision, derived from the current one)",
        ]
        if self.old_image == self.new_image:
            out.append("note         same image: the new revision re-pulls the tag (prefer an immutable tag)")
        return [*out, "diff:", *(self.diff or ["  (only the revision changes)"])]


def make_plan(cluster: str, service: str, current: dict[str, Any], image: str, container: str | None) -> Plan:
    """The whole plan from the described current task definition; refuses when serving would be off."""
    definition = derive_task_definition(current, image, container)
    new_container = pick_container(definition, container)
    old_container = pick_container(current, new_container.get("name"))
    if problems := artifact_serving_problems(new_container):
        raise DeployError(
            "plan",
            "refusing to deploy: the container would not serve artifacts ("
            + "; ".join(problems)
            + "); clients upload models through the registry, so every upload would fail",
        )
    return Plan(
        cluster=cluster,
        service=service,
        current_arn=current["taskDefinitionArn"],
        family=current["family"],
        current_revision=int(current.get("revision", 0)),
        container=str(new_container.get("name")),
        old_image=str(old_container.get("image")),
        new_image=image,
        definition=definition,
        diff=command_diff(old_container, new_container),
    )


# --- AWS -----------------------------------------------------------------------------------------------


class Deployer:
    """The AWS side: boto3 clients (endpoint from AWS_ENDPOINT_URL when set), each step one method."""

    def __init__(
        self,
        region: str | None = None,
        *,
        describe: Describe | None = None,
        poll_seconds: float = 5.0,
        console: Console | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import boto3
        from botocore.exceptions import NoRegionError

        session = boto3.session.Session(region_name=region)
        try:
            self.ecs, self.sts, self.ecr = (session.client(name) for name in ("ecs", "sts", "ecr"))
            self.elbv2, self.logs = session.client("elbv2"), session.client("logs")
        except NoRegionError:
            raise DeployError("preflight", "no AWS region: pass --region or set AWS_REGION") from None
        self.describe: Describe = describe or self.describe_service
        self.poll_seconds, self.sleep = poll_seconds, sleep
        self.console = console or Console(stderr=True)

    def describe_service(self, cluster: str, service: str) -> Service:
        answer = self.ecs.describe_services(cluster=cluster, services=[service])
        for found in answer.get("services", []):
            return dict(found)
        reasons = "; ".join(f"{f.get('arn')}: {f.get('reason')}" for f in answer.get("failures", []))
        raise DeployError("preflight", f"service {service!r} not found in cluster {cluster!r} ({reasons})")

    def preflight(self, cluster: str, service: str) -> dict[str, Any]:
        """Credentials, cluster, ACTIVE service, readable current task definition; changes nothing."""
        step = "credentials"
        try:
            who = self.sts.get_caller_identity()
            self.console.print(f"[dim]AWS identity {who.get('Arn')}[/dim]", highlight=False)
            step = "cluster"
            clusters = self.ecs.describe_clusters(clusters=[cluster]).get("clusters", [])
            if not clusters or clusters[0].get("status") != "ACTIVE":
                raise DeployError("preflight", f"cluster {cluster!r} not found (or not ACTIVE)")
            step = "service"
            found = self.describe_service(cluster, service)
            if found.get("status") != "ACTIVE":
                raise DeployError(
                    "preflight", f"service {service!r} is {found.get('status')}, not ACTIVE, in {cluster!r}"
                )
            step = "task definition"
            arn = found["taskDefinition"]
            current = self.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        except AWS_ERRORS as exc:
            hint = " (check AWS credentials/profile and region)" if step == "credentials" else ""
            raise DeployError("preflight", f"{step} check failed: {exc}{hint}") from None
        return dict(current)

    def register(self, plan: Plan) -> str:
        answer = self.ecs.register_task_definition(**plan.definition)
        return str(answer["taskDefinition"]["taskDefinitionArn"])

    def point_service_at(self, plan: Plan, arn: str) -> None:
        self.ecs.update_service(cluster=plan.cluster, service=plan.service, taskDefinition=arn)

    def wait(self, plan: Plan, arn: str, timeout: float) -> tuple[bool, str]:
        """Poll until the rollout of ``arn`` completes, fails or ``timeout`` passes, with a live status."""
        deadline = time.monotonic() + timeout
        state, why = "in_progress", "not polled yet"
        with self.console.status(f"rolling out {short(arn)}…") as status:
            while True:
                state, why = rollout_status(self.describe(plan.cluster, plan.service), arn)
                status.update(f"rolling out {short(arn)}: {escape(why)}")
                if state != "in_progress":
                    break
                if time.monotonic() >= deadline:
                    return False, f"rollout of {short(arn)} not complete after {timeout:g}s ({why})"
                self.sleep(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))
        self.console.print(f"rollout of {short(arn)}: {state} ({why})", highlight=False)
        return state == "completed", why

    def diagnose(self, plan: Plan, arn: str) -> list[str]:
        """Why the tasks of ``arn`` did not come up: load-balancer target health, the newest tasks' stop
        reasons and the last lines of their registry container's awslogs stream. Best effort."""
        lines: list[str] = []
        for what, read in (("target health", self._target_health), ("tasks", self._tasks)):
            try:
                lines += read(plan, arn)
            except LATER_ERRORS as exc:
                lines.append(f"could not read {what}: {exc}")
        return lines

    def _target_health(self, plan: Plan, arn: str) -> list[str]:
        lines = []
        for balancer in self.describe_service(plan.cluster, plan.service).get("loadBalancers") or []:
            if group := balancer.get("targetGroupArn"):
                found = self.elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
                for target in found[:TARGETS_SHOWN]:
                    where, health = target.get("Target", {}), target.get("TargetHealth", {})
                    why = ": ".join(filter(None, (health.get("Reason"), health.get("Description"))))
                    lines.append(
                        f"target {where.get('Id')}:{where.get('Port')} in {group.split('/')[-2]}: "
                        f"{health.get('State')}" + (f" ({why})" if why else "")
                    )
        return lines

    def _tasks(self, plan: Plan, arn: str) -> list[str]:
        listed: list[str] = []
        for status in ("STOPPED", "RUNNING"):
            listed += self.ecs.list_tasks(cluster=plan.cluster, family=plan.family, desiredStatus=status)[
                "taskArns"
            ]
        tasks = self.ecs.describe_tasks(cluster=plan.cluster, tasks=listed[:100])["tasks"] if listed else []
        ours = [t for t in tasks if t.get("taskDefinitionArn") == arn]
        if not ours:
            return [f"no tasks of {short(arn)} found"]
        ours.sort(key=lambda t: str(t.get("createdAt", "")), reverse=True)
        container = pick_container(plan.definition, plan.container)
        lines = []
        for task in ours[:TASKS_SHOWN]:
            task_id = str(task["taskArn"]).rsplit("/", 1)[-1]
            boxes = [c for c in task.get("containers", []) if c.get("name") == plan.container]
            box: dict[str, Any] = boxes[0] if boxes else {}
            code = box.get("exitCode")
            facts = [task.get("stoppedReason"), box.get("reason"), code is not None and f"exit code {code}"]
            lines.append(f"task {task_id} {task.get('lastStatus')}: " + "; ".join(filter(None, facts)))
            lines += [f"  | {line}" for line in self._log_tail(container, task_id)]
        return lines

    def _log_tail(self, container: dict[str, Any], task_id: str) -> list[str]:
        """The last lines of the container's awslogs stream (``prefix/container/task-id``)."""
        config = container.get("logConfiguration") or {}
        options = config.get("options") or {}
        group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
        if config.get("logDriver") != "awslogs" or not group or not prefix:
            return []
        stream = f"{prefix}/{container.get('name')}/{task_id}"
        try:
            answer = self.logs.get_log_events(
                logGroupName=group, logStreamName=stream, limit=LOG_LINES, startFromHead=False
            )
        except ClientError as exc:
            return [f"(no log lines from {group} {stream}: {exc.response.get('Error', {}).get('Code')})"]
        return [str(event.get("message", "")).rstrip() for event in answer.get("events", [])]


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

    Exactly one of ``image`` and ``builder``. Raises DeployError naming the failed step; when the service
    had been updated, the message says whether it was rolled back.
    """
    if (image is None) == (builder is None):
        raise ValueError("pass exactly one of image and builder")
    console = deployer.console
    if url and not api_key:
        raise DeployError("preflight", "--url needs --api-key (or HOKUSAI_API_KEY) to run verify")
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
