"""GET /metrics on a real 2-worker `up`: who may read it, and that each family counts what it says.

Every number is read as a difference before and after the requests a test makes, from one scrape,
whichever worker serves it: the samples are summed over the replica's workers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.services import Registry

SCAN_CLIENT = Path(__file__).with_name("scan_client.py")
SEARCH = "/api/2.0/mlflow/registered-models/search"
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")  # values may hold braces


def scrape(registry: Registry, key: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(
        f"{registry.url}/metrics", headers={"Authorization": f"Bearer {key or registry.admin_key}"}
    )
    assert response.status_code == 200, response.text
    samples = {}
    for line in response.text.splitlines():
        if match := _SAMPLE.match(line):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def key_for(registry: Registry, user: str, scope: str, **extra: object) -> dict:
    created = httpx.post(
        f"{registry.url}/api/hokusai/v1/keys",
        json={"name": f"k{time.monotonic_ns()}", "user": user, "scope": scope, **extra},
        headers={"Authorization": f"Bearer {registry.admin_key}"},
    )
    assert created.status_code == 201, created.text
    return created.json()


def get(registry: Registry, path: str, key: str | None, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{registry.url}{path}", headers=auth | headers)


def test_only_admin_and_metrics_keys_read_metrics_and_a_metrics_key_reads_nothing_else(
    registry: Registry,
) -> None:
    anonymous = get(registry, "/metrics", None)
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"
    for scope in ("read", "write"):
        refused = get(registry, "/metrics", key_for(registry, f"metrics-{scope}", scope)["key"])
        assert refused.status_code == 403 and "scope 'metrics'" in refused.json()["message"]
    prometheus = key_for(registry, "prometheus", "metrics")["key"]
    assert get(registry, "/metrics", prometheus).status_code == 200
    for path in (SEARCH, "/api/hokusai/v1/whoami", "/api/2.0/mlflow/experiments/get?experiment_id=0"):
        refused = get(registry, path, prometheus)
        assert refused.status_code == 403, (path, refused.text)


def test_requests_are_counted_by_route_template_across_both_workers(registry: Registry) -> None:
    before = scrape(registry)
    for _ in range(20):  # fresh connections: uvicorn's workers share them out
        assert get(registry, SEARCH, registry.admin_key).status_code == 200
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/metrics-test/{time.monotonic_ns()}/file.bin"
    assert (
        httpx.put(
            f"{registry.url}{artifact}",
            content=b"x",
            headers={"Authorization": f"Bearer {registry.admin_key}"},
        ).status_code
        == 200
    )
    scrapes = [scrape(registry) for _ in range(4)]  # served by either worker: the same sums
    route = {"route": SEARCH, "method": "GET", "status": "200"}
    counted = {
        value(s, "hokusai_requests_total", **route) - value(before, "hokusai_requests_total", **route)
        for s in scrapes
    }
    assert counted == {20.0}
    duration = {"route": SEARCH, "method": "GET"}
    assert (
        value(scrapes[-1], "hokusai_request_duration_seconds_count", **duration)
        - value(before, "hokusai_request_duration_seconds_count", **duration)
        == 20
    )
    labels = {dict(labels).get("route") for (name, labels) in scrapes[-1] if name == "hokusai_requests_total"}
    assert "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}" in labels
    assert not any(artifact in (label or "") for label in labels)  # a path is never a label


def test_refusals_are_counted_by_reason(registry: Registry) -> None:
    short = key_for(registry, "metrics-expiring", "write", expires_in_days=1 / 86400)
    revoked = key_for(registry, "metrics-revoked", "write")
    httpx.delete(
        f"{registry.url}/api/hokusai/v1/keys/{revoked['id']}",
        headers={"Authorization": f"Bearer {registry.admin_key}"},
    )
    reader = key_for(registry, "metrics-reader", "read")["key"]
    time.sleep(1.2)
    before = scrape(registry)
    assert get(registry, SEARCH, None).status_code == 401  # missing
    assert get(registry, SEARCH, "not a key").status_code == 401  # malformed
    assert get(registry, SEARCH, "hk_live_" + "u" * 43).status_code == 401  # unknown
    assert get(registry, SEARCH, revoked["key"]).status_code == 401  # revoked
    assert get(registry, SEARCH, short["key"]).status_code == 401  # expired
    write = httpx.post(
        f"{registry.url}/api/2.0/mlflow/experiments/create",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert write.status_code == 403  # forbidden: ours (a read key writing)
    assert (
        get(registry, "/api/2.0/mlflow/experiments/get?experiment_id=0", reader).status_code == 403
    )  # MLflow's
    after = scrape(registry)
    moved = {
        reason: value(after, "hokusai_auth_refusals_total", reason=reason)
        - value(before, "hokusai_auth_refusals_total", reason=reason)
        for reason in (
            "missing",
            "malformed",
            "unknown",
            "revoked",
            "expired",
            "forbidden",
            "key_service_down",
        )
    }
    assert moved == {
        "missing": 1,
        "malformed": 1,
        "unknown": 1,
        "revoked": 1,
        "expired": 1,
        "forbidden": 2,
        "key_service_down": 0,
    }


def test_artifact_bytes_are_counted_up_and_down(registry: Registry) -> None:
    path = f"{registry.url}/api/2.0/mlflow-artifacts/artifacts/metrics-test/{time.monotonic_ns()}/blob.bin"
    auth = {"Authorization": f"Bearer {registry.admin_key}"}
    before = scrape(registry)
    assert httpx.put(path, content=b"b" * 300_000, headers=auth).status_code == 200
    assert len(httpx.get(path, headers=auth).content) == 300_000
    after = scrape(registry)
    for direction in ("up", "down"):
        moved = value(after, "hokusai_artifact_bytes_total", direction=direction) - value(
            before, "hokusai_artifact_bytes_total", direction=direction
        )
        assert moved == 300_000, direction


@pytest.mark.parametrize(
    ("action", "outcome", "verdict"), [("benign", "ready", "clean"), ("malicious", "failed", "unsafe")]
)
def test_registrations_and_scans_are_counted_by_outcome_and_verdict(
    registry: Registry, action: str, outcome: str, verdict: str
) -> None:
    tenant = key_for(registry, f"metrics-tenant-{action}", "write")["key"]
    before = scrape(registry)
    done = subprocess.run(
        [sys.executable, str(SCAN_CLIENT), action, f"metrics-{action}-{time.monotonic_ns()}"],
        env=registry.third_party_env(tenant),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    json.loads(done.stdout.strip().splitlines()[-1])
    after = scrape(registry)
    assert (
        value(after, "hokusai_registrations_total", outcome=outcome)
        - value(before, "hokusai_registrations_total", outcome=outcome)
        == 1
    )
    assert (
        value(after, "hokusai_scans_total", verdict=verdict)
        - value(before, "hokusai_scans_total", verdict=verdict)
        == 1
    )


def test_the_auth_cache_counts_hits(registry: Registry) -> None:
    before = scrape(registry)
    with registry.client(registry.admin_key) as client:  # one connection: one worker, its cache warm
        for _ in range(10):
            assert client.get(SEARCH).status_code == 200
    after = scrape(registry)
    hits = value(after, "hokusai_auth_cache_total", result="hit") - value(
        before, "hokusai_auth_cache_total", result="hit"
    )
    assert hits >= 9  # the first may miss; the scrape itself adds one


def test_every_answer_names_its_replica(registry: Registry) -> None:
    ids = {get(registry, SEARCH, registry.admin_key).headers.get("x-hokusai-replica") for _ in range(8)}
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{8}", ids.pop() or "")
