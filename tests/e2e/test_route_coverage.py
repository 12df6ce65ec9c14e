"""Fail closed: every route in MLflow's URL maps (Flask and FastAPI) needs a key, or is public on purpose.

The routes come from the app exactly as a worker builds it, so an MLflow upgrade that adds a route
is checked here automatically; one that adds an unguarded route fails this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hokusai_registry.server import policy
from tests.e2e.dump_routes import concrete
from tests.services import Registry

DUMP = Path(__file__).with_name("dump_routes.py")
# Everything reachable without a key, by route template. Adding to this list is a security decision.
EXPECTED_PUBLIC = {
    "/health",
    "/favicon.ico",
    "/static-files/<path:path>",
    "/api/2.0/mlflow/server-info",
    "/ajax-api/2.0/mlflow/server-info",
    "/api/3.0/mlflow/server-info",
    "/ajax-api/3.0/mlflow/server-info",
}


@pytest.fixture(scope="module")
def routes(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    # MLflow's app falls back to ./mlflow.db when no store is configured: keep that out of the checkout.
    cwd = tmp_path_factory.mktemp("dump-routes")
    done = subprocess.run(
        [sys.executable, str(DUMP)],
        env=registry.worker_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_route_maps_are_the_ones_we_expect(routes: list[dict]) -> None:
    sources = {r["source"] for r in routes}
    assert {"flask", "fastapi", "hokusai"} <= sources
    paths = {r["path"] for r in routes}
    # The routes third parties depend on; if MLflow renames them, the hook contract changed.
    for needed in (
        "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>",
        "/api/2.0/mlflow/registered-models/create",
        "/api/2.0/mlflow/users/create",
        "/api/hokusai/v1/keys/{key_id}/rotate",
        "/api/hokusai/v1/openapi.json",
    ):
        assert needed in paths or concrete(needed) in {concrete(p) for p in paths}, needed
    assert len(routes) > 300


def test_every_route_requires_a_key_or_is_public_on_purpose(registry: Registry, routes: list[dict]) -> None:
    unguarded, public = [], set()
    with httpx.Client(base_url=registry.url, timeout=30) as anonymous:
        for route in routes:
            path = concrete(route["path"])
            if policy.is_public(path):
                public.add(route["path"])
                continue
            for method in route["methods"]:
                if method == "WEBSOCKET":
                    method = "GET"  # the handshake is an HTTP GET; it must be refused the same way
                response = anonymous.request(method, path)
                if response.status_code != 401 or response.json().get("error_code") != "UNAUTHENTICATED":
                    unguarded.append((method, route["path"], response.status_code))
    assert not unguarded, f"routes answering without a key: {unguarded}"
    assert public <= EXPECTED_PUBLIC, f"new public routes: {public - EXPECTED_PUBLIC}"
    assert "/health" in public


def test_the_permission_gate_bypasses_only_what_mlflow_leaves_undecided(routes: list[dict]) -> None:
    """Our gate (permission_gate.py) skips MLflow's FastAPI permission middleware exactly when that
    middleware would pass the request on without a decision; native routes always go through it."""
    disagree, bypassed, native_guarded, transfers = [], 0, 0, 0
    for route in routes:
        for method, decision in route["decisions"].items():
            if decision["gate_bypasses"] != decision["mlflow_undecided"]:
                disagree.append((method, route["path"], decision))
            if decision["artifact_transfer"]:  # checked before the bypass: MLflow must decide each one
                transfers += 1
                assert not decision["mlflow_undecided"], (method, route["path"])
            bypassed += decision["gate_bypasses"]
            if route["source"] == "fastapi":
                native_guarded += not decision["gate_bypasses"]
                assert not decision["gate_bypasses"], (method, route["path"])
    assert not disagree, disagree
    assert bypassed > 300, "the Flask API routes should take the fast path"
    assert native_guarded > 10
    assert transfers >= 2  # the native GET and PUT of mlflow-artifacts/artifacts/...


def test_public_routes_really_answer_without_a_key(registry: Registry) -> None:
    assert httpx.get(f"{registry.url}/health").status_code == 200
    info = httpx.get(f"{registry.url}/api/3.0/mlflow/server-info")
    assert info.status_code == 200, info.text
