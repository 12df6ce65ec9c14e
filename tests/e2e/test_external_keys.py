"""Keys issued by an external auth service: validated, cached, refused, never let through when it is down."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import mlflow.sklearn
import pytest
from sklearn.linear_model import LinearRegression

from hokusai_registry.register import KeyServiceUnavailable, register_model
from hokusai_registry.register.retry import RetryPolicy
from tests.services import Registry, free_port, run_registry

VALID = "hk_live_external_valid_key_0123456789abcdef"
READ_ONLY = "hk_live_external_read_key_0123456789abcdef"
LATE = "hk_live_external_first_seen_in_an_outage_0123"  # valid, first presented while the service fails


class KeyService:
    """A local stand-in for the auth service: answers valid / invalid, or can be made to fail."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.failing = False
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                service.calls.append({"path": self.path, "key": key, "body": body})
                if service.failing:
                    self.send_response(500)
                    self.end_headers()
                    return
                answers = {
                    VALID: {
                        "user_id": "ext-user",
                        "key_id": "ext-1",
                        "scopes": ["model:write", "model:read"],
                    },
                    READ_ONLY: {"user_id": "ext-reader", "key_id": "ext-2", "scopes": ["model:read"]},
                    LATE: {"user_id": "ext-late", "key_id": "ext-3", "scopes": ["model:write"]},
                }
                status, answer = (200, answers[key]) if key in answers else (401, {"detail": "Invalid key"})
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls_for(self, key: str) -> int:
        return sum(call["key"] == key for call in self.calls)


@pytest.fixture(scope="module")
def key_service() -> Iterator[KeyService]:
    service = KeyService()
    yield service
    service.server.shutdown()


@pytest.fixture(scope="module")
def registry_with_service(
    tmp_path_factory: pytest.TempPathFactory, key_service: KeyService
) -> Iterator[Registry]:
    env = {
        "HOKUSAI_REGISTRY_AUTH_URL": key_service.url,
        "HOKUSAI_REGISTRY_AUTH_SERVICE_ID": "registry-under-test",
        "HOKUSAI_REGISTRY_AUTH_CACHE_TTL_SECONDS": "30",
    }
    # One worker, so the cache can be counted exactly.
    with run_registry(tmp_path_factory.mktemp("ext"), workers=1, env=env) as registry:
        yield registry


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "linear"
    mlflow.sklearn.save_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), str(path))
    return path


def search(registry: Registry, key: str) -> httpx.Response:
    return httpx.post(
        f"{registry.url}/api/2.0/mlflow/experiments/search",
        json={"max_results": 1},
        headers={"Authorization": f"Bearer {key}"},
    )


def test_valid_external_key_is_accepted_and_cached(
    registry_with_service: Registry, key_service: KeyService
) -> None:
    for _ in range(5):
        assert search(registry_with_service, VALID).status_code == 200
    assert key_service.calls_for(VALID) == 1
    call = next(c for c in key_service.calls if c["key"] == VALID)
    assert call["path"] == "/api/v1/keys/validate"
    assert call["body"] == {"service_id": "registry-under-test"}
    created = httpx.post(
        f"{registry_with_service.url}/api/2.0/mlflow/experiments/create",
        json={"name": "external-user-experiment"},
        headers={"X-API-Key": VALID},
    )
    assert created.status_code == 200, created.text


def test_external_read_scope_cannot_write(registry_with_service: Registry) -> None:
    assert search(registry_with_service, READ_ONLY).status_code == 200
    response = httpx.post(
        f"{registry_with_service.url}/api/2.0/mlflow/experiments/create",
        json={"name": "from-external-reader"},
        headers={"Authorization": f"Bearer {READ_ONLY}"},
    )
    assert response.status_code == 403


def test_invalid_external_key_is_refused_every_time(
    registry_with_service: Registry, key_service: KeyService
) -> None:
    invalid = "hk_live_external_invalid_0123456789abcdef"
    for _ in range(2):
        response = search(registry_with_service, invalid)
        assert response.status_code == 401
        assert response.json()["error_code"] == "UNAUTHENTICATED"
        assert "key service" in response.json()["message"]
    assert key_service.calls_for(invalid) == 2  # refusals are never cached


