"""`deploy ecs --build`: the argv and tag builders, the preflight, build + login + push, the runner.

There is no docker engine on the test machines, so docker is faked at the seam the code has for it:
:class:`Recorder` is an injected runner that records argv/stdin/cwd and answers like docker and git;
:func:`fake_docker` writes an executable named ``docker`` into a temp dir placed first on PATH (it
records its argv and stdin, answers like docker, and on ``push`` puts the image into ECR when an emulator
is configured). ECR answers come from botocore's Stubber, which checks every call against the ECR model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from hokusai_registry.deploy import DeployError, DeployRefused
from hokusai_registry.deploy.image import (
    CommandError,
    ImageBuilder,
    build_argv,
    buildx_platforms,
    ecr_repository,
    image_tag,
    login_argv,
    push_argv,
    push_digest,
    run_command,
)

ACCOUNT, REGION = "123456789012", "us-east-1"
REPO_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/hokusai-registry"
CURRENT = f"{REPO_URI}:old"
PASSWORD = "s3cret-ecr-password"
TOKEN = "QVdTOnMzY3JldC1lY3ItcGFzc3dvcmQ="  # base64("AWS:" + PASSWORD)
DIGEST = "sha256:" + "ab" * 32
WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deploy_mlflow_container.sh"

FAKE_DOCKER = """#!{python}
# A fake `docker` for tests (no docker engine on the test machines): appends its argv and stdin as a
# JSON line to $FAKE_DOCKER_LOG, answers like docker, fails the subcommand named by $FAKE_DOCKER_FAIL,
# and on `push` puts a manifest for the tag into ECR when AWS_ENDPOINT_URL points at an emulator.
import json, os, sys

argv = sys.argv[1:]
stdin = sys.stdin.read() if "--password-stdin" in argv else None
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": argv, "stdin": stdin, "cwd": os.getcwd()}}) + "\\n")
command = " ".join(argv[:2]) if argv[:1] == ["buildx"] else argv[0]
if os.environ.get("FAKE_DOCKER_FAIL") == command:
    print(os.environ.get("FAKE_DOCKER_ERROR", "fake docker: " + command + " failed"), file=sys.stderr)
    sys.exit(1)
if command == "version":
    print("27.3.1")
elif command == "buildx inspect":
    print("Name: default\\nDriver: docker\\nPlatforms: linux/amd64, linux/amd64/v2, linux/386")
elif command == "build":
    print("#1 [internal] load build definition from Dockerfile\\n#14 naming to " + argv[-2] + " done")
elif command == "login":
    print("Login Succeeded")
elif command == "push":
    repository, tag = argv[1].rsplit(":", 1)
    digest = "sha256:" + "cd" * 32
    if os.environ.get("AWS_ENDPOINT_URL"):
        import boto3
        manifest = {{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {{"digest": "sha256:" + "0" * 64, "size": 1}}, "layers": [], "tag": tag}}
        image = boto3.client("ecr").put_image(
            repositoryName=repository.split("/", 1)[1], imageManifest=json.dumps(manifest), imageTag=tag
        )
        digest = image["image"]["imageId"]["imageDigest"]
    print("The push refers to repository [" + repository + "]")
    print(tag + ": digest: " + digest + " size: 529")
"""


def fake_docker(bin_dir: Path) -> Path:
    """Write the fake ``docker`` into ``bin_dir``; returns the log file its calls are appended to."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    return bin_dir / "docker-calls.jsonl"


