"""`register` against real servers: tags, versions, round trip, refusals translated, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import mlflow.sklearn
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from hokusai_registry import register_model
from hokusai_registry.register import (
    NotAuthenticated,
    RegistrationError,
    RetryPolicy,
    RoundTripMismatch,
)
from tests.services import CLI, Registry, free_port, run_registry, run_stock_mlflow, stop

API = "/api/2.0/mlflow"
FEATURES = np.arange(20.0).reshape(10, 2)
TARGET = FEATURES @ np.array([1.0, 2.0]) + 0.5


def estimator() -> LinearRegression:
    return LinearRegression().fit(FEATURES, TARGET)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "linear"
    mlflow.sklearn.save_model(estimator(), str(path))
    return path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client_env(**extra: str) -> dict[str, str]:
    """The environment of a third party: no key or URL unless the test gives one."""
    drop = {"HOKUSAI_API_KEY", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI"}
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


def register_cli(
    model: Path, *args: str, env: dict[str, str] | None = None, timer: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [CLI, "register", str(model), *args]
    if timer:
        command = ["/usr/bin/time", "-v", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=env if env is not None else client_env()
    )


def metadata_args(name: str, tid: str = "acme-1", metric: str = "r2", baseline: str = "0.97") -> list[str]:
    return ["--name", name, "--token-id", tid, "--metric", metric, "--baseline", baseline]


def version_of(registry: Registry, name: str, version: str) -> httpx.Response:
    admin = registry.client(registry.admin_key)
    return admin.get(f"{API}/model-versions/get", params={"name": name, "version": version})


def version_tags(registry: Registry, name: str, version: str, *, scan: bool = False) -> dict[str, str]:
    """The version's tags; the ``hokusai_scan_*`` ones the registry's scan writes only with ``scan``."""
    response = version_of(registry, name, version)
    assert response.status_code == 200, response.text
    tags = {t["key"]: t["value"] for t in response.json()["model_version"].get("tags", [])}
    return {k: v for k, v in tags.items() if scan or not k.startswith("hokusai_scan_")}


def server_contents(registry: Registry) -> tuple[set[str], set[str], set[str]]:
    """Experiment ids, run ids and model names on the server, as the admin sees them."""
    admin = registry.client(registry.admin_key)
    search = {"max_results": 1000, "view_type": "ALL"}
    experiments = admin.post(f"{API}/experiments/search", json=search).json().get("experiments", [])
    ids = [e["experiment_id"] for e in experiments]
    runs = admin.post(
        f"{API}/runs/search", json={"experiment_ids": ids, "max_results": 1000, "run_view_type": "ALL"}
    ).json()
    models = admin.get(f"{API}/registered-models/search", params={"max_results": 1000}).json()
    return (
        set(ids),
        {r["info"]["run_id"] for r in runs.get("runs", [])},
        {m["name"] for m in models.get("registered_models", [])},
    )


def test_sklearn_object_registers_with_tags_and_loads_back(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, name = registry.create_key(unique("acme")), unique("py-model")
    steps: list[str] = []
    done = register_model(
        estimator(), name, token_id="acme-42", metric="r2", baseline=0.97, tags={"team": "acme"},
        url=registry.url, api_key=key, on_step=steps.append,
    )  # fmt: skip
    assert (done.name, done.version, done.model_uri) == (name, "1", f"models:/{name}/1")
    assert steps == ["prepare", "experiment", "run", "upload", "register", "round_trip", "finish"]
    assert set(done.timings) == {"validate", *steps} and all(t >= 0 for t in done.timings.values())
    assert "MLmodel" in {f.path for f in done.files} and done.total_bytes > 0
    assert version_tags(registry, name, "1") == {
        "hokusai_token_id": "ACME-42",
        "benchmark_metric": "r2",
        "benchmark_value": "0.97",
        "hokusai_status": "registered",
        "team": "acme",
    }
    assert (done.scan_verdict, done.scan_findings) == ("clean", [])  # scanned inline: no "scan" step
    assert version_tags(registry, name, "1", scan=True)["hokusai_scan_verdict"] == "clean"
    # The stock MLflow client, with only the two variables, loads what was registered.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    loaded = mlflow.pyfunc.load_model(done.model_uri)
    assert np.allclose(loaded.predict(FEATURES), TARGET)


def test_model_dir_registers_from_the_cli_and_a_second_time_makes_version_2(
    registry: Registry, model_dir: Path
) -> None:
    key, name = registry.create_key(unique("cli")), unique("dir-model")
    env = client_env(MLFLOW_TRACKING_URI=registry.url, HOKUSAI_API_KEY=key)
    first = register_cli(model_dir, *metadata_args(name), "--tag", "stage=beta", env=env)
    assert first.returncode == 0, first.stderr
    assert f"models:/{name}/1" in first.stdout and "all SHA-256 match" in first.stdout
    second = register_cli(model_dir, *metadata_args(name, baseline="0.98"), "--json", env=env)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["version"] == "2" and result["round_trip"] == "match"
    assert (result["scan_verdict"], result["scan_findings"]) == ("clean", [])
    assert result["total_bytes"] == sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert version_tags(registry, name, "1")["stage"] == "beta"
    assert version_tags(registry, name, "2") == {
        "hokusai_token_id": "ACME-1",
        "benchmark_metric": "r2",
        "benchmark_value": "0.98",
        "hokusai_status": "registered",
    }


INVALID = [
    (["--token-id", "-acme"], "token_id"),
    (["--token-id", "X" * 65], "token_id"),
    (["--token-id", "acme_1"], "token_id"),
    (["--metric", ""], "metric"),
    (["--metric", "m" * 251], "metric"),
    (["--baseline", "nan"], "baseline"),
    (["--baseline", "inf"], "baseline"),
    (["--baseline", "high"], "baseline"),
    (["--name", "team/model"], "name"),
    (["--name", " "], "name"),
    (["--tag", "no-equals-sign"], "tags"),
    (["--tag", "hokusai_status=verified"], "tags"),
    (["--url", "ftp://registry"], "url"),
    (["--api-key", ""], "api_key"),
    (["MODEL_DIR_WITHOUT_MLMODEL"], "model"),
]


@pytest.fixture(scope="module")
def writer_key(registry: Registry) -> str:
    return registry.create_key(unique("writer"))


@pytest.mark.parametrize(("change", "field"), INVALID, ids=[f"{f}:{c[-1][:12]}" for c, f in INVALID])
def test_invalid_input_exits_2_names_the_field_and_creates_nothing(
    registry: Registry, writer_key: str, model_dir: Path, tmp_path: Path, change: list[str], field: str
) -> None:
    before = server_contents(registry)
    options = dict(zip(*[iter(metadata_args(unique("never")))] * 2, strict=True))
    options |= {"--url": registry.url, "--api-key": writer_key}
    model, tags = model_dir, []
    if change[0] == "MODEL_DIR_WITHOUT_MLMODEL":
        model = tmp_path
    elif change[0] == "--tag":
        tags = change
    else:
        options[change[0]] = change[1]
    done = register_cli(model, *[arg for pair in options.items() for arg in pair], *tags)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"validate: {field}:" in done.stderr, done.stderr
    assert server_contents(registry) == before


def test_a_200_mib_model_streams_with_progress_and_bounded_memory(registry: Registry, tmp_path: Path) -> None:
    model = tmp_path / "big-model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: none\n")
    size = 200 * 1024 * 1024
    with (model / "weights.bin").open("wb") as out:
        for _ in range(size // (4 * 1024 * 1024)):
            out.write(os.urandom(4 * 1024 * 1024))
    key, name = registry.create_key(unique("big")), unique("big-model")
    started = time.monotonic()
    done = register_cli(
        model, *metadata_args(name), "--url", registry.url, "--api-key", key, "--json", timer=True
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["total_bytes"] > size and result["round_trip"] == "match"
    assert "upload weights.bin" in done.stderr and "verify weights.bin" in done.stderr
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    print(
        f"200 MiB model: {elapsed:.1f}s wall, peak client RSS {peak_kib / 1024:.0f} MiB, {result['timings']}"
    )
    assert peak_kib * 1024 < size / 2, f"client peak RSS {peak_kib / 1024:.0f} MiB for a 200 MiB model"


def test_a_bad_key_is_named_as_such(registry: Registry, model_dir: Path) -> None:
    before = server_contents(registry)
    bad = "hk_live_" + "x" * 43
    done = register_cli(model_dir, *metadata_args(unique("m")), "--url", registry.url, "--api-key", bad)
    assert done.returncode == 1
    assert "experiment: the registry refused the API key (HTTP 401 UNAUTHENTICATED" in done.stderr
    assert "invalid, revoked or expired" in done.stderr and bad not in done.stderr
    assert server_contents(registry) == before


def test_a_read_key_is_told_to_use_a_write_key(registry: Registry, model_dir: Path) -> None:
    key = registry.create_key(unique("reader"), scope="read")
    done = register_cli(model_dir, *metadata_args(unique("m")), "--url", registry.url, "--api-key", key)
    assert done.returncode == 1
    assert "the key may not do this (HTTP 403 PERMISSION_DENIED" in done.stderr
    assert "use a write key" in done.stderr


@pytest.fixture(scope="module")
def stock_without_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Stock MLflow with artifact serving off but experiments on mlflow-artifacts:/ (an old image, F1)."""
    with run_stock_mlflow(
        tmp_path_factory.mktemp("stock"),
        "--default-artifact-root",
        "mlflow-artifacts:/",
        "--no-serve-artifacts",
    ) as url:
        yield url