def test_service_down_means_503_with_retry_after(
    registry_with_service: Registry, key_service: KeyService
) -> None:
    unseen = "hk_live_external_unseen_0123456789abcdef"
    key_service.failing = True
    try:
        response = search(registry_with_service, unseen)
    finally:
        key_service.failing = False
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_service_unreachable_means_503_and_nothing_written(tmp_path: Path) -> None:
    env = {"HOKUSAI_REGISTRY_AUTH_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    with run_registry(tmp_path, workers=1, env=env) as registry:
        response = httpx.post(
            f"{registry.url}/api/2.0/mlflow/experiments/create",
            json={"name": "while-down"},
            headers={"Authorization": f"Bearer {VALID}"},
        )
        assert response.status_code == 503, response.text
        assert "Retry-After" in response.headers
        admin = registry.client(registry.admin_key)  # local keys keep working while the service is down
        lookup = admin.get(
            "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "while-down"}
        )
        assert lookup.status_code == 404


def test_register_names_a_down_key_service_and_creates_nothing(
    registry_with_service: Registry, key_service: KeyService, model: Path
) -> None:
    """F6 as a registering third party meets it: a typed error that says what is down, nothing made."""
    unseen = "hk_live_external_register_0123456789abcdef"
    admin = registry_with_service.client(registry_with_service.admin_key)
    key_service.failing = True
    try:
        with pytest.raises(KeyServiceUnavailable, match=r"cannot check API keys.*\(F6\)"):
            register_model(
                model, "while-key-service-down", token_id="t-1", metric="r2", baseline=0.5,
                url=registry_with_service.url, api_key=unseen, retry=RetryPolicy(budget_seconds=8),
            )  # fmt: skip
    finally:
        key_service.failing = False
    assert key_service.calls_for(unseen) >= 2, "a 503 with Retry-After (5 s) is retried within the budget"
    lookup = admin.get("/api/2.0/mlflow/registered-models/get", params={"name": "while-key-service-down"})
    assert lookup.status_code == 404


def test_register_retries_through_a_short_key_service_outage(
    registry_with_service: Registry, key_service: KeyService, model: Path
) -> None:
    key_service.failing = True
    threading.Timer(3.0, lambda: setattr(key_service, "failing", False)).start()
    registration = register_model(
        model, "after-key-service-outage", token_id="t-2", metric="r2", baseline=0.5,
        url=registry_with_service.url, api_key=LATE,
    )  # fmt: skip
    assert registration.version == "1"
    assert key_service.calls_for(LATE) >= 2, "the first answers were failures, so it must have asked again"


def test_the_key_api_says_external_keys_are_managed_by_the_service(registry_with_service: Registry) -> None:
    api, auth = f"{registry_with_service.url}/api/hokusai/v1", {"Authorization": f"Bearer {VALID}"}
    me = httpx.get(f"{api}/whoami", headers=auth).json()
    assert (me["id"], me["user"], me["scope"], me["source"]) == ("ext:ext-1", "ext-user", "write", "external")
    for method, path in (
        ("POST", "/keys"),
        ("DELETE", "/keys/ext:ext-1"),
        ("POST", "/keys/ext:ext-1/rotate"),
    ):
        body = {"name": "mine"} if path == "/keys" else None
        refused = httpx.request(method, f"{api}{path}", headers=auth, json=body)
        assert refused.status_code == 409, (method, path, refused.text)
        assert "external key service" in refused.json()["message"]
    admin = {"Authorization": f"Bearer {registry_with_service.admin_key}"}
    assert httpx.delete(f"{api}/keys/ext:ext-1", headers=admin).status_code == 409
    # A local key of the same user: an external key must not mint a local one that outlives it.
    local = httpx.post(f"{api}/keys", headers=admin, json={"user": "ext-user", "name": "local"}).json()
    for method, path in (("POST", f"/keys/{local['id']}/rotate"), ("DELETE", f"/keys/{local['id']}")):
        refused = httpx.request(method, f"{api}{path}", headers=auth)
        assert refused.status_code == 409, (method, path, refused.text)
    assert httpx.get(f"{api}/whoami", headers={"Authorization": f"Bearer {local['key']}"}).status_code == 200
    assert search(registry_with_service, VALID).status_code == 200  # nothing was revoked
