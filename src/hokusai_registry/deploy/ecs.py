"""The AWS side of a deploy: :class:`Deployer`, one method per ECS, STS, ELBv2 or CloudWatch Logs step.

Every call goes through boto3, so ``AWS_ENDPOINT_URL`` points all of them at an emulator. What to change
is decided in :mod:`hokusai_registry.deploy.plan`; the order of steps and the rollback live in
:mod:`hokusai_registry.deploy.rollout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from rich.console import Console
from rich.markup import escape

from hokusai_registry.deploy.errors import AWS_ERRORS, LATER_ERRORS, DeployRefused
from hokusai_registry.deploy.plan import Plan, Service, pick_container, rollout_status, short

LOG_LINES, TASKS_SHOWN, TARGETS_SHOWN = 20, 3, 10

Describe = Callable[[str, str], Service]


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
            raise DeployRefused("preflight", "no AWS region: pass --region or set AWS_REGION") from None
        self.describe: Describe = describe or self.describe_service
        self.poll_seconds, self.sleep = poll_seconds, sleep
        self.console = console or Console(stderr=True)

    def describe_service(self, cluster: str, service: str) -> Service:
        answer = self.ecs.describe_services(cluster=cluster, services=[service])
        for found in answer.get("services", []):
            return dict(found)
        reasons = "; ".join(f"{f.get('arn')}: {f.get('reason')}" for f in answer.get("failures", []))
        raise DeployRefused("preflight", f"service {service!r} not found in cluster {cluster!r} ({reasons})")

    def preflight(self, cluster: str, service: str) -> dict[str, Any]:
        """Credentials, cluster, ACTIVE service, readable current task definition; changes nothing."""
        step = "credentials"
        try:
            who = self.sts.get_caller_identity()
            self.console.print(f"[dim]AWS identity {who.get('Arn')}[/dim]", highlight=False)
            step = "cluster"
            clusters = self.ecs.describe_clusters(clusters=[cluster]).get("clusters", [])
            if not clusters or clusters[0].get("status") != "ACTIVE":
                raise DeployRefused("preflight", f"cluster {cluster!r} not found (or not ACTIVE)")
            step = "service"
            found = self.describe_service(cluster, service)
            if found.get("status") != "ACTIVE":
                raise DeployRefused(
                    "preflight", f"service {service!r} is {found.get('status')}, not ACTIVE, in {cluster!r}"
                )
            step = "task definition"
            arn = found["taskDefinition"]
            current = self.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        except AWS_ERRORS as exc:
            hint = " (check AWS credentials/profile and region)" if step == "credentials" else ""
            raise DeployRefused("preflight", f"{step} check failed: {exc}{hint}") from None
        return dict(current)

    def register(self, plan: Plan) -> str:
        answer = self.ecs.register_task_definition(**plan.definition)
        return str(answer["taskDefinition"]["taskDefinitionArn"])

    def point_service_at(self, plan: Plan, arn: str) -> None:
        self.ecs.update_service(cluster=plan.cluster, service=plan.service, taskDefinition=arn)

    def wait(self, plan: Plan, arn: str, timeout: float) -> tuple[bool, str]:
        """Poll until the rollout of ``arn`` completes, fails or ``timeout`` passes, with a live status."""
        deadline = time.monotonic() + timeout
        with self.console.status(f"rolling out {short(arn)}…") as status:
            while True:
                state = rollout_status(self.describe(plan.cluster, plan.service), arn)
                status.update(f"rolling out {short(arn)}: {escape(state.why)}")
                if state.phase != "in_progress":
                    break
                if time.monotonic() >= deadline:
                    return False, f"rollout of {short(arn)} not complete after {timeout:g}s ({state.why})"
                self.sleep(min(self.poll_seconds, max(0.0, deadline - time.monotonic())))
        self.console.print(f"rollout of {short(arn)}: {state.phase} ({state.why})", highlight=False)
        return state.phase == "completed", state.why

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
