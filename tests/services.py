"""Real processes for the tests: registry servers, a throw-away PostgreSQL cluster, moto's S3 server.

Everything binds 127.0.0.1 on a free port and is stopped by whoever started it (``tests.processes``
has the port, health and stop helpers, shared with the benchmarks).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.processes import free_port, stop, wait_for_health  # also imported from here by the tests

VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "hokusai-registry")


@dataclass
class Registry:
    """A running `hokusai-registry up`: its URL, data dir, first admin key and log."""

    url: str
    data_dir: Path
    admin_key: str
    proc: subprocess.Popen[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_env(self) -> dict[str, str]:
        """The environment `up` gives its workers, to build the app in another process as they do."""
        secrets = json.loads((self.data_dir / "secrets.json").read_text())
        return {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.data_dir / "auth.ini"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets["flask_secret_key"],
            "HOKUSAI_REGISTRY_KEY_HASH_SECRET": secrets["key_hash_secret"],
            "HOKUSAI_REGISTRY_DATA_DIR": str(self.data_dir),
            "_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED": "true",
            "_MLFLOW_SGI_NAME": "uvicorn",
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args, "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def create_key(self, user: str, scope: str = "write", expires_in_days: float | None = None) -> str:
        args = ["keys", "create", "--user", user, "--scope", scope]
        if expires_in_days is not None:
            args += ["--expires-in-days", str(expires_in_days)]
        return self.cli(*args).stdout.strip()

    def third_party_env(self, key: str) -> dict[str, str]:
        """Only the two variables a third party is told to set (plus what any process needs to run)."""
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_TOKEN": key,
        }

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def run_registry(
    tmp: Path, *args: str, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[Registry]:
    data_dir = tmp / "data"
    port = free_port()
    full_env = {**os.environ, "HOKUSAI_REGISTRY_CACHE_TTL_SECONDS": "2", **(env or {})}
    log_path = tmp / "registry.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [CLI, "up", "--data-dir", str(data_dir), "--port", str(port), "--workers", str(workers), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for_health(url, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; log:\n{log_path.read_text()[-4000:]}") from None
        match = re.search(r"MLFLOW_TRACKING_TOKEN=(\S+)", log_path.read_text())
        assert match, "up did not print the first admin key"
        yield Registry(url, data_dir, match.group(1), proc, log_path, full_env)
    finally:
        stop(proc)


@contextmanager
def run_stock_mlflow(tmp: Path, *args: str) -> Iterator[str]:
    """A stock `mlflow server` (no auth, no plugin) with extra ``args``; yields its URL.

    The job runner stays off, as in `up`, so the test machine is not loaded with huey processes.
    """
    port = free_port()
    command = [
        str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *args,
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (tmp / "mlflow.log").open("w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True, start_new_session=True, cwd=tmp
        )
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextmanager
def run_postgres() -> Iterator[str]:
    """A throw-away PostgreSQL 15 cluster in a temp dir; as root it runs as the `postgres` user."""
    if uri := os.environ.get("HOKUSAI_TEST_POSTGRES_URI"):
        yield uri
        return
    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="hokusai-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    datadir, port = root / "data", free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, timeout=120)

    run(str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l", str(root / "log"), "-w", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "registry")
        yield f"postgresql://postgres@127.0.0.1:{port}/registry"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def s3_client(env: dict[str, str]) -> Any:
    """A boto3 S3 client for the emulator that ``run_s3`` yields the environment of."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


@contextmanager
def run_s3(bucket: str = "registry-artifacts") -> Iterator[dict[str, str]]:
    """moto's S3 in server mode on loopback; yields the environment a server process needs to use it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    try:
        s3_client(env).create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()
