"""The key cache and the external key service's scopes, without a server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hokusai_registry.server.authenticator import Authenticator
from hokusai_registry.server.external import scope_from
from hokusai_registry.server.keys import ApiKey, KeyStore


@pytest.mark.parametrize(
    ("scopes", "scope"),
    [([], "read"), (["model:read"], "read"), (["model:write"], "write"), (["mlflow:admin", "x"], "admin")],
)
def test_external_scopes_map_to_ours(scopes: list[str], scope: str) -> None:
    assert scope_from(scopes) == scope


def test_concurrent_misses_of_one_key_read_the_database_once(tmp_path: Path) -> None:
    """When a key's cache entry expires under load, one request reads the key table; the rest wait."""
    keys = KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32)
    new = keys.create("alice", scope="write")
    reads: list[str] = []
    find_by_hash = keys.find_by_hash

    def counting_find_by_hash(digest: str) -> ApiKey | None:
        reads.append(digest)
        time.sleep(0.05)  # a slow database: every other request arrives while this read runs
        return find_by_hash(digest)

    keys.find_by_hash = counting_find_by_hash  # type: ignore[method-assign]
    authenticator = Authenticator(keys, ttl=5)
    digest = authenticator.digest(new.key)
    with ThreadPoolExecutor(max_workers=16) as pool:
        principals = list(pool.map(lambda _: authenticator.resolve(new.key, digest), range(16)))
    assert {p.key_id for p in principals} == {new.record.id}
    assert reads == [digest]
    assert authenticator.from_cache(digest) == principals[0]
