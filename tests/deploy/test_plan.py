"""The pure planning functions: revision derivation, artifact-serving check, rollout status."""

from __future__ import annotations

from typing import Any

import pytest

from hokusai_registry.deploy.errors import DeployError
from hokusai_registry.deploy.plan import (
    artifact_serving_problems,
    derive_task_definition,
    make_plan,
    rollout_status,
)

CURRENT: dict[str, Any] = {
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/registry:7",
    "family": "registry",
    "revision": 7,
    "status": "ACTIVE",
    "registeredAt": "2026-01-01T00:00:00Z",
    "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.logging-driver.awslogs"}],
    "compatibilities": ["EC2", "FARGATE"],
    "networkMode": "awsvpc",
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "1024",
    "memory": "2048",
    "executionRoleArn": "arn:aws:iam::123456789012:role/exec",
    "taskRoleArn": "arn:aws:iam::123456789012:role/task",
    "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
    "containerDefinitions": [
        {"name": "log-router", "image": "fluent-bit:1", "essential": False},
        {
            "name": "registry",
            "image": "123.dkr.ecr.us-east-1.amazonaws.com/registry:old",
            "essential": True,
            "command": ["hokusai-registry", "up", "--default-artifact-root", "mlflow-artifacts:/"],
            "environment": [{"name": "HOKUSAI_REGISTRY_PORT", "value": "5000"}],
        },
    ],
}


def test_new_revision_keeps_registrable_fields_and_replaces_only_the_image() -> None:
    new = derive_task_definition(CURRENT, "repo/registry:new")
    assert "taskDefinitionArn" not in new and "revision" not in new and "compatibilities" not in new
    assert "requiresAttributes" not in new and "status" not in new and "registeredAt" not in new
    assert new["runtimePlatform"] == CURRENT["runtimePlatform"] and new["cpu"] == "1024"
    assert [c["image"] for c in new["containerDefinitions"]] == ["fluent-bit:1", "repo/registry:new"]
    assert CURRENT["containerDefinitions"][1]["image"].endswith(":old")  # the input is not modified


def test_plan_shows_old_and_new_image_revision_and_diff() -> None:
    plan = make_plan("c", "s", CURRENT, "repo/registry:new", None)
    assert (plan.old_image, plan.new_image, plan.container) == (
        "123.dkr.ecr.us-east-1.amazonaws.com/registry:old", "repo/registry:new", "registry",
    )  # fmt: skip
    text = "\n".join(plan.lines())
    assert "registry:7 -> registry:8" in text and "+image repo/registry:new" in text
    with pytest.raises(DeployError, match="no container named 'web'"):
        make_plan("c", "s", CURRENT, "x", "web")


@pytest.mark.parametrize(
    ("container", "problem"),
    [
        ({"command": ["mlflow", "server", "--no-serve-artifacts"]}, "--no-serve-artifacts"),
        ({"command": ["up", "--default-artifact-root", "s3://bucket/x"]}, "s3://bucket/x"),
        ({"command": ["up", "--default-artifact-root=s3://b"]}, "s3://b"),
        ({"entryPoint": ["sh", "-c"], "command": ["mlflow server --no-serve-artifacts"]}, "--no-serve"),
        ({"environment": [{"name": "HOKUSAI_REGISTRY_SERVE_ARTIFACTS", "value": "False"}]}, "=false"),
        ({"command": ["up", "--default-artifact-root", "mlflow-artifacts:/"]}, None),
        ({}, None),
    ],
)
def test_artifact_serving_check(container: dict[str, Any], problem: str | None) -> None:
    found = artifact_serving_problems(container)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0]


def test_plan_refuses_a_container_that_would_not_serve_artifacts() -> None:
    bad = {
        **CURRENT,
        "containerDefinitions": [{"name": "r", "image": "i", "command": ["--no-serve-artifacts"]}],
    }
    with pytest.raises(DeployError, match="would not serve artifacts"):
        make_plan("c", "s", bad, "new", None)


def test_rollout_status_from_deployments() -> None:
    arn = "arn:aws:ecs:r:1:task-definition/registry:8"

    def svc(*deployments: dict[str, Any]) -> dict[str, Any]:
        return {"deployments": list(deployments)}

    primary = {"status": "PRIMARY", "taskDefinition": arn, "runningCount": 1, "desiredCount": 2}
    active = {"status": "ACTIVE", "taskDefinition": arn[:-1] + "7", "runningCount": 2, "desiredCount": 2}
    assert rollout_status(svc(active), arn)[0] == "in_progress"
    assert rollout_status(svc(primary | {"rolloutState": "IN_PROGRESS"}, active), arn)[0] == "in_progress"
    assert rollout_status(svc(primary | {"rolloutState": "COMPLETED"}), arn)[0] == "completed"
    assert rollout_status(svc(primary | {"runningCount": 2}), arn)[0] == "completed"
    assert rollout_status(svc(primary | {"runningCount": 2}, active), arn)[0] == "in_progress"
    state, why = rollout_status(
        svc(primary | {"rolloutState": "FAILED", "rolloutStateReason": "circuit"}), arn
    )
    assert state == "failed" and "circuit" in why
