"""The per-worker cache in front of MLflow's auth store, against a real MLflow auth database."""

from __future__ import annotations

import itertools
from pathlib import Path

from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from hokusai_registry.server.auth_store import CachedAuthStore
from hokusai_registry.server.context import Principal, RequestState, current_request


def test_an_entry_expiring_mid_lookup_is_reloaded_not_an_error(tmp_path: Path) -> None:
    """TTL entries expire between any two clock reads; a lookup must never see "present" then fail.

    The clock moves half the TTL on every read, so some entry expires between a membership test
    and the read after it: that used to raise KeyError, a 500 seen once in 30,000 benchmark requests.
    """
    mlflow_store = SqlAlchemyStore()
    mlflow_store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    mlflow_store.create_user("alice", "a-long-enough-password-1A!")
    ticks = itertools.count()
    store = CachedAuthStore(
        mlflow_store, ttl=2.0, on_user_deleted=lambda _: None, clock=lambda: float(next(ticks))
    )
    token = current_request.set(
        RequestState(Principal("k_1", "alice", "write"), read_only=True, auth_epoch=0)
    )
    try:
        for _ in range(200):
            assert store.get_user("alice").username == "alice"
            assert store.list_grants(store.get_user("alice").id, "default", {"experiment"}) == []
    finally:
        current_request.reset(token)