def docker_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def git_checkout(root: Path) -> str:
    """A throw-away git checkout with deploy/Dockerfile and one commit; returns the short commit."""
    (root / "deploy").mkdir(parents=True)
    (root / "deploy" / "Dockerfile").write_text("FROM scratch\n")

    def git(*args: str) -> str:
        config = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
        done = subprocess.run(["git", *config, *args], cwd=root, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    git("init", "-q")
    git("add", "deploy/Dockerfile")
    git("commit", "-qm", "init")
    return git("rev-parse", "--short", "HEAD")


# --- pure ----------------------------------------------------------------------------------------------


def test_tag_is_commit_and_utc_timestamp_with_dirty_marker() -> None:
    assert image_tag("abc1234", WHEN, dirty=False) == "abc1234-20260304050607"
    assert image_tag("abc1234", WHEN, dirty=True) == "abc1234-20260304050607-dirty"
    local = WHEN.astimezone(timezone(timedelta(hours=9)))
    assert image_tag("abc1234", local, dirty=False) == "abc1234-20260304050607"


def test_docker_argv() -> None:
    ref = f"{REPO_URI}:abc1234-20260304050607"
    assert build_argv(ref) == [
        "docker", "build", "--platform", "linux/amd64", "-f", "deploy/Dockerfile", "-t", ref, ".",
    ]  # fmt: skip
    registry = REPO_URI.split("/")[0]
    assert login_argv(registry) == ["docker", "login", "--username", "AWS", "--password-stdin", registry]
    assert push_argv(ref) == ["docker", "push", ref]


@pytest.mark.parametrize(
    ("image", "found"),
    [
        (CURRENT, (ACCOUNT, "hokusai-registry")),
        (f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/team/registry@{DIGEST}", (ACCOUNT, "team/registry")),
        (f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/registry", (ACCOUNT, "registry")),
        ("ghcr.io/hokusai/registry:1", None),
        ("registry:old", None),
    ],
)
def test_ecr_repository_from_image(image: str, found: tuple[str, str] | None) -> None:
    assert ecr_repository(image) == found


def test_parse_buildx_platforms_and_push_digest() -> None:
    inspect = "Name: default\nDriver: docker\nNodes:\nName: default\nPlatforms: linux/amd64*, linux/386\n"
    assert buildx_platforms(inspect) == ["linux/amd64", "linux/386"]
    assert buildx_platforms("Name: x\nDriver: docker-container\n") == []
    assert push_digest(f"abc: digest: {DIGEST} size: 529\n") == DIGEST
    assert push_digest("no digest here") is None


# --- ImageBuilder with a recording runner and a stubbed ECR ----------------------------------------------


class Recorder:
    """An injected runner: records (argv, stdin, cwd) and answers as docker and git would."""

    def __init__(self, root: Path, fail: str = "", platforms: str = "linux/amd64, linux/arm64") -> None:
        self.root, self.fail, self.platforms = root, fail, platforms
        self.calls: list[tuple[list[str], str | None, Path | None]] = []

    def __call__(
        self, argv: Sequence[str], *, stdin: str | None = None, cwd: Path | None = None, echo: Any = None
    ) -> str:
        self.calls.append((list(argv), stdin, cwd))
        command = " ".join(argv[1:3] if argv[1] in ("buildx", "rev-parse") else argv[1:2])
        if command == self.fail:
            raise CommandError(argv, None if command == "version" else 1, f"{command} went wrong")
        return {
            "version": "27.3.1",
            "buildx inspect": f"Platforms: {self.platforms}",
            "rev-parse --show-toplevel": f"{self.root}\n",
            "rev-parse --short": "abc1234\n",
            "status": " M src/x.py\n",
            "push": f"abc: digest: {DIGEST} size: 529\n",
        }.get(command, "")


@pytest.fixture
def ecr() -> Any:
    client = boto3.client("ecr", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(client) as stubber:
        client.stubber = stubber
        yield client


def stub_preflight(ecr: Any, name: str = "hokusai-registry", registry: str | None = ACCOUNT) -> None:
    expected = {"repositoryNames": [name]} | ({"registryId": registry} if registry else {})
    repo = {
        "repositoryName": name,
        "registryId": ACCOUNT,
        "repositoryUri": f"{REPO_URI.rsplit('/')[0]}/{name}",
    }
    ecr.stubber.add_response("describe_repositories", {"repositories": [repo]}, expected)
    ecr.stubber.add_response(
        "get_authorization_token", {"authorizationData": [{"authorizationToken": TOKEN}]}, {}
    )


def builder(ecr: Any, run: Recorder, repository: str | None = None) -> ImageBuilder:
    return ImageBuilder(ecr, repository=repository, run=run, clock=lambda: WHEN)


def test_build_login_push_argv_and_the_pushed_digest(tmp_path: Path, ecr: Any) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "Dockerfile").write_text("FROM scratch\n")
    run = Recorder(tmp_path)
    stub_preflight(ecr)
    plan = builder(ecr, run).preflight(CURRENT)
    assert (plan.tag, plan.ref) == (
        "abc1234-20260304050607-dirty",
        f"{REPO_URI}:abc1234-20260304050607-dirty",
    )
    assert PASSWORD not in repr(plan)

    ecr.stubber.add_response(
        "describe_images",
        {"imageDetails": [{"imageDigest": DIGEST, "imageTags": [plan.tag]}]},
        {"registryId": ACCOUNT, "repositoryName": "hokusai-registry", "imageIds": [{"imageTag": plan.tag}]},
    )
    assert builder(ecr, run).build_and_push(plan) == f"{REPO_URI}@{DIGEST}"
    ecr.stubber.assert_no_pending_responses()
    argvs = [argv for argv, _, _ in run.calls]
    assert argvs[:2] == [
        ["docker", "version", "--format", "{{.Server.Version}}"],
        ["docker", "buildx", "inspect"],
    ]
    build, login, push = run.calls[-3:]
    assert build == (build_argv(plan.ref), None, tmp_path)  # from the checkout's root
    assert login == (login_argv(REPO_URI.split("/")[0]), PASSWORD + "\n", None)  # password on stdin
    assert push[0] == ["docker", "push", plan.ref]
    assert not any(PASSWORD in word for argv in argvs for word in argv)


def test_digest_falls_back_to_push_output_when_ecr_cannot_be_read(tmp_path: Path, ecr: Any) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "Dockerfile").write_text("FROM scratch\n")
    stub_preflight(ecr)
    plan = builder(ecr, Recorder(tmp_path)).preflight(CURRENT)
    ecr.stubber.add_client_error("describe_images", "AccessDeniedException", "not allowed")
    assert builder(ecr, Recorder(tmp_path)).build_and_push(plan) == f"{REPO_URI}@{DIGEST}"
    ecr.stubber.add_client_error("describe_images", "ImageNotFoundException", "no such image")
    with pytest.raises(DeployError, match="ECR has no image") as exc:
        builder(ecr, Recorder(tmp_path)).build_and_push(plan)
    assert exc.value.step == "push"


@pytest.mark.parametrize(
    ("fail", "platforms", "message"),
    [
        ("version", "linux/amd64", "docker is not on PATH"),
        ("buildx inspect", "linux/amd64", "docker buildx is not available"),
        ("", "linux/arm64, linux/arm/v7", "cannot build linux/amd64 (it has linux/arm64, linux/arm/v7)"),
        ("rev-parse --show-toplevel", "linux/amd64", "git checkout"),
    ],
)
def test_preflight_refuses_without_a_usable_docker_or_checkout(
    tmp_path: Path, ecr: Any, fail: str, platforms: str, message: str
) -> None:
    run = Recorder(tmp_path, fail=fail, platforms=platforms)
    with pytest.raises(DeployError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        builder(ecr, run).preflight(CURRENT)
    assert exc.value.step == "preflight" and isinstance(exc.value, DeployRefused)
    assert not any(argv[1] in ("build", "login", "push") for argv, _, _ in run.calls)


def test_repository_from_the_option_or_the_current_image(tmp_path: Path, ecr: Any) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(DeployError, match="registry:old is not in ECR: pass --repository"):
        builder(ecr, Recorder(tmp_path)).preflight("registry:old")
    stub_preflight(ecr, name="other", registry=None)
    plan = builder(ecr, Recorder(tmp_path), repository="other").preflight("registry:old")
    assert plan.repository_uri == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/other"


# --- the real runner, with a fake docker on PATH ---------------------------------------------------------


def test_run_command_feeds_stdin_echoes_and_reports_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = fake_docker(tmp_path / "bin")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    echoed: list[str] = []
    assert run_command(login_argv("r.example"), stdin="pw\n", echo=echoed.append) == "Login Succeeded\n"
    assert echoed == ["Login Succeeded"]
    assert docker_calls(log) == [{"argv": login_argv("r.example")[1:], "stdin": "pw\n", "cwd": os.getcwd()}]
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "push")
    monkeypatch.setenv("FAKE_DOCKER_ERROR", "denied: not authorized")
    with pytest.raises(CommandError, match=r"`docker push` exited 1: denied: not authorized"):
        run_command(push_argv("r.example/x:1"))


def test_preflight_refuses_when_docker_is_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(CommandError, match="`docker version` not found on PATH"):
        run_command(["docker", "version"])
    with pytest.raises(DeployError, match="docker is not on PATH"):
        ImageBuilder(object()).preflight(CURRENT)


# --- the runbook wrapper ---------------------------------------------------------------------------------


def test_runbook_script_passes_build_through(tmp_path: Path) -> None:
    """scripts/deploy_mlflow_container.sh with a fake `hokusai-registry` that prints its argv."""
    (tmp_path / "hokusai-registry").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "hokusai-registry").chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "ECS_CLUSTER": "c", "ECS_SERVICE": "s"}

    def script(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), *args], env=env | extra, capture_output=True, text=True)

    done = script("--build", "--dry-run", MLFLOW_TRACKING_URI="https://r.example")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "deploy", "ecs", "--cluster", "c", "--service", "s",
        "--url", "https://r.example", "--build", "--dry-run",
    ]  # fmt: skip
    assert script(IMAGE="repo:1").stdout.split()[6:] == ["--image", "repo:1"]
    missing = subprocess.run(["bash", str(SCRIPT)], env={"PATH": env["PATH"]}, capture_output=True, text=True)
    assert missing.returncode == 2 and "ECS_CLUSTER" in missing.stderr