def test_a_server_without_artifact_serving_is_named(stock_without_artifacts: str, model_dir: Path) -> None:
    url, name = stock_without_artifacts, unique("m")
    started = time.monotonic()
    done = register_cli(model_dir, *metadata_args(name), "--url", url, "--api-key", "any")
    assert done.returncode == 1
    assert time.monotonic() - started < 60, "a permanent refusal was retried"
    assert (
        "upload: the server does not accept artifacts (HTTP 503: Artifact serving is disabled" in done.stderr
    )
    assert "(F1)" in done.stderr and "No model version was created" in done.stderr
    assert httpx.get(f"{url}{API}/registered-models/get", params={"name": name}).status_code == 404


def test_an_experiment_on_the_servers_disk_is_refused_before_upload(
    stock_without_artifacts: str, model_dir: Path
) -> None:
    url, experiment = stock_without_artifacts, unique("local")
    created = httpx.post(
        f"{url}{API}/experiments/create", json={"name": experiment, "artifact_location": "/srv/mlruns/x"}
    )
    assert created.status_code == 200, created.text
    args = ["--url", url, "--api-key", "any", "--experiment", experiment]
    done = register_cli(model_dir, *metadata_args(unique("m")), *args)
    assert done.returncode == 1
    assert "a path on the server's disk" in done.stderr and "mlflow-artifacts:/" in done.stderr


