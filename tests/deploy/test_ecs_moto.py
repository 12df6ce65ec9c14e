"""`deploy ecs` against moto's server on loopback: ECS, ECR, STS, ELBv2, CloudWatch Logs (and EC2 for the
network the service's tasks need).

moto's update_service changes the service's taskDefinition but never its deployments (they keep the first
task definition, with no rollout progress), so it cannot model a rollout. Where a test waits for one, the
Deployer gets a ``describe`` that reads the real service from moto and replaces its ``deployments`` with a
recorded ECS describe_services deployment (shape as returned by AWS) for the service's current task
definition. Through the CLI, the same is done by patching ``Deployer.describe_service``.

There is no docker engine here: ``--build`` runs a fake ``docker`` executable placed first on PATH (see
tests/deploy/test_build.py) that records its argv and, on push, puts the image into moto's ECR.
Where AWS must fail after preflight, a botocore ``before-call``/``after-call`` handler on the deployer's own
client turns that one call into the ClientError (or timeout) AWS would give; every other call goes to moto.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from moto.server import ThreadedMotoServer
from rich.console import Console
from typer.testing import CliRunner

from hokusai_registry.cli import app
from hokusai_registry.deploy import Deployer, DeployError, DeployRefused, deploy
from tests.deploy.test_build import docker_calls, fake_docker, git_checkout
from tests.services import free_port

REGION, ACCOUNT = "us-east-1", "123456789012"
REPOSITORY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/hokusai-registry"
OLD, NEW = f"{REPOSITORY}:old", "registry:new"
LOGS = {"awslogs-group": "/ecs/registry", "awslogs-region": REGION, "awslogs-stream-prefix": "ecs"}

# One deployment of a describe_services answer from ECS (ids and times shortened).
RECORDED_DEPLOYMENT: dict[str, Any] = {
    "id": "ecs-svc/4521863305826538281",
    "status": "PRIMARY",
    "desiredCount": 1,
    "pendingCount": 0,
    "runningCount": 1,
    "failedTasks": 0,
    "launchType": "FARGATE",
    "platformVersion": "1.4.0",
    "rolloutState": "COMPLETED",
    "rolloutStateReason": "ECS deployment ecs-svc/4521863305826538281 completed.",
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def ecs(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh moto: cluster `c`; task definition registry:1 (image REPOSITORY:old, awslogs); ECR
    repository hokusai-registry; service `s` on a VPC subnet behind target group `registry` (one target)."""
    httpx.post(f"{moto_url}/moto-api/reset")
    for name, value in {
        "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    client = boto3.client("ecs", region_name=REGION)
    client.create_cluster(clusterName="c")
    arn = client.register_task_definition(
        family="registry", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="512",
        memory="1024", containerDefinitions=[{
            "name": "registry", "image": OLD, "essential": True,
            "command": ["hokusai-registry", "up", "--default-artifact-root", "mlflow-artifacts:/"],
            "logConfiguration": {"logDriver": "awslogs", "options": LOGS},
            "memory": 1024,  # moto's run_task needs a container-level memory
        }],
    )["taskDefinition"]["taskDefinitionArn"]  # fmt: skip
    boto3.client("ecr", region_name=REGION).create_repository(repositoryName="hokusai-registry")
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="registry", Description="registry", VpcId=vpc)["GroupId"]
    elbv2 = boto3.client("elbv2", region_name=REGION)
    target_group = elbv2.create_target_group(
        Name="registry", Protocol="HTTP", Port=5000, VpcId=vpc, TargetType="ip", HealthCheckPath="/health"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=target_group, Targets=[{"Id": "10.0.1.5", "Port": 5000}])
    network = {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}}
    client.create_service(
        cluster="c", serviceName="s", taskDefinition=arn, desiredCount=1, launchType="FARGATE",
        networkConfiguration=network,
        loadBalancers=[{"targetGroupArn": target_group, "containerName": "registry", "containerPort": 5000}],
    )  # fmt: skip
    return client


