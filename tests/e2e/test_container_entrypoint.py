"""deploy/entrypoint.sh, the container's entrypoint, run directly on the host (no Docker engine here).

The image's real command is what gets tested: the script refuses to start without its required
variables, and with them it serves a registry on PostgreSQL and S3 (moto) that `verify` passes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_verify import run_verify
from tests.services import CLI, VENV_BIN, free_port, run_postgres, run_s3, s3_client, stop, wait_for_health

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "entrypoint.sh"
REQUIRED = (
    "HOKUSAI_REGISTRY_BACKEND_STORE_URI",
    "HOKUSAI_REGISTRY_ARTIFACTS_DESTINATION",
    "HOKUSAI_REGISTRY_FLASK_SECRET_KEY",
    "HOKUSAI_REGISTRY_ADMIN_PASSWORD",
    "HOKUSAI_REGISTRY_KEY_HASH_SECRET",
)
SECRETS = REQUIRED[2:]


def base_env(tmp: Path) -> dict[str, str]:
    """The host environment without any registry or client settings, the venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HOKUSAI_", "MLFLOW_", "AWS_")) and k != "TMPDIR"
    }
    return env | {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TMPDIR": str(tmp)}


@pytest.mark.parametrize(
    "present",
    [(), REQUIRED[:2], REQUIRED[2:]],
    ids=["nothing-set", "no-secrets", "no-stores"],
)
def test_refuses_to_start_naming_each_missing_variable(tmp_path: Path, present: tuple[str, ...]) -> None:
    given = {name: f"value-of-{name.lower()}-{secrets.token_hex(4)}" for name in present}
    env = base_env(tmp_path) | given | {"HOKUSAI_REGISTRY_PORT": str(free_port())}
    done = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    missing = [name for name in REQUIRED if name not in present]
    lines = [line for line in done.stderr.splitlines() if "is not set" in line]
    assert [next(n for n in REQUIRED if n in line) for line in lines] == missing, done.stderr
    for value in given.values():
        assert value not in done.stdout + done.stderr
    assert not (tmp_path / "hokusai-registry").exists(), "nothing should be prepared before refusing"


def test_entrypoint_serves_a_registry_that_verify_passes(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    given_secrets = {name: secrets.token_urlsafe(32) for name in SECRETS}
    log_path = tmp_path / "entrypoint.log"
    with run_postgres() as pg_uri, run_s3("registry-artifacts") as s3_env:
        s3 = s3_client(s3_env)
        # verify deletes what it uploads; with versioning the deleted objects stay listable.
        s3.put_bucket_versioning(Bucket="registry-artifacts", VersioningConfiguration={"Status": "Enabled"})
        env = (
            base_env(tmp_path)
            | s3_env
            | given_secrets
            | {
                "HOKUSAI_REGISTRY_BACKEND_STORE_URI": pg_uri,
                "HOKUSAI_REGISTRY_ARTIFACTS_DESTINATION": "s3://registry-artifacts/prod",
                "HOKUSAI_REGISTRY_HOST": "127.0.0.1",
                "HOKUSAI_REGISTRY_PORT": str(port),
                "HOKUSAI_REGISTRY_WORKERS": "1",
            }
        )
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [str(ENTRYPOINT)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                start_new_session=True,
                cwd=tmp_path,
            )
        try:
            try:
                wait_for_health(url, proc, timeout=180)
            except (RuntimeError, TimeoutError) as exc:
                raise AssertionError(f"{exc}; log:\n{log_path.read_text()[-4000:]}") from None
            assert "hk_live_" not in log_path.read_text(), "a key went to the container's log"
            # The operator's first key, as the docs say: `keys create` with the container's settings.
            created = subprocess.run(
                [CLI, "keys", "create", "--user", "admin", "--scope", "admin"],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            code, report = run_verify(url, created.stdout.strip(), tmp_path, "--large-mb", "1")
            versions = s3.list_object_versions(Bucket="registry-artifacts").get("Versions", [])
        finally:
            stop(proc)
    assert code == 0, report
    assert report["passed"] is True, report
    stored = [v["Key"] for v in versions]
    assert stored, "verify's artifacts never reached the S3 bucket"
    assert all(key.startswith("prod/") for key in stored), stored
    # The data dir defaulted to $TMPDIR/hokusai-registry; SQLite was never used.
    data_dir = tmp_path / "hokusai-registry"
    assert (data_dir / "auth.ini").exists()
    assert not (data_dir / "mlflow.db").exists() and not (data_dir / "auth.db").exists()
    log = log_path.read_text()
    for value in given_secrets.values():
        assert value not in log, "a secret value was printed"
