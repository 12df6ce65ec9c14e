"""`register` meets the registry's model scan: clean models pass, a pickle naming os.system is rejected
(the version kept for an admin), under ``warn`` it passes with a warning, a background scan is waited for.

The dangerous model is a hand-built pickle that names ``os.system`` and calls nothing (a GLOBAL, then
STOP), beside a minimal MLmodel: `register` never loads a model, so nothing here runs it. Servers: the
session's default one (``block``, small models scanned inline), and one per policy this module needs
(one worker each).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow.sklearn
import pytest
import sklearn

from hokusai_registry import register_model
from hokusai_registry.register import ModelRejected, ScanTimedOut
from tests.e2e.test_register import (
    API,
    client_env,
    estimator,
    metadata_args,
    register_cli,
    unique,
    version_of,
)
from tests.services import Registry, run_registry

OS_SYSTEM_PICKLE = b"\x80\x02cos\nsystem\nq\x00."
MLMODEL = (
    "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n    python_model: model.pkl\n"
)


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn model as MLflow saves it (requirements given: inferring them takes seconds)."""
    path = tmp_path_factory.mktemp("clean") / "linear"
    mlflow.sklearn.save_model(
        estimator(), str(path), pip_requirements=[f"scikit-learn=={sklearn.__version__}"]
    )
    return path


@pytest.fixture(scope="module")
def dangerous_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dangerous") / "model"
    path.mkdir()
    (path / "MLmodel").write_text(MLMODEL)
    (path / "model.pkl").write_bytes(OS_SYSTEM_PICKLE)
    return path


@pytest.fixture(scope="module")
def warning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    env = {"HOKUSAI_REGISTRY_SCAN_POLICY": "warn"}
    with run_registry(tmp_path_factory.mktemp("warn"), workers=1, env=env) as registry:
        yield registry


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """``block`` with every model scanned in the background, so `register` sees PENDING_REGISTRATION."""
    env = {"HOKUSAI_REGISTRY_SCAN_INLINE_MAX_BYTES": "0"}
    with run_registry(tmp_path_factory.mktemp("background"), workers=1, env=env) as registry:
        yield registry


def cli_env(registry: Registry, key: str) -> dict[str, str]:
    return client_env(MLFLOW_TRACKING_URI=registry.url, HOKUSAI_API_KEY=key)


def run_status(registry: Registry, run_id: str) -> str:
    got = registry.client(registry.admin_key).get(f"{API}/runs/get", params={"run_id": run_id})
    assert got.status_code == 200, got.text
    return str(got.json()["run"]["info"]["status"])


def test_a_clean_model_is_ready_and_the_summary_says_clean(registry: Registry, clean_dir: Path) -> None:
    key, name = registry.create_key(unique("scan-clean")), unique("clean")
    done = register_cli(clean_dir, *metadata_args(name), env=cli_env(registry, key))
    assert done.returncode == 0, done.stderr
    assert any(line.split()[:2] == ["scan", "clean"] for line in done.stdout.splitlines()), done.stdout
    assert "warning" not in done.stderr
    assert version_of(registry, name, "1").json()["model_version"]["status"] == "READY"


def test_a_pickle_naming_os_system_is_rejected_and_kept_for_review(
    registry: Registry, dangerous_dir: Path
) -> None:
    key, name = registry.create_key(unique("scan-mallory")), unique("evil")
    done = register_cli(dangerous_dir, *metadata_args(name), "--json", env=cli_env(registry, key))
    assert done.returncode == 1, done.stdout + done.stderr
    stderr = " ".join(done.stderr.split())  # rich folds long lines
    assert "rejected" in stderr and "model.pkl" in stderr and "system" in stderr, done.stderr
    assert f"hokusai-registry scan show {name} 1" in stderr and "finding: model.pkl" in stderr
    failure = json.loads(done.stdout)
    assert (failure["kind"], failure["step"], failure["version"]) == ("ModelRejected", "scan", "1")
    assert failure["verdict"] in ("unsafe", "suspicious") and any("system" in f for f in failure["findings"])

    kept = version_of(registry, name, "1").json()["model_version"]
    tags = {t["key"]: t["value"] for t in kept.get("tags", [])}
    assert kept["status"] == "FAILED_REGISTRATION" and "hokusai_status" not in tags
    assert run_status(registry, kept["run_id"]) == "FAILED"

    with pytest.raises(ModelRejected) as caught:  # the Python call: a second version, rejected the same way
        register_model(
            dangerous_dir, name, token_id="evil-1", metric="r2", baseline=0.5, url=registry.url, api_key=key
        )
    rejected = caught.value
    assert (rejected.name, rejected.version, rejected.step) == (name, "2", "scan")
    assert rejected.findings and all(": " in line for line in rejected.findings)
    assert any("model.pkl" in line and "system" in line for line in rejected.findings), rejected.findings
    assert rejected.status_message.startswith("quarantined by hokusai-registry's model scan")
    assert "was kept" in str(rejected) and f"scan show {name} 2" in str(rejected)
    assert version_of(registry, name, "2").json()["model_version"]["status"] == "FAILED_REGISTRATION"


def test_under_warn_a_flagged_model_registers_with_a_warning(warning: Registry, dangerous_dir: Path) -> None:
    key, name = warning.create_key("scan-warned"), unique("flagged")
    done = register_cli(dangerous_dir, *metadata_args(name), "--json", env=cli_env(warning, key))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["scan_verdict"] in ("unsafe", "suspicious")
    assert any("system" in line for line in result["scan_findings"])
    stderr = " ".join(done.stderr.split())
    assert "warning:" in stderr and "policy is warn" in stderr and "finding: model.pkl" in stderr
    tags = {t["key"]: t["value"] for t in version_of(warning, name, "1").json()["model_version"]["tags"]}
    assert tags["hokusai_status"] == "registered" and tags["hokusai_scan_verdict"] == result["scan_verdict"]


def test_a_background_scan_is_waited_for(background: Registry, clean_dir: Path, dangerous_dir: Path) -> None:
    key, name = background.create_key("scan-patient"), unique("slow")
    steps: list[str] = []
    done = register_model(
        clean_dir, name, token_id="slow-1", metric="r2", baseline=0.5, url=background.url, api_key=key,
        on_step=steps.append,
    )  # fmt: skip
    assert steps == ["prepare", "experiment", "run", "upload", "register", "scan", "round_trip", "finish"]
    assert (done.scan_verdict, done.scan_findings) == ("clean", [])
    assert done.to_json()["scan_verdict"] == "clean" and done.timings["scan"] >= 0

    with pytest.raises(ModelRejected) as caught:
        register_model(
            dangerous_dir, name, token_id="slow-1", metric="r2", baseline=0.5, url=background.url, api_key=key
        )
    assert caught.value.version == "2" and caught.value.findings


def test_a_scan_that_outlasts_the_wait_deletes_the_version(background: Registry, dangerous_dir: Path) -> None:
    key, name = background.create_key("scan-impatient"), unique("impatient")
    with pytest.raises(ScanTimedOut) as caught:
        register_model(
            dangerous_dir, name, token_id="slow-2", metric="r2", baseline=0.5, url=background.url,
            api_key=key, scan_timeout=0,
        )  # fmt: skip
    assert caught.value.step == "scan" and "F14" in str(caught.value)
    assert "Model version 1 was deleted" in str(caught.value)
    assert version_of(background, name, "1").status_code == 404
