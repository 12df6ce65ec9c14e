"""A request that only decides allow or deny trusts its caller's auth epochs read in the last second
(decisions.py); across the 2 workers of the shared registry a grant is still honoured at once and a
revocation within that second."""

from __future__ import annotations

import time
import uuid

from hokusai_registry.server.auth_store import EPOCH_INTERVAL
from tests.services import Registry

API = "/api/2.0/mlflow"
PERMISSIONS = "/api/3.0/mlflow/users/permissions"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


def statuses(registry: Registry, key: str, method: str, path: str, params: dict[str, str]) -> list[int]:
    """The same request on 8 new connections, so both workers answer some of them."""
    answers = []
    for _ in range(8):
        with registry.client(key) as fresh:
            answers.append(fresh.request(method, path, params=params).status_code)
    return answers


def test_a_grant_made_on_one_worker_is_honoured_by_the_next_request_on_any(registry: Registry) -> None:
    """Checked for a Flask request (decisions.install) and an artifact transfer (the permission gate),
    each by a reader of its own: a reader's first fresh read would refresh both paths."""
    owner_key = registry.create_key(f"owner-{uuid.uuid4().hex[:6]}")
    with registry.client(owner_key) as owner:
        created = owner.post(f"{API}/experiments/create", json={"name": f"dec-{uuid.uuid4().hex[:8]}"})
        experiment_id = created.json()["experiment_id"]
        run = owner.post(f"{API}/runs/create", json={"experiment_id": experiment_id}).json()["run"]
        run_id = run["info"]["run_id"]
        artifact = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/notes.txt"
        assert owner.put(artifact, content=b"notes").status_code == 200
    for request in [("GET", f"{API}/runs/get", {"run_id": run_id}), ("GET", artifact, {})]:
        reader = f"reader-{uuid.uuid4().hex[:6]}"
        key = registry.create_key(reader)
        # Refused everywhere, and each worker has read the reader's epochs a moment ago: the next
        # decisions on either would trust them.
        assert set(statuses(registry, key, *request)) == {403}
        grant = {"username": reader, "resource_type": "experiment", "resource_id": experiment_id}
        with registry.client(registry.admin_key) as admin:
            response = admin.post(f"{PERMISSIONS}/grant", json={**grant, "permission": "READ"})
            assert response.status_code == 200, response.text
        # A refusal on trusted epochs is decided again on fresh ones: allowed at once, on both workers.
        assert set(statuses(registry, key, *request)) == {200}, request

        with registry.client(registry.admin_key) as admin:
            assert admin.post(f"{PERMISSIONS}/revoke", json=grant).status_code == 200
        time.sleep(EPOCH_INTERVAL + 0.5)  # the bound on trusting epochs read before the revocation
        assert set(statuses(registry, key, *request)) == {403}, request
