"""`deploy ecs` against moto's ECS/STS server on loopback.

moto's update_service changes the service's taskDefinition but never its deployments (they keep the first
task definition, with no rollout progress), so it cannot model a rollout. Where a test waits for one, the
Deployer gets a ``describe`` that reads the real service from moto and replaces its ``deployments`` with a
recorded ECS describe_services deployment (shape as returned by AWS) for the service's current task
definition.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from hokusai_registry.cli import app
from hokusai_registry.deploy import Deployer, DeployError, deploy
from tests.services import free_port

REGION = "us-east-1"
OLD, NEW = "registry:old", "registry:new"

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
    """A fresh moto with cluster `c`, task definition registry:1 (image registry:old) and service `s`."""
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
        }],
    )["taskDefinition"]["taskDefinitionArn"]  # fmt: skip
    client.create_service(cluster="c", serviceName="s", taskDefinition=arn, desiredCount=1)
    return client


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
