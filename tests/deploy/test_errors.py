"""The exit code follows the exception type, never a step name (the layers: tests/test_structure.py)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import hokusai_registry.deploy as package
from hokusai_registry.cli import app
from hokusai_registry.deploy import Deployer, DeployError, DeployRefused
from hokusai_registry.deploy.plan import make_plan


class FakeDeployer:
    def __init__(self, region: str | None, **_: Any) -> None:
        self.ecr = None


@pytest.mark.parametrize(
    ("error", "code", "suffix"),
    [
        (DeployRefused("plan", "no"), 2, "(nothing changed)"),
        # named like a refusal's step, but not one: the step name does not decide the exit code
        (DeployError("preflight", "boom"), 1, "(the service was not changed)"),
        (DeployError("rollout", "boom; rolled back", changed=True), 1, "rolled back"),
    ],
)
def test_cli_exit_code_comes_from_the_exception_type(
    monkeypatch: pytest.MonkeyPatch, error: DeployError, code: int, suffix: str
) -> None:
    def deploy(*_: Any, **__: Any) -> None:
        raise error

    monkeypatch.setattr(package, "Deployer", FakeDeployer)
    monkeypatch.setattr(package, "deploy", deploy)
    result = CliRunner().invoke(app, ["deploy", "ecs", "--cluster", "c", "--service", "s", "--image", "i"])
    assert result.exit_code == code, result.output
    assert f"{error.step}: {error}" in result.output and suffix in result.output
    assert (code == 2) == ("nothing changed" in result.output)


def test_preflight_and_plan_refusals_are_deploy_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeployRefused) as exc:
        make_plan("c", "s", {"containerDefinitions": []}, "new", None)
    assert exc.value.step == "plan" and not exc.value.changed
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(DeployRefused, match="no AWS region") as exc:
        Deployer(None)
    assert exc.value.step == "preflight" and not exc.value.changed


@pytest.mark.parametrize(
    ("env", "used"),
    [
        ({"MLFLOW_TRACKING_TOKEN": "tok"}, "tok"),
        ({"MLFLOW_TRACKING_TOKEN": "tok", "HOKUSAI_API_KEY": "hk"}, "hk"),
    ],
)
def test_deploy_verifies_with_the_key_every_client_command_uses(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], used: str
) -> None:
    """HOKUSAI_API_KEY, else MLflow's own MLFLOW_TRACKING_TOKEN, as register and verify do."""
    seen: dict[str, Any] = {}
    monkeypatch.delenv("HOKUSAI_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(package, "Deployer", FakeDeployer)
    monkeypatch.setattr(package, "deploy", lambda *_, **kwargs: seen.update(kwargs))
    args = ["deploy", "ecs", "--cluster", "c", "--service", "s", "--image", "i", "--url", "https://r"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["api_key"] == used and seen["url"] == "https://r"
