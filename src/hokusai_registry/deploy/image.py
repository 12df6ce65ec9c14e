"""`deploy ecs --build`: build the registry image for linux/amd64, push it to ECR, hand back its URI.

The docker and git calls are a small seam: pure functions build every argv and the tag, and one
:data:`Runner` executes them (:func:`run_command`, via subprocess, by default), so tests record the argv
without a docker engine. ECR calls go through the boto3 client the :class:`ImageBuilder` is given.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError
from rich.console import Console
from rich.markup import escape

from hokusai_registry.deploy.errors import AWS_ERRORS, DeployError, DeployRefused

PLATFORM = "linux/amd64"  # ECS Fargate's default; an arm64 laptop's native image would not start there
DOCKERFILE = "deploy/Dockerfile"
ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<name>[a-z0-9._/-]+?)(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$"
)
DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


# --- pure: argv, tag, parsing --------------------------------------------------------------------------


def image_tag(commit: str, when: datetime, dirty: bool) -> str:
    """``<short commit>-<UTC YYYYmmddHHMMSS>``, with ``-dirty`` when the worktree had changes."""
    return f"{commit}-{when.astimezone(UTC):%Y%m%d%H%M%S}" + ("-dirty" if dirty else "")


def ecr_repository(image: str) -> tuple[str, str] | None:
    """(registry id, repository name) of an ECR image URI, else None."""
    match = ECR_URI.match(image)
    return (match["account"], match["name"]) if match else None


def docker_version_argv() -> list[str]:
    return ["docker", "version", "--format", "{{.Server.Version}}"]


def buildx_inspect_argv() -> list[str]:
    return ["docker", "buildx", "inspect"]


def build_argv(ref: str) -> list[str]:
    """Run from the repository root."""
    return ["docker", "build", "--platform", PLATFORM, "-f", DOCKERFILE, "-t", ref, "."]


def login_argv(registry: str) -> list[str]:
    """The password goes to stdin, never into argv (visible in ps) or a log."""
    return ["docker", "login", "--username", "AWS", "--password-stdin", registry]


def push_argv(ref: str) -> list[str]:
    return ["docker", "push", ref]


def git_argv(*args: str) -> list[str]:
    return ["git", *args]


def buildx_platforms(inspect_output: str) -> list[str]:
    """Platforms from ``docker buildx inspect`` ("Platforms: linux/amd64*, linux/arm64"); [] if none shown."""
    found: list[str] = []
    for line in inspect_output.splitlines():
        if line.strip().startswith("Platforms:"):
            found += [p.strip().rstrip("*") for p in line.split(":", 1)[1].split(",") if p.strip()]
    return found


def push_digest(push_output: str) -> str | None:
    """The digest ``docker push`` reports last ("<tag>: digest: sha256:... size: 1234")."""
    found = DIGEST.findall(push_output)
    return str(found[-1]) if found else None


def ecr_password(authorization_token: str) -> str:
    """get_authorization_token's token is base64("AWS:<password>")."""
    return base64.b64decode(authorization_token).decode().split(":", 1)[1]


# --- the runner ----------------------------------------------------------------------------------------


class CommandError(Exception):
    def __init__(self, argv: Sequence[str], code: int | None, output: str) -> None:
        tail = " | ".join(output.strip().splitlines()[-5:])
        status = "not found on PATH" if code is None else f"exited {code}"
        super().__init__(f"`{' '.join(argv[:2])}` {status}" + (f": {tail}" if tail else ""))
        self.code, self.output = code, output


