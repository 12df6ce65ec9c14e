"""One user's key cannot touch another user's runs, models or artifacts; a read key cannot write."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.services import Registry

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts"


@dataclass(frozen=True)
class Owned:
    experiment_id: str
    run_id: str
    model: str
    artifact: str  # path under the artifact root: <exp>/<run>/artifacts/notes.txt


@pytest.fixture(scope="module")
def owner_name() -> str:
    return f"owner-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def owner(registry: Registry, owner_name: str) -> httpx.Client:
    return registry.client(registry.create_key(owner_name))


@pytest.fixture(scope="module")
def owned(owner: httpx.Client) -> Owned:
    suffix = uuid.uuid4().hex[:8]
    experiment_id = ok(owner.post(f"{API}/experiments/create", json={"name": f"iso-{suffix}"}))[
        "experiment_id"
    ]
    run = ok(owner.post(f"{API}/runs/create", json={"experiment_id": experiment_id, "start_time": 1}))["run"]
    run_id = run["info"]["run_id"]
    artifact = f"{experiment_id}/{run_id}/artifacts/notes.txt"
    ok(owner.put(f"{ARTIFACTS}/artifacts/{artifact}", content=b"owner's bytes"))
    model = f"iso-model-{suffix}"
    ok(owner.post(f"{API}/registered-models/create", json={"name": model}))
    source = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/notes.txt"
    ok(owner.post(f"{API}/model-versions/create", json={"name": model, "source": source, "run_id": run_id}))
    return Owned(experiment_id, run_id, model, artifact)


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, (response.request.url, response.status_code, response.text)
    return response.json() if response.content else {}


def write_attempts(owned: Owned) -> list[tuple[str, str, dict | None, bytes | None]]:
    """Every kind of change to the owner's model, run and artifacts: (method, path, json, body)."""
    model, run_id, artifact = owned.model, owned.run_id, owned.artifact
    return [
        ("POST", f"{API}/model-versions/create", {"name": model, "source": "mlflow-artifacts:/x"}, None),
        ("DELETE", f"{API}/registered-models/delete", {"name": model}, None),
        ("POST", f"{API}/registered-models/set-tag", {"name": model, "key": "k", "value": "v"}, None),
        ("POST", f"{API}/registered-models/alias", {"name": model, "alias": "prod", "version": "1"}, None),
        (
            "POST",
            f"{API}/model-versions/set-tag",
            {"name": model, "version": "1", "key": "k", "value": "v"},
            None,
        ),
        (
            "POST",
            f"{API}/runs/log-metric",
            {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 1},
            None,
        ),
        ("POST", f"{API}/runs/log-parameter", {"run_id": run_id, "key": "p", "value": "x"}, None),
        ("POST", f"{API}/runs/update", {"run_id": run_id, "status": "FINISHED"}, None),
        ("POST", f"{API}/runs/delete", {"run_id": run_id}, None),
        ("PUT", f"{ARTIFACTS}/artifacts/{artifact}", None, b"overwritten"),
        ("PUT", f"{ARTIFACTS}/artifacts/{owned.experiment_id}/{run_id}/artifacts/new.txt", None, b"new"),
        ("DELETE", f"{ARTIFACTS}/artifacts/{artifact}", None, None),
        ("POST", f"{ARTIFACTS}/mpu/create/{artifact}", {"path": artifact, "num_parts": 1}, None),
        (
            "POST",
            f"{ARTIFACTS}/mpu/complete/{artifact}",
            {"path": artifact, "upload_id": "u", "parts": []},
            None,
        ),
        ("POST", f"{ARTIFACTS}/mpu/abort/{artifact}", {"path": artifact, "upload_id": "u"}, None),
    ]


def read_attempts(owned: Owned) -> list[tuple[str, str, dict]]:
    return [
        ("GET", f"{API}/registered-models/get", {"name": owned.model}),
        ("GET", f"{API}/model-versions/get", {"name": owned.model, "version": "1"}),
        ("GET", f"{API}/runs/get", {"run_id": owned.run_id}),
        ("GET", f"{API}/experiments/get", {"experiment_id": owned.experiment_id}),
        ("GET", f"{ARTIFACTS}/artifacts/{owned.artifact}", {}),
        ("GET", f"{ARTIFACTS}/artifacts", {"path": f"{owned.experiment_id}/{owned.run_id}/artifacts"}),
    ]


