"""The stock MLflow client, given only a URL and a key, does everything a third party needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import Registry, run_postgres, run_registry, run_s3, s3_client

FLOW = Path(__file__).with_name("client_flow.py")


def run_client_flow(registry: Registry, key: str, name: str, extra_env: dict[str, str] | None = None) -> dict:
    env = {**registry.third_party_env(key), **(extra_env or {})}
    done = subprocess.run(
        [sys.executable, str(FLOW), name], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_flow_worked(result: dict) -> None:
    assert result["artifact_location"].startswith("mlflow-artifacts:/")
    assert result["version"] == "1"
    assert result["params"] == {"fit_intercept": "True", "rows": "20"}
    assert result["metrics"]["r2"] == pytest.approx(1.0)
    assert "MLmodel" in result["model_files"]
    assert result["same_predictions"] is True


def test_embedded_default(registry: Registry) -> None:
    key = registry.create_key("alice-flow")
    result = run_client_flow(registry, key, "flow-embedded")
    assert_flow_worked(result)
    artifacts = registry.data_dir / "artifacts"
    assert list(artifacts.rglob("MLmodel")), "the server did not store the artifacts in its data dir"


def test_postgresql_backend(tmp_path: Path) -> None:
    with run_postgres() as pg_uri, run_registry(tmp_path, "--backend-store-uri", pg_uri) as registry:
        result = run_client_flow(registry, registry.create_key("pg-user"), "flow-postgres")
    assert_flow_worked(result)
    assert not (tmp_path / "data" / "mlflow.db").exists()
    assert not (tmp_path / "data" / "auth.db").exists(), "auth data should live in PostgreSQL too"


def test_s3_artifact_destination(tmp_path: Path) -> None:
    with (
        run_s3("registry-artifacts") as s3_env,
        run_registry(
            tmp_path, "--artifacts-destination", "s3://registry-artifacts/prod", env=s3_env
        ) as registry,
    ):
        # The client has no AWS credentials or endpoint: it only talks to the registry.
        result = run_client_flow(registry, registry.create_key("s3-user"), "flow-s3")
        s3 = s3_client(s3_env)
        stored = [o["Key"] for o in s3.list_objects_v2(Bucket="registry-artifacts")["Contents"]]
    assert_flow_worked(result)
    assert any(k.startswith("prod/") and k.endswith("/MLmodel") for k in stored), stored
    assert not (tmp_path / "data" / "artifacts").exists()