class Runner(Protocol):
    def __call__(
        self,
        argv: Sequence[str],
        *,
        stdin: str | None = None,
        cwd: Path | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> str: ...


def run_command(
    argv: Sequence[str],
    *,
    stdin: str | None = None,
    cwd: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> str:
    """Run ``argv`` (no shell) with ``stdin``; echo each output line as it comes; return stdout+stderr.

    Raises CommandError when the program is missing or exits non-zero.
    """
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )  # fmt: skip
    except FileNotFoundError:
        raise CommandError(argv, None, "") from None
    with proc:
        if stdin is not None and proc.stdin:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        lines: list[str] = []
        for line in proc.stdout or ():
            lines.append(line)
            if echo:
                echo(line.rstrip("\n"))
    output = "".join(lines)
    if proc.returncode:
        raise CommandError(argv, proc.returncode, output)
    return output


# --- plan and build ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    root: Path
    registry_id: str
    repository: str
    repository_uri: str
    commit: str
    dirty: bool
    tag: str
    password: str = field(repr=False)

    @property
    def ref(self) -> str:
        return f"{self.repository_uri}:{self.tag}"

    @property
    def registry(self) -> str:
        return self.repository_uri.split("/", 1)[0]

    def steps(self) -> list[list[str]]:
        return [build_argv(self.ref), login_argv(self.registry), push_argv(self.ref)]

    def lines(self) -> list[str]:
        dirty = " (worktree dirty: uncommitted or untracked files may be in the image)" if self.dirty else ""
        return [
            f"repository   {self.repository_uri}",
            f"commit       {self.commit}{dirty}",
            f"tag          {self.tag}",
            f"context      {self.root}",
            *(f"run          {' '.join(argv)}" for argv in self.steps()),
            "then deploy  the pushed image by digest (repository@sha256:...)",
        ]


class ImageBuilder:
    """Preflight (docker, git, ECR repository and login token) and build + login + push."""

    def __init__(
        self,
        ecr: Any,
        *,
        repository: str | None = None,
        context: Path | None = None,
        run: Runner = run_command,
        console: Console | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ecr, self.repository, self.context = ecr, repository, context
        self.run, self.clock = run, clock
        self.console = console or Console(stderr=True)

    def preflight(self, current_image: str) -> BuildPlan:
        """Everything --build needs, checked before anything is built; changes nothing."""
        self._check_docker()
        root, commit, dirty = self._git()
        registry_id, name = self._repository_name(current_image)
        where = {"registryId": registry_id} if registry_id else {}
        step = f"ECR repository {name!r}"
        try:
            repo = self.ecr.describe_repositories(repositoryNames=[name], **where)["repositories"][0]
            step = "ECR login token"
            token = self.ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        except AWS_ERRORS as exc:
            raise DeployRefused("preflight", f"{step} check failed: {exc}") from None
        return BuildPlan(
            root, str(repo["registryId"]), name, str(repo["repositoryUri"]), commit, dirty,
            image_tag(commit, self.clock(), dirty), ecr_password(token),
        )  # fmt: skip

    def _check_docker(self) -> None:
        try:
            self.run(docker_version_argv())
        except CommandError as exc:
            what = (
                "docker is not on PATH" if exc.code is None else f"docker does not reach its engine ({exc})"
            )
            raise DeployRefused("preflight", f"{what}; --build needs docker with buildx") from None
        try:
            platforms = buildx_platforms(self.run(buildx_inspect_argv()))
        except CommandError as exc:
            raise DeployRefused("preflight", f"docker buildx is not available ({exc})") from None
        if platforms and PLATFORM not in platforms:
            raise DeployRefused(
                "preflight",
                f"the docker builder cannot build {PLATFORM} (it has {', '.join(platforms)}); on an arm64 "
                "machine install emulation: docker run --privileged --rm tonistiigi/binfmt --install amd64",
            )

    def _git(self) -> tuple[Path, str, bool]:
        try:
            root = Path(self.run(git_argv("rev-parse", "--show-toplevel"), cwd=self.context).strip())
            commit = self.run(git_argv("rev-parse", "--short", "HEAD"), cwd=root).strip()
            dirty = bool(self.run(git_argv("status", "--porcelain"), cwd=root).strip())
        except CommandError as exc:
            raise DeployRefused(
                "preflight", f"--build runs in a git checkout of the registry ({exc})"
            ) from None
        if not (root / DOCKERFILE).is_file():
            raise DeployRefused(
                "preflight", f"no {DOCKERFILE} in {root}: run --build from the registry's checkout"
            )
        return root, commit, dirty

    def _repository_name(self, current_image: str) -> tuple[str, str]:
        if self.repository:
            return ecr_repository(self.repository) or ("", self.repository)
        if found := ecr_repository(current_image):
            return found
        raise DeployRefused(
            "preflight", f"the current image {current_image} is not in ECR: pass --repository NAME"
        )

    def build_and_push(self, plan: BuildPlan) -> str:
        """docker build, login, push; the pushed image's URI by digest (else by tag)."""

        def echo(line: str) -> None:
            self.console.print(f"  {escape(line)}", style="dim", highlight=False)

        build, login, push = plan.steps()
        self.console.print(f"building {plan.ref} for {PLATFORM}", highlight=False)
        self._step("build", lambda: self.run(build, cwd=plan.root, echo=echo))
        self._step("login", lambda: self.run(login, stdin=plan.password + "\n"))
        self.console.print(f"pushing {plan.ref}", highlight=False)
        output = self._step("push", lambda: self.run(push, echo=echo))
        digest = self._ecr_digest(plan) or push_digest(output)
        return f"{plan.repository_uri}@{digest}" if digest else plan.ref

    @staticmethod
    def _step(step: str, call: Callable[[], str]) -> str:
        try:
            return call()
        except CommandError as exc:
            raise DeployError(step, f"{step} failed: {exc}") from None

    def _ecr_digest(self, plan: BuildPlan) -> str | None:
        """The digest ECR holds for the pushed tag; None (with a note) when ECR cannot be read."""
        try:
            details = self.ecr.describe_images(
                registryId=plan.registry_id, repositoryName=plan.repository, imageIds=[{"imageTag": plan.tag}]
            )["imageDetails"]
        except AWS_ERRORS as exc:
            if (
                isinstance(exc, ClientError)
                and exc.response.get("Error", {}).get("Code") == "ImageNotFoundException"
            ):
                raise DeployError("push", f"docker push succeeded but ECR has no image {plan.ref}") from None
            self.console.print(f"[yellow]note:[/yellow] ECR describe-images failed ({escape(str(exc))})")
            return None
        return str(details[0]["imageDigest"]) if details else None
