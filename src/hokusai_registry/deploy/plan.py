"""Pure deploy planning: described task definitions and services in, the next revision and verdicts out.

No AWS calls here (no boto3), so the rules that decide what a deploy would change, and whether it is
refused, are tested with plain dicts; :mod:`hokusai_registry.deploy.ecs` feeds them describe answers.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from hokusai_registry.deploy.errors import DeployRefused
from hokusai_registry.settings import SERVED_ARTIFACT_ROOT

# What register_task_definition accepts; describe_task_definition adds read-only fields
# (taskDefinitionArn, revision, status, requiresAttributes, compatibilities, registeredAt, ...).
REGISTRABLE = (
    "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
    "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode",
    "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform",
)  # fmt: skip
FALSE = {"0", "false", "no", "off"}
NO_SERVE, ROOT_FLAG = "--no-serve-artifacts", "--default-artifact-root"

Service = dict[str, Any]


class RolloutState(NamedTuple):
    """Where the rollout of one revision stands; ``why`` is the status line shown while waiting."""

    phase: Literal["completed", "failed", "in_progress"]
    why: str


def pick_container(definition: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The container to update: the one named, else the only one, else the first essential one."""
    containers: list[dict[str, Any]] = definition.get("containerDefinitions") or []
    if not containers:
        raise DeployRefused("plan", "the current task definition has no containers")
    if name:
        for container in containers:
            if container.get("name") == name:
                return container
        names = ", ".join(str(c.get("name")) for c in containers)
        raise DeployRefused("plan", f"no container named {name!r} in the task definition (have: {names})")
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


def rollout_status(service: Service, target_arn: str) -> RolloutState:
    """The phase ("completed" | "failed" | "in_progress") and why, for the rollout of ``target_arn``.

    Completed when the PRIMARY deployment runs the target and either reports rolloutState COMPLETED or is
    the only deployment with runningCount == desiredCount; failed when it reports FAILED.
    """
    deployments: list[dict[str, Any]] = service.get("deployments") or []
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None or primary.get("taskDefinition") != target_arn:
        shown = primary.get("taskDefinition") if primary else "none"
        return RolloutState(
            "in_progress", f"waiting for a PRIMARY deployment of {short(target_arn)} (now {short(shown)})"
        )
    state = primary.get("rolloutState")
    running, desired = primary.get("runningCount", 0), primary.get("desiredCount", 0)
    counts = f"running {running}/{desired}, {len(deployments)} deployment(s)"
    if primary.get("failedTasks"):
        counts += f", {primary['failedTasks']} failed task(s)"
    if state == "FAILED":
        return RolloutState("failed", f"rollout FAILED: {primary.get('rolloutStateReason') or counts}")
    if state == "COMPLETED" or (state is None and len(deployments) == 1 and running == desired):
        return RolloutState("completed", counts)
    return RolloutState("in_progress", f"{state or 'IN_PROGRESS'}: {counts}")


def short(arn: str | None) -> str:
    """family:revision from a task-definition ARN."""
    return (arn or "?").rsplit("/", 1)[-1]


@dataclass
class Plan:
    """The next revision of the service's task definition and what it changes; ``lines()`` is what a
    dry run prints."""

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
        raise DeployRefused(
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