@pytest.fixture
def rollouts_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests through the CLI: every described service reports a completed rollout of its definition."""
    original = Deployer.describe_service

    def describe_service(self: Deployer, cluster: str, service: str) -> dict[str, Any]:
        found = original(self, cluster, service)
        return found | {"deployments": [RECORDED_DEPLOYMENT | {"taskDefinition": found["taskDefinition"]}]}

    monkeypatch.setattr(Deployer, "describe_service", describe_service)


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """The fake docker first on PATH, a fresh git checkout as working directory: (call log, commit)."""
    log = fake_docker(tmp_path / "bin")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    commit = git_checkout(tmp_path / "checkout")
    monkeypatch.chdir(tmp_path / "checkout")
    return log, commit


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["deploy", "ecs", "--cluster", "c", "--service", "s", *args])


def recorded_rollout(client: Any) -> Any:
    def describe(cluster: str, service: str) -> dict[str, Any]:
        svc = dict(client.describe_services(cluster=cluster, services=[service])["services"][0])
        svc["deployments"] = [RECORDED_DEPLOYMENT | {"taskDefinition": svc["taskDefinition"]}]
        return svc

    return describe


def revisions(client: Any) -> list[str]:
    return [
        a.rsplit("/", 1)[-1]
        for a in client.list_task_definitions(familyPrefix="registry")["taskDefinitionArns"]
    ]


def service_td(client: Any) -> str:
    return str(client.describe_services(cluster="c", services=["s"])["services"][0]["taskDefinition"]).rsplit(
        "/"
    )[-1]


def test_deploy_registers_a_new_revision_and_updates_the_service(ecs: Any) -> None:
    deployer = Deployer(REGION, describe=recorded_rollout(ecs), poll_seconds=0)
    deploy(deployer, cluster="c", service="s", image=NEW, timeout=5)
    assert revisions(ecs) == ["registry:1", "registry:2"] and service_td(ecs) == "registry:2"
    new = ecs.describe_task_definition(taskDefinition="registry:2")["taskDefinition"]
    assert new["containerDefinitions"][0]["image"] == NEW and new["cpu"] == "512"


def test_failing_verify_rolls_back_to_the_previous_revision(ecs: Any) -> None:
    deployer = Deployer(REGION, describe=recorded_rollout(ecs), poll_seconds=0)
    with pytest.raises(DeployError, match=r"verify failed: Reachability.*rolled back to registry:1") as exc:
        deploy(
            deployer, cluster="c", service="s", image=NEW, url="http://x", api_key="k", timeout=5,
            verify_fn=lambda url, key: (False, "Reachability: connection refused"),
        )  # fmt: skip
    assert exc.value.step == "verify" and exc.value.changed
    assert revisions(ecs) == ["registry:1", "registry:2"] and service_td(ecs) == "registry:1"


def test_rollout_timeout_rolls_back(ecs: Any) -> None:
    """No PRIMARY deployment of the new revision ever shows (as in plain moto): timeout, then rollback."""
    seen: list[str] = []

    def describe(cluster: str, service: str) -> dict[str, Any]:
        svc = recorded_rollout(ecs)(cluster, service)
        seen.append(svc["taskDefinition"].rsplit("/")[-1])
        if svc["taskDefinition"].endswith(":2"):
            svc["deployments"] = [RECORDED_DEPLOYMENT | {"taskDefinition": "x:1"}]
        return svc

    with pytest.raises(DeployError, match=r"rollout failed: .*not complete.*rolled back to registry:1"):
        deploy(
            Deployer(REGION, describe=describe, poll_seconds=0.05),
            cluster="c",
            service="s",
            image=NEW,
            timeout=0.2,
        )
    assert service_td(ecs) == "registry:1" and seen[-1] == "registry:1"


def test_dry_run_changes_nothing(ecs: Any) -> None:
    result = CliRunner().invoke(
        app, ["deploy", "ecs", "--cluster", "c", "--service", "s", "--image", NEW, "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "registry:1 -> registry:2" in result.output
        and NEW in result.output
        and "nothing changed" in result.output
    )
    assert revisions(ecs) == ["registry:1"] and service_td(ecs) == "registry:1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "nope", "--service", "s"], "cluster 'nope' not found"),
        (["--cluster", "c", "--service", "nope"], "service 'nope' not found"),
        (["--cluster", "c", "--service", "s", "--no-creds"], "credentials check failed"),
    ],
)
def test_preflight_errors_change_nothing(
    ecs: Any, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    if "--no-creds" in args:
        args.remove("--no-creds")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    result = CliRunner().invoke(app, ["deploy", "ecs", *args, "--image", NEW])
    assert result.exit_code == 2, result.output
    assert message in result.output and "nothing changed" in result.output
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert revisions(ecs) == ["registry:1"] and service_td(ecs) == "registry:1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--image / --build: pass exactly one of the two"),
        (["--image", NEW, "--build"], "--image / --build: pass exactly one of the two"),
        (["--image", NEW, "--repository", "hokusai-registry"], "--repository: only applies with --build"),
    ],
)
def test_usage_needs_exactly_one_of_image_and_build(ecs: Any, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert revisions(ecs) == ["registry:1"]


def test_build_pushes_to_ecr_and_deploys_the_pushed_image(
    ecs: Any, docker: tuple[Path, str], rollouts_complete: None
) -> None:
    log, commit = docker
    result = cli("--build", "--timeout", "5")
    assert result.exit_code == 0, result.output
    [pushed] = boto3.client("ecr", region_name=REGION).describe_images(repositoryName="hokusai-registry")[
        "imageDetails"
    ]
    [tag] = pushed["imageTags"]
    assert re.fullmatch(rf"{commit}-\d{{14}}", tag), tag  # a clean checkout: no -dirty
    assert abs(time.time() - time.mktime(time.strptime(tag[-14:] + "+0000", "%Y%m%d%H%M%S%z"))) < 120
    new = ecs.describe_task_definition(taskDefinition="registry:2")["taskDefinition"]["containerDefinitions"]
    assert new[0]["image"] == f"{REPOSITORY}@{pushed['imageDigest']}"  # the image ECR holds under the tag
    assert revisions(ecs) == ["registry:1", "registry:2"] and service_td(ecs) == "registry:2"

    calls = docker_calls(log)
    assert [c["argv"][0] for c in calls] == ["version", "buildx", "build", "login", "push"]
    build, login, push = calls[2:]
    ref = f"{REPOSITORY}:{tag}"
    assert build["argv"] == ["build", "--platform", "linux/amd64", "-f", "deploy/Dockerfile", "-t", ref, "."]
    assert build["cwd"] == str(Path.cwd())
    password = f"{ACCOUNT}-auth-token"  # what moto's get_authorization_token hands out
    assert login["argv"] == ["login", "--username", "AWS", "--password-stdin", REPOSITORY.split("/")[0]]
    assert login["stdin"] == password + "\n"
    assert not any(password in word for call in calls for word in call["argv"])
    assert password not in result.output
    assert push["argv"] == ["push", ref]


def test_build_dry_run_prints_the_build_plan_and_builds_nothing(ecs: Any, docker: tuple[Path, str]) -> None:
    log, commit = docker
    Path("notes.txt").write_text("not committed")
    result = cli("--build", "--dry-run")
    assert result.exit_code == 0, result.output
    assert re.search(rf"tag +{commit}-\d{{14}}-dirty", result.output), result.output
    assert f"repository   {REPOSITORY}" in result.output and "linux/amd64" in result.output
    assert "nothing built, pushed or changed" in result.output
    assert [c["argv"][:2] for c in docker_calls(log)] == [["version", "--format"], ["buildx", "inspect"]]
    assert (
        boto3.client("ecr", region_name=REGION).describe_images(repositoryName="hokusai-registry")[
            "imageDetails"
        ]
        == []
    )
    assert revisions(ecs) == ["registry:1"] and service_td(ecs) == "registry:1"


def test_build_preflight_refuses_without_docker(
    ecs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli("--build")
    assert result.exit_code == 2, result.output
    assert "docker is not on PATH" in result.output and "nothing changed" in result.output
    assert revisions(ecs) == ["registry:1"]


def test_build_preflight_refuses_a_missing_repository(ecs: Any, docker: tuple[Path, str]) -> None:
    result = cli("--build", "--repository", "nope")
    assert result.exit_code == 2, result.output
    assert "ECR repository 'nope' check failed" in result.output and "RepositoryNotFound" in result.output
    assert "nothing changed" in result.output and revisions(ecs) == ["registry:1"]


def test_failed_build_leaves_the_service_alone(
    ecs: Any, docker: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = docker
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "build")
    result = cli("--build")
    assert result.exit_code == 1, result.output
    assert "build failed: `docker build` exited 1: fake docker: build failed" in result.output
    assert "the service was not changed" in result.output
    assert [c["argv"][0] for c in docker_calls(log)] == ["version", "buildx", "build"]
    assert revisions(ecs) == ["registry:1"] and service_td(ecs) == "registry:1"


def fail_next(client: Any, operation: str, code: str = "", *, after_it_applied: bool = False) -> None:
    """The next ``operation`` call on this client fails: with AWS's error response ``code`` before it reaches
    moto, or (``after_it_applied``) with a read timeout after moto applied it. Later calls go through."""
    pending = [True]

    def before(**_: Any) -> Any:
        if pending and not after_it_applied:
            pending.clear()
            error = {"Error": {"Code": code, "Message": f"{code} (injected)"}, "ResponseMetadata": {}}
            return AWSResponse("https://ecs.us-east-1.amazonaws.com", 400, {}, None), error
        return None

    def after(**_: Any) -> None:
        if pending and after_it_applied:
            pending.clear()
            raise ReadTimeoutError(endpoint_url="https://ecs.us-east-1.amazonaws.com")

    client.meta.events.register(f"before-call.ecs.{operation}", before)
    client.meta.events.register(f"after-call.ecs.{operation}", after)


def test_register_error_names_the_step_and_changes_nothing(ecs: Any) -> None:
    deployer = Deployer(REGION, describe=recorded_rollout(ecs), poll_seconds=0)
    fail_next(deployer.ecs, "RegisterTaskDefinition", "AccessDeniedException")
    with pytest.raises(DeployError, match=r"register task definition failed: .*AccessDeniedException") as exc:
        deploy(deployer, cluster="c", service="s", image=NEW, timeout=5)
    assert exc.value.step == "register" and not exc.value.changed and not isinstance(exc.value, DeployRefused)
    assert revisions(ecs) == ["registry:1"] and service_td(ecs) == "registry:1"


def test_update_service_error_leaves_the_service_on_the_old_revision(ecs: Any) -> None:
    deployer = Deployer(REGION, describe=recorded_rollout(ecs), poll_seconds=0)
    fail_next(deployer.ecs, "UpdateService", "ClientException")
    with pytest.raises(
        DeployError, match=r"ClientException.*points at registry:1, nothing to roll back"
    ) as exc:
        deploy(deployer, cluster="c", service="s", image=NEW, timeout=5)
    assert exc.value.step == "update service" and exc.value.changed
    assert revisions(ecs) == ["registry:1", "registry:2"] and service_td(ecs) == "registry:1"


def test_update_service_that_applied_but_timed_out_is_rolled_back(ecs: Any) -> None:
    deployer = Deployer(REGION, describe=recorded_rollout(ecs), poll_seconds=0)
    fail_next(deployer.ecs, "UpdateService", after_it_applied=True)
    with pytest.raises(DeployError, match=r"update service failed: Read timeout.*rolled back to registry:1"):
        deploy(deployer, cluster="c", service="s", image=NEW, timeout=5)
    assert service_td(ecs) == "registry:1"


def test_failed_rollout_names_the_root_cause(ecs: Any) -> None:
    """ECS's circuit breaker fails the rollout: the output shows target health (ELBv2), the new task's stop
    reason (ECS) and its last log lines (CloudWatch Logs), then the service is rolled back."""
    network = ecs.describe_services(cluster="c", services=["s"])["services"][0]["networkConfiguration"]
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName=LOGS["awslogs-group"])
    failed = RECORDED_DEPLOYMENT | {
        "rolloutState": "FAILED", "runningCount": 0, "failedTasks": 1,
        "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start.",
    }  # fmt: skip

    def describe(cluster: str, service: str) -> dict[str, Any]:
        svc = recorded_rollout(ecs)(cluster, service)
        arn = svc["taskDefinition"]
        if arn.endswith(":2"):
            if not ecs.list_tasks(cluster="c", family="registry", desiredStatus="STOPPED")["taskArns"]:
                task = ecs.run_task(
                    cluster="c", taskDefinition=arn, launchType="FARGATE", networkConfiguration=network
                )["tasks"][0]["taskArn"]
                ecs.stop_task(cluster="c", task=task, reason="Essential container in task exited")
                stream = f"ecs/registry/{task.rsplit('/', 1)[-1]}"
                logs.create_log_stream(logGroupName=LOGS["awslogs-group"], logStreamName=stream)
                logs.put_log_events(
                    logGroupName=LOGS["awslogs-group"], logStreamName=stream,
                    logEvents=[{"timestamp": int(time.time() * 1000), "message": line} for line in (
                        "starting hokusai-registry", "error: refusing to start: backend store unreachable",
                    )],
                )  # fmt: skip
            svc["deployments"] = [failed | {"taskDefinition": arn}]
        return svc

    out = StringIO()
    deployer = Deployer(REGION, describe=describe, poll_seconds=0, console=Console(file=out, width=300))
    with pytest.raises(
        DeployError, match=r"circuit breaker: tasks failed to start.*rolled back to registry:1"
    ):
        deploy(deployer, cluster="c", service="s", image=NEW, timeout=5)
    text = out.getvalue()
    assert "why registry:2 did not come up" in text
    assert "target 10.0.1.5:5000 in registry: healthy" in text
    assert re.search(r"task \S+ STOPPED: Essential container in task exited", text), text
    assert "| error: refusing to start: backend store unreachable" in text
    assert service_td(ecs) == "registry:1"
