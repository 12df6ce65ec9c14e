"""Artifact paths with `..` or absolute paths never read or write outside the artifact root."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.services import Registry

ROOT = "/api/2.0/mlflow-artifacts/artifacts"


def raw_request(
    client: httpx.Client, method: str, raw_path: str, content: bytes | None = None
) -> httpx.Response:
    """Send the path exactly as written: no client-side dot-segment normalisation."""
    request = client.build_request(method, ROOT, content=content)
    request.url = request.url.copy_with(raw_path=raw_path.encode())
    return client.send(request)


@pytest.mark.parametrize(
    "escape",
    [
        "../{name}",
        "..%2F{name}",
        "%2E%2E/%2E%2E/{name}",
        "1/../../{name}",
        "%2F{tmp}/{name}",
        "/{tmp}/{name}",
    ],
)
def test_writes_stay_inside_the_artifact_root(registry: Registry, escape: str) -> None:
    admin = registry.client(registry.admin_key)  # an admin passes every permission check
    name = f"escape-{uuid.uuid4().hex[:8]}.txt"
    tmp = "tmp"
    response = raw_request(admin, "PUT", f"{ROOT}/{escape.format(name=name, tmp=tmp)}", b"escaped")
    assert response.status_code >= 400, response.text
    artifacts = (registry.data_dir / "artifacts").resolve()
    written = [p for p in Path("/").joinpath("tmp").glob(name)] + list(registry.data_dir.rglob(name))
    assert all(artifacts in p.resolve().parents for p in written), written


@pytest.mark.parametrize(
    "escape", ["../auth.db", "..%2Fauth.db", "%2E%2E%2Fsecrets.json", "/etc/passwd", "%2Fetc%2Fpasswd"]
)
def test_reads_stay_inside_the_artifact_root(registry: Registry, escape: str) -> None:
    admin = registry.client(registry.admin_key)
    response = raw_request(admin, "GET", f"{ROOT}/{escape}")
    assert response.status_code >= 400
    assert b"SQLite format" not in response.content and b"root:" not in response.content
    assert b"key_hash_secret" not in response.content
    listing = admin.get(ROOT, params={"path": escape.replace("%2F", "/").replace("%2E", ".")})
    assert listing.status_code >= 400 or "auth.db" not in listing.text