def assert_untouched(owner: httpx.Client, owned: Owned) -> None:
    model = ok(owner.get(f"{API}/registered-models/get", params={"name": owned.model}))["registered_model"]
    assert "tags" not in model and "aliases" not in model
    versions = ok(owner.get(f"{API}/model-versions/search", params={"filter": f"name='{owned.model}'"}))
    assert [v["version"] for v in versions["model_versions"]] == ["1"]
    run = ok(owner.get(f"{API}/runs/get", params={"run_id": owned.run_id}))["run"]
    assert run["info"]["lifecycle_stage"] == "active" and run["info"]["status"] == "RUNNING"
    assert "metrics" not in run["data"] and "params" not in run["data"]
    assert owner.get(f"{ARTIFACTS}/artifacts/{owned.artifact}").content == b"owner's bytes"
    listing = ok(owner.get(f"{ARTIFACTS}/artifacts", params={"path": owned.artifact.rsplit("/", 1)[0]}))
    assert [f["path"] for f in listing["files"]] == ["notes.txt"]


def send(client: httpx.Client, method: str, path: str, payload: dict | None, body: bytes | None) -> int:
    if method in ("GET", "DELETE") and payload is not None and not path.startswith(ARTIFACTS):
        return client.request(method, path, json=payload).status_code
    return client.request(method, path, json=payload, content=body).status_code


def test_other_users_write_key_is_refused_everything(
    registry: Registry, owner: httpx.Client, owned: Owned
) -> None:
    stranger = registry.client(registry.create_key(f"stranger-{uuid.uuid4().hex[:6]}"))
    refused = {
        path: send(stranger, method, path, payload, body)
        for method, path, payload, body in write_attempts(owned)
    }
    assert set(refused.values()) == {403}, refused
    for method, path, params in read_attempts(owned):
        assert stranger.request(method, path, params=params).status_code == 403, path
    assert_untouched(owner, owned)


def test_other_users_searches_do_not_show_owned_resources(registry: Registry, owned: Owned) -> None:
    stranger = registry.client(registry.create_key(f"searcher-{uuid.uuid4().hex[:6]}"))
    experiments = ok(stranger.post(f"{API}/experiments/search", json={"max_results": 1000}))
    assert owned.experiment_id not in {e["experiment_id"] for e in experiments.get("experiments", [])}
    models = ok(stranger.get(f"{API}/registered-models/search", params={"max_results": 1000}))
    assert owned.model not in {m["name"] for m in models.get("registered_models", [])}
    versions = ok(stranger.get(f"{API}/model-versions/search", params={"max_results": 1000}))
    assert owned.model not in {v["name"] for v in versions.get("model_versions", [])}
    runs = stranger.post(f"{API}/runs/search", json={"experiment_ids": [owned.experiment_id]})
    assert runs.status_code == 403 or not runs.json().get("runs")


def test_read_key_reads_but_never_writes(
    registry: Registry, owner_name: str, owner: httpx.Client, owned: Owned
) -> None:
    reader = registry.client(registry.create_key(owner_name, scope="read"))
    for method, path, params in read_attempts(owned):
        response = reader.request(method, path, params=params)
        assert response.status_code == 200, (path, response.text)
    # The UI's run page reads through GraphQL, a POST; it changes nothing, so a read key may use it.
    query = "query Run($id: String) { mlflowGetRun(input: {runId: $id}) { run { info { runId } } } }"
    graphql = reader.post("/graphql", json={"query": query, "variables": {"id": owned.run_id}})
    assert graphql.status_code == 200, graphql.text
    assert graphql.json()["data"]["mlflowGetRun"]["run"]["info"]["runId"] == owned.run_id
    attempts = [
        *write_attempts(owned),
        ("POST", f"{API}/experiments/create", {"name": "from-read-key"}, None),
    ]
    refused = {path: send(reader, method, path, payload, body) for method, path, payload, body in attempts}
    assert set(refused.values()) == {403}, refused
    assert reader.post(f"{API}/runs/log-metric", json={}).json()["error_code"] == "PERMISSION_DENIED"
    assert_untouched(owner, owned)
    assert (
        owner.get(f"{API}/experiments/get-by-name", params={"experiment_name": "from-read-key"}).status_code
        == 404
    )


def test_creator_can_use_what_it_just_created_on_any_worker(registry: Registry) -> None:
    """The stock client creates a model and at once adds a version, often on another worker."""
    client = registry.client(registry.create_key(f"creator-{uuid.uuid4().hex[:6]}"))
    for attempt in range(10):
        name = f"fresh-{uuid.uuid4().hex[:8]}"
        ok(client.post(f"{API}/registered-models/create", json={"name": name}))
        ok(
            client.post(
                f"{API}/registered-models/set-tag", json={"name": name, "key": "try", "value": str(attempt)}
            )
        )
        experiment_id = ok(client.post(f"{API}/experiments/create", json={"name": name}))["experiment_id"]
        run_id = ok(client.post(f"{API}/runs/create", json={"experiment_id": experiment_id}))["run"]["info"][
            "run_id"
        ]
        ok(client.put(f"{ARTIFACTS}/artifacts/{experiment_id}/{run_id}/artifacts/a.txt", content=b"a"))
        time.sleep(0.05)
