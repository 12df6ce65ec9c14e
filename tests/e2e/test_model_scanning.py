"""Model scanning end to end: the stock client registers, the server scans, quarantines and releases.

One `up` server per policy; the malicious model is a PythonModel whose pickle calls os.system, logged
with ``mlflow.pyfunc.log_model(..., registered_model_name=...)`` as any third party would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.services import Registry, run_postgres, run_registry, run_s3

CLIENT = Path(__file__).with_name("scan_client.py")
API = "/api/2.0/mlflow"


def stock_client(registry: Registry, key: str, action: str, name: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CLIENT), action, name],
        env=registry.third_party_env(key),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def blocking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("block")) as registry:
        yield registry


def version_files(http: httpx.Client, name: str) -> tuple[str, str]:
    """(the version's storage path under the artifact root, its logged model id)."""
    version = http.get(f"{API}/model-versions/get", params={"name": name, "version": "1"}).json()
    model_id = version["model_version"]["source"].removeprefix("models:/")  # MLflow 3: models:/m-...
    logged = http.get(f"{API}/logged-models/{model_id}").json()["model"]["info"]
    return logged["artifact_uri"].removeprefix("mlflow-artifacts:/"), model_id


def assert_quarantined(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error_code"] == "MODEL_QUARANTINED"
    for word in words:
        assert word in body["message"]


def test_a_malicious_pythonmodel_fails_in_the_client_and_nobody_can_download_it(blocking: Registry) -> None:
    owner = blocking.create_key("mallory")
    result = stock_client(blocking, owner, "malicious", "evil")
    assert result["raised"], result
    message = result["message"]
    assert "FAILED_REGISTRATION" in message and "python_model.pkl" in message and "system" in message

    admin = blocking.client(blocking.admin_key)
    version = admin.get(f"{API}/model-versions/get", params={"name": "evil", "version": "1"}).json()
    tags = {tag["key"]: tag["value"] for tag in version["model_version"].get("tags", [])}
    assert version["model_version"]["status"] == "FAILED_REGISTRATION"
    assert tags["hokusai_scan_verdict"] == "unsafe" and "system" in tags["hokusai_scan_findings"]
    admin.post(f"{API}/registered-models/alias", json={"name": "evil", "alias": "champion", "version": "1"})

    # Every door, with the admin key: the pipelines that evaluate third-party models often hold one.
    root, model_id = version_files(admin, "evil")
    params = {"name": "evil", "version": "1"}
    assert_quarantined(admin.get(f"{API}/model-versions/get-download-uri", params=params), "evil", "system")
    assert_quarantined(admin.get("/ajax-api/2.0/mlflow/model-versions/get-download-uri", params=params))
    assert_quarantined(admin.get("/model-versions/get-artifact", params={**params, "path": "MLmodel"}))
    for path in ("python_model.pkl", "MLmodel"):
        assert_quarantined(admin.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/{path}"))
        assert_quarantined(admin.get(f"/ajax-api/2.0/mlflow-artifacts/artifacts/{root}/{path}"))
        assert_quarantined(
            admin.get(
                f"/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files",
                params={"artifact_file_path": path},
            )
        )
    listed = admin.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": root})
    assert listed.status_code == 200 and "python_model.pkl" in listed.text  # names are not code

    # The stock client, as admin, by number and by alias.
    outcomes = stock_client(blocking, blocking.admin_key, "download", "evil")
    for uri, outcome in outcomes.items():
        assert "MODEL_QUARANTINED" in outcome or "403" in outcome, (uri, outcome)


def test_the_owner_cannot_forge_a_verdict_or_flip_the_status(blocking: Registry) -> None:
    owner = blocking.create_key("forger")
    assert stock_client(blocking, owner, "malicious", "forged")["raised"]
    http = blocking.client(owner)
    for refused in (
        http.post(
            f"{API}/model-versions/set-tag",
            json={"name": "forged", "version": "1", "key": "hokusai_scan_verdict", "value": "clean"},
        ),
        http.request(
            "DELETE",
            f"{API}/model-versions/delete-tag",
            json={"name": "forged", "version": "1", "key": "hokusai_scan_verdict"},
        ),
    ):
        assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
    http.patch(f"{API}/model-versions/update", json={"name": "forged", "version": "1", "status": "READY"})
    version = http.get(f"{API}/model-versions/get", params={"name": "forged", "version": "1"}).json()
    assert version["model_version"]["status"] == "FAILED_REGISTRATION"
    tags = {tag["key"]: tag["value"] for tag in version["model_version"].get("tags", [])}
    assert tags["hokusai_scan_verdict"] == "unsafe"


def test_a_released_version_is_served(blocking: Registry) -> None:
    owner = blocking.create_key("reviewed")
    assert stock_client(blocking, owner, "malicious", "reviewed")["raised"]
    shown = json.loads(blocking.cli("scan", "show", "reviewed", "1", "--json").stdout)
    assert shown["verdict"] == "unsafe" and shown["blocked"]
    assert {entry["path"] for entry in shown["manifest"]} >= {"MLmodel", "python_model.pkl"}
    assert all(len(entry["sha256"]) == 64 for entry in shown["manifest"])

    refused = blocking.cli("scan", "release", "reviewed", "1", "--reason", "  ", check=False)
    assert refused.returncode == 2 and "reason" in refused.stderr
    released = blocking.cli("scan", "release", "reviewed", "1", "--reason", "a test fixture, reviewed")
    assert "released" in released.stderr and '"action": "scan_release"' in released.stderr

    http = blocking.client(owner)
    params = {"name": "reviewed", "version": "1"}
    assert http.get(f"{API}/model-versions/get", params=params).json()["model_version"]["status"] == "READY"
    uri = http.get(f"{API}/model-versions/get-download-uri", params=params)
    assert uri.status_code == 200
    root, _ = version_files(http, "reviewed")
    assert http.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/python_model.pkl").status_code == 200

    # A rescan (after a scanner upgrade, say) takes the release back; the running server scans it again.
    rescanned = blocking.cli("scan", "rescan", "reviewed")
    assert "1 version(s)" in rescanned.stderr and '"action": "scan_rescan"' in rescanned.stderr
    refused = http.get(f"{API}/model-versions/get-download-uri", params=params)
    assert_quarantined(refused)  # pending again, or already scanned again by a sweep that just ran
    assert "not been scanned" in refused.json()["message"] or "found unsafe" in refused.json()["message"]
    deadline = time.monotonic() + 60
    status = "PENDING_REGISTRATION"
    while status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = http.get(f"{API}/model-versions/get", params=params).json()["model_version"]["status"]
    assert status == "FAILED_REGISTRATION"


def test_files_the_server_does_not_serve_cannot_be_registered(blocking: Registry, tmp_path: Path) -> None:
    """An experiment with an explicit location is served by a repository no quarantine can guard."""
    owner = blocking.create_key("elsewhere")
    http = blocking.client(owner)
    location = (tmp_path / "outside").as_uri()
    http.post(f"{API}/experiments/create", json={"name": "outside-experiment", "artifact_location": location})
    result = stock_client(blocking, owner, "malicious", "outside")  # logs into outside-experiment
    assert result["raised"] and "mlflow-artifacts" in result["message"], result
    got = http.get(f"{API}/registered-models/get", params={"name": "outside"}).json()
    assert not got["registered_model"].get("latest_versions"), "a refused version was written"


def test_a_benign_model_becomes_ready_and_loads(blocking: Registry) -> None:
    result = stock_client(blocking, blocking.create_key("bob"), "benign", "good")
    assert result["same"] is True
    shown = json.loads(blocking.cli("scan", "show", "good", "1", "--json").stdout)
    assert shown["verdict"] == "clean" and not shown["blocked"]


def test_a_registered_versions_files_cannot_be_overwritten_or_deleted(blocking: Registry) -> None:
    """What is served is what was scanned: the owner's own key cannot replace a scanned file through
    either upload route (the local store streams uploads, a path of its own to the repository)."""
    owner = blocking.create_key("frozen-owner")
    assert stock_client(blocking, owner, "benign", "frozen")["same"] is True
    http = blocking.client(owner)
    root, _ = version_files(http, "frozen")
    original = http.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/MLmodel").content
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        for path in ("MLmodel", "extra.pkl"):
            replaced = http.put(f"{prefix}/mlflow-artifacts/artifacts/{root}/{path}", content=b"evil")
            assert replaced.status_code == 403, replaced.text
            assert "cannot be changed" in replaced.json()["message"]
        deleted = http.delete(f"{prefix}/mlflow-artifacts/artifacts/{root}/MLmodel")
        assert deleted.status_code == 403, deleted.text
    assert http.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/MLmodel").content == original
    listing = http.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": root}).json()
    assert "extra.pkl" not in {entry["path"] for entry in listing.get("files", [])}


def test_scan_show_of_an_unknown_version_says_so(blocking: Registry) -> None:
    done = blocking.cli("scan", "show", "no-such-model", "1", check=False)
    assert done.returncode == 1 and "has no scan" in done.stderr


@pytest.mark.parametrize("policy", ["warn", "off"])
def test_other_policies_serve_the_model(tmp_path: Path, policy: str) -> None:
    with run_registry(tmp_path, env={"HOKUSAI_REGISTRY_SCAN_POLICY": policy}) as registry:
        key = registry.create_key("carol")
        assert stock_client(registry, key, "malicious", "served")["raised"] is False
        http = registry.client(key)
        version = http.get(f"{API}/model-versions/get", params={"name": "served", "version": "1"}).json()
        tags = {tag["key"]: tag["value"] for tag in version["model_version"].get("tags", [])}
        assert version["model_version"]["status"] == "READY"
        uri = http.get(f"{API}/model-versions/get-download-uri", params={"name": "served", "version": "1"})
        assert uri.status_code == 200
        if policy == "warn":
            assert tags["hokusai_scan_verdict"] == "unsafe"
            assert "system" in version["model_version"]["status_message"]
        else:
            assert not any(key.startswith("hokusai_scan_") for key in tags)


def test_a_worker_killed_mid_scan_does_not_leave_the_version_pending(tmp_path: Path) -> None:
    """The scanning worker dies; its lease runs out and another worker's sweep gives the verdict."""
    env = {"HOKUSAI_REGISTRY_SCAN_INLINE_MAX_BYTES": "0"}  # every scan in the background
    with run_registry(tmp_path, env=env) as registry:
        http = registry.client(registry.create_key("dave"))
        experiment = http.post(f"{API}/experiments/create", json={"name": "big"}).json()["experiment_id"]
        run = http.post(f"{API}/runs/create", json={"experiment_id": experiment}).json()["run"]["info"]
        run_dir = registry.data_dir / "artifacts" / run["artifact_uri"].removeprefix("mlflow-artifacts:/")
        (run_dir / "model").mkdir(parents=True)
        (run_dir / "model" / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
        with (run_dir / "model" / "weights.bin").open("wb") as big:
            big.truncate(6 << 30)  # 6 GiB of sparse zeros: seconds of hashing, no disk used
        http.post(f"{API}/registered-models/create", json={"name": "big"})
        created = http.post(
            f"{API}/model-versions/create",
            json={"name": "big", "source": f"{run['artifact_uri']}/model", "run_id": run["run_id"]},
        ).json()["model_version"]
        assert created["status"] == "PENDING_REGISTRATION"

        engine = sa.create_engine(f"sqlite:///{registry.data_dir / 'mlflow.db'}")
        owner = None
        for _ in range(200):
            with engine.connect() as conn:
                owner = conn.execute(
                    sa.text("SELECT lease_owner FROM hokusai_scans WHERE name='big'")
                ).scalar()
            if owner:
                break
            time.sleep(0.05)
        assert owner, "no worker took the scan"
        os.kill(int(owner.split(":")[1]), signal.SIGKILL)

        deadline = time.monotonic() + 90
        status = "PENDING_REGISTRATION"
        while status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(1)
            got = http.get(f"{API}/model-versions/get", params={"name": "big", "version": "1"})
            if got.status_code == 200:
                status = got.json()["model_version"]["status"]
        assert status == "READY", registry.log()[-3000:]
        with engine.connect() as conn:
            attempts = conn.execute(sa.text("SELECT attempts FROM hokusai_scans WHERE name='big'")).scalar()
        engine.dispose()
        assert attempts == 2, "the verdict did not come from a second worker taking the scan over"


def test_on_postgresql_the_verdict_and_the_quarantine_hold(tmp_path: Path) -> None:
    with run_postgres() as uri, run_registry(tmp_path, "--backend-store-uri", uri) as registry:
        key = registry.create_key("pg-tenant")
        assert stock_client(registry, key, "malicious", "evil-pg")["raised"]
        assert stock_client(registry, key, "benign", "good-pg")["same"] is True
        admin = registry.client(registry.admin_key)
        params = {"name": "evil-pg", "version": "1"}
        assert_quarantined(admin.get(f"{API}/model-versions/get-download-uri", params=params), "system")
        shown = registry.cli("scan", "show", "evil-pg", "1", "--json", "--backend-store-uri", uri)
    assert json.loads(shown.stdout)["verdict"] == "unsafe"


def test_models_in_s3_are_scanned_and_quarantined_there(tmp_path: Path) -> None:
    """The scan reads the files from the bucket the server stores them in (moto's S3 server here)."""
    destination = "s3://registry-artifacts/prod"
    with (
        run_s3("registry-artifacts") as s3_env,
        run_registry(tmp_path, "--artifacts-destination", destination, env=s3_env) as registry,
    ):
        key = registry.create_key("s3-tenant")
        result = stock_client(registry, key, "malicious", "evil-s3")
        assert result["raised"] and "python_model.pkl" in result["message"], result
        assert stock_client(registry, key, "benign", "good-s3")["same"] is True
        admin = registry.client(registry.admin_key)
        root, _ = version_files(admin, "evil-s3")
        assert_quarantined(admin.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/python_model.pkl"))
        shown = json.loads(registry.cli("scan", "show", "good-s3", "1", "--json").stdout)
    assert shown["verdict"] == "clean" and shown["manifest"]
