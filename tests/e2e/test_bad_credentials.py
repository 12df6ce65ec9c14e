"""Every kind of bad credential gets 401 with a JSON body that says which, and writes nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import pytest

from tests.services import Registry

API = "/api/2.0/mlflow"


def attempt_create(registry: Registry, headers: dict[str, str | bytes]) -> tuple[httpx.Response, str]:
    name = f"must-not-exist-{uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{registry.url}{API}/experiments/create", json={"name": name}, headers=headers)
    return response, name


def assert_refused_and_nothing_written(
    registry: Registry, response: httpx.Response, name: str, says: str, key: str | None = None
) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Basic realm="hokusai-registry"'
    body = response.json()
    assert body["error_code"] == "UNAUTHENTICATED"
    assert says in body["message"], body["message"]
    if key:
        assert key not in response.text
    admin = registry.client(registry.admin_key)
    assert admin.get(f"{API}/experiments/get-by-name", params={"experiment_name": name}).status_code == 404


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer"}, "empty API key"),
        ({"X-API-Key": ""}, "empty API key"),
        ({"Authorization": "Token hk_live_abcdefghijklmnopqrstuvwxyz"}, "unsupported authorization scheme"),
        ({"Authorization": "Bearer " + "A" * 10_000}, "malformed API key"),
        ({"Authorization": ("Bearer hk_live_" + "caf\xe9" * 5).encode("latin-1")}, "malformed API key"),
        ({"Authorization": "Basic !!!not-base64!!!"}, "malformed Basic credentials"),
        ({"Authorization": "Bearer hk_live_" + "x" * 43}, "unknown API key"),
        ({"X-API-Key": "hk_live_" + "y" * 43}, "unknown API key"),
    ],
    ids=[
        "no-header", "empty-bearer", "empty-x-api-key", "wrong-prefix", "10kb-header",
        "non-ascii", "bad-basic", "unknown-bearer", "unknown-x-api-key",
    ],
)  # fmt: skip
def test_bad_credentials(registry: Registry, headers: dict[str, str | bytes], says: str) -> None:
    response, name = attempt_create(registry, headers)
    assert_refused_and_nothing_written(registry, response, name, says)


def test_all_three_ways_to_send_a_key_work(registry: Registry) -> None:
    key = registry.create_key("three-ways")
    basic = base64.b64encode(f"anyone:{key}".encode()).decode()
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"X-API-Key": key},
        {"Authorization": f"Basic {basic}"},
    ):
        response = httpx.get(
            f"{registry.url}{API}/experiments/search", params={"max_results": 1}, headers=headers
        )
        assert response.status_code == 200, (headers.keys(), response.text)


def test_revoked_key_stops_working_on_every_worker_within_5_seconds(registry: Registry) -> None:
    key = registry.create_key("revokee")
    client = registry.client(key)
    for _ in range(10):  # warm every worker's cache with the key
        assert client.post(f"{API}/experiments/search", json={"max_results": 1}).status_code == 200
    key_id = json.loads(registry.cli("keys", "list", "--user", "revokee", "--json").stdout)[0]["id"]
    registry.cli("keys", "revoke", key_id)
    revoked_at = time.monotonic()
    time.sleep(max(0.0, 5 - (time.monotonic() - revoked_at)))
    statuses = {
        client.post(f"{API}/experiments/search", json={"max_results": 1}).status_code for _ in range(20)
    }
    assert statuses == {401}
    response, name = attempt_create(registry, {"Authorization": f"Bearer {key}"})
    assert_refused_and_nothing_written(registry, response, name, f"API key {key_id} was revoked", key)


def test_expired_key(registry: Registry) -> None:
    key = registry.create_key("expiring", expires_in_days=2 / 86_400)  # two seconds
    time.sleep(2.5)
    response, name = attempt_create(registry, {"Authorization": f"Bearer {key}"})
    assert_refused_and_nothing_written(registry, response, name, "expired at", key)


def test_key_of_a_deleted_user(registry: Registry) -> None:
    key = registry.create_key("short-lived-user")
    admin = registry.client(registry.admin_key)
    deleted = admin.request("DELETE", f"{API}/users/delete", json={"username": "short-lived-user"})
    assert deleted.status_code == 200, deleted.text
    time.sleep(5)  # the revocation bound: caches on every worker have expired by now
    response, name = attempt_create(registry, {"Authorization": f"Bearer {key}"})
    assert_refused_and_nothing_written(registry, response, name, "was revoked", key)  # with its user
    registry.create_key("short-lived-user")  # the name is taken again: the old key must stay dead
    time.sleep(2.5)
    response, name = attempt_create(registry, {"Authorization": f"Bearer {key}"})
    assert_refused_and_nothing_written(registry, response, name, "was revoked", key)


def test_keys_never_appear_in_the_log(registry: Registry) -> None:
    key = registry.create_key("audited")
    client = registry.client(key)
    assert client.post(
        f"{API}/experiments/create", json={"name": f"audited-{uuid.uuid4().hex[:6]}"}
    ).is_success
    bad = "hk_live_" + "z" * 43
    httpx.get(f"{registry.url}{API}/experiments/search", headers={"Authorization": f"Bearer {bad}"})
    time.sleep(0.5)
    log = registry.log()
    assert key not in log
    assert bad not in log
    assert log.count(registry.admin_key) == 1  # printed once by `up`, never logged
    audit = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    audit = [a for a in audit if "action" not in a]  # requests, not key-management actions
    key_id = json.loads(registry.cli("keys", "list", "--user", "audited", "--json").stdout)[0]["id"]
    writes = [a for a in audit if a["key_id"] == key_id and a["path"].endswith("/experiments/create")]
    assert writes and writes[-1]["user"] == "audited" and writes[-1]["status"] == 200
    assert set(writes[-1]) == {"time", "key_id", "user", "method", "path", "status", "duration_ms"}
    assert any(a["status"] == 401 and a["key_id"] is None for a in audit)


def test_a_read_keys_refused_write_is_audited_with_its_key_id(registry: Registry) -> None:
    created = json.loads(
        registry.cli("keys", "create", "--user", "audited-reader", "--scope", "read", "--json").stdout
    )
    response, _ = attempt_create(registry, {"Authorization": f"Bearer {created['key']}"})
    assert response.status_code == 403
    time.sleep(0.5)
    audit = [json.loads(line) for line in registry.log().splitlines() if line.startswith('{"time"')]
    refused = [a for a in audit if a["key_id"] == created["id"]]
    assert refused and refused[-1]["status"] == 403 and refused[-1]["user"] == "audited-reader"