def test_artifacts_lost_before_the_round_trip_leave_no_version(registry: Registry) -> None:
    key, name = registry.create_key(unique("lost")), unique("lost-model")

    def lose_the_upload(step: str) -> None:
        if step == "round_trip":
            for stored in (registry.data_dir / "artifacts").rglob("*.skops"):
                if stored.stat().st_mtime > time.time() - 30:
                    stored.unlink()

    with pytest.raises(RoundTripMismatch) as caught:
        register_model(
            estimator(), name, token_id="T1", metric="r2", baseline=1, url=registry.url, api_key=key,
            on_step=lose_the_upload,
        )  # fmt: skip
    assert "round_trip:" in str(caught.value) and "model.skops" in str(caught.value)
    assert "Model version 1 was deleted" in str(caught.value)
    assert version_of(registry, name, "1").status_code == 404
    admin = registry.client(registry.admin_key)
    assert admin.get(f"{API}/registered-models/get", params={"name": name}).status_code == 404


def test_a_registry_restart_during_registration_is_retried_through(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "restarted").mkdir()
    with run_registry(tmp_path / "restarted", workers=1) as registry:
        key, name, port = (
            registry.create_key("restart-user"),
            unique("restarted"),
            registry.url.rsplit(":", 1)[1],
        )
        replacement: list[subprocess.Popen[str]] = []

        def restart_before_upload(step: str) -> None:
            if step == "upload":
                stop(registry.proc)
                command = [CLI, "up", "--data-dir", str(registry.data_dir), "--port", port, "--workers", "1"]
                with (tmp_path / "restart.log").open("w") as log:
                    replacement.append(
                        subprocess.Popen(
                            command,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            env=registry.env,
                            text=True,
                            start_new_session=True,
                        )
                    )

        try:
            started = time.monotonic()
            done = register_model(
                model_dir, name, token_id="T1", metric="r2", baseline=1, url=registry.url, api_key=key,
                on_step=restart_before_upload, retry=RetryPolicy(budget_seconds=90),
            )  # fmt: skip
            print(f"registration through a restart: {time.monotonic() - started:.1f}s, {done.timings}")
            assert replacement, "the hook did not restart the registry"
            assert done.version == "1" and done.timings["upload"] > 1
            assert version_tags(registry, name, "1")["hokusai_status"] == "registered"
        finally:
            for proc in replacement:
                stop(proc)


def test_an_unreachable_registry_fails_fast_with_the_step_named(model_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistrationError) as caught:
        register_model(
            model_dir, unique("m"), token_id="T1", metric="r2", baseline=1, url=url, api_key="k",
            retry=RetryPolicy(budget_seconds=2),
        )  # fmt: skip
    assert str(caught.value).startswith(f"experiment: could not reach {url}")
    assert "tries over" in str(caught.value) and not isinstance(caught.value, NotAuthenticated)
