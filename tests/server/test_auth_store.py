"""The per-worker cache in front of MLflow's auth store, against a real MLflow auth database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from hokusai_registry.server.auth_store import CachedAuthStore
from hokusai_registry.server.context import Principal, RequestState, current_request
from hokusai_registry.server.schema import create_tables

TTL = 2.0


class CountingStore:
    """MLflow's real auth store, counting the reads that reach it."""

    def __init__(self, store: SqlAlchemyStore) -> None:
        self.store = store
        self.reads: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        if name in ("get_user", "list_grants"):
            self.reads[name] += 1
        return getattr(self.store, name)


@pytest.fixture
def mlflow_store(tmp_path: Path) -> SqlAlchemyStore:
    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    create_tables(store.engine)
    store.create_user("alice", "a-long-enough-password-1A!")
    return store


@contextmanager
def request_as(username: str, decides_only: bool = False) -> Iterator[RequestState]:
    state = RequestState(Principal("k_1", username, "write"), read_only=True, decides_only=decides_only)
    token = current_request.set(state)
    try:
        yield state
    finally:
        current_request.reset(token)


def test_hits_within_the_ttl_and_one_reload_after_it(mlflow_store: SqlAlchemyStore) -> None:
    now = [0.0]
    counting = CountingStore(mlflow_store)
    store = CachedAuthStore(counting, TTL, on_user_deleted=lambda _: None, clock=lambda: now[0])
    for at in (0.0, 0.5, 1.9):  # three requests inside one TTL: one read of each kind
        now[0] = at
        with request_as("alice"):
            user = store.get_user("alice")
            assert store.get_user("alice") == user
            assert store.list_grants(user.id, "default", {"experiment"}) == []
    assert counting.reads == {"get_user": 1, "list_grants": 1}

    now[0] = TTL + 0.1
    with request_as("alice"):
        store.list_grants(store.get_user("alice").id, "default", {"experiment"})
    assert counting.reads == {"get_user": 2, "list_grants": 2}


def test_an_entry_is_never_served_past_its_ttl_between_sweeps(mlflow_store: SqlAlchemyStore) -> None:
    """Expired entries are swept once a TTL; one loaded just after a sweep is not served until the next
    (up to two TTLs old): a write that bypasses the store is seen within one TTL."""
    now = [0.0]
    counting = CountingStore(mlflow_store)
    store = CachedAuthStore(counting, TTL, on_user_deleted=lambda _: None, clock=lambda: now[0])
    with request_as("bob"), pytest.raises(MlflowException):  # the sweep's clock starts here
        store.get_user("bob")
    now[0] = TTL - 0.1
    with request_as("alice"):
        store.list_grants(store.get_user("alice").id, "default", {"experiment"})
    now[0] = TTL + 0.1  # the second sweep: alice's entries are 0.2 s old and stay
    with request_as("alice"):
        store.list_grants(store.get_user("alice").id, "default", {"experiment"})
    assert counting.reads == {"get_user": 2, "list_grants": 1}
    now[0] = 2 * TTL  # expired, not yet swept (the next sweep is at 2 TTL + 0.1)
    with request_as("alice"):
        store.list_grants(store.get_user("alice").id, "default", {"experiment"})
    assert counting.reads == {"get_user": 3, "list_grants": 2}


class SlowGrants(CountingStore):
    """Grant loads that take a second of the store's clock, as an owner's 100,000 grants do."""

    def __init__(self, store: SqlAlchemyStore, now: list[float]) -> None:
        super().__init__(store)
        self.now = now

    def list_grants(self, *args: Any) -> Any:
        self.reads["list_grants"] += 1
        self.now[0] += 1.0
        return self.store.list_grants(*args)


def test_a_slow_load_lives_ten_times_its_cost_but_fast_entries_still_expire(
    mlflow_store: SqlAlchemyStore,
) -> None:
    """A load that takes half the TTL would otherwise be repeated on nearly every request."""
    now = [0.0]
    slow = SlowGrants(mlflow_store, now)
    store = CachedAuthStore(slow, TTL, on_user_deleted=lambda _: None, clock=lambda: now[0])
    with request_as("alice"):
        alice = store.get_user("alice")
        store.list_grants(alice.id, "default", {"experiment"})  # loaded 0.0 -> 1.0: lives to 11.0
    for at in (3.0, 6.0, 10.5):
        now[0] = at
        with request_as("alice"):
            store.list_grants(store.get_user("alice").id, "default", {"experiment"})
    assert slow.reads["list_grants"] == 1
    assert slow.reads["get_user"] == 4  # an instant load keeps the TTL: reloaded at each of 3.0, 6.0, 10.5

    now[0] = 13.0
    with request_as("alice"):
        store.list_grants(store.get_user("alice").id, "default", {"experiment"})
    assert slow.reads["list_grants"] == 2


def test_a_slow_entry_is_still_dropped_by_its_users_write(mlflow_store: SqlAlchemyStore) -> None:
    now = [0.0]
    store = CachedAuthStore(
        SlowGrants(mlflow_store, now), TTL, on_user_deleted=lambda _: None, clock=lambda: now[0]
    )
    with request_as("alice"):
        alice = store.get_user("alice")
        assert store.list_grants(alice.id, "default", {"experiment"}) == []
    CachedAuthStore(mlflow_store, 60, on_user_deleted=lambda _: None).grant_user_permission(
        "alice", "experiment", "7", "MANAGE"
    )
    now[0] = 1.5
    with request_as("alice"):
        grants = store.list_grants(store.get_user("alice").id, "default", {"experiment"})
    assert [grant.resource_pattern for grant in grants] == ["7"]


def granted_elsewhere(mlflow_store: SqlAlchemyStore) -> tuple[CachedAuthStore, Any]:
    """This worker's cache, which read alice's (no) grants, after another worker granted her one."""
    here = CachedAuthStore(mlflow_store, 60, on_user_deleted=lambda _: None)
    elsewhere = CachedAuthStore(mlflow_store, 60, on_user_deleted=lambda _: None)
    with request_as("alice"):
        alice = here.get_user("alice")
        assert here.list_grants(alice.id, "default", {"experiment"}) == []
    elsewhere.grant_user_permission("alice", "experiment", "7", "MANAGE")
    return here, alice


def test_a_write_on_another_worker_is_seen_by_the_next_request(mlflow_store: SqlAlchemyStore) -> None:
    """Create-then-use across workers: the epoch a write bumps empties every worker's cache."""
    here, alice = granted_elsewhere(mlflow_store)
    with request_as("alice"):
        grants = here.list_grants(alice.id, "default", {"experiment"})
    assert [(grant.resource_type, grant.resource_pattern) for grant in grants] == [("experiment", "7")]


def test_a_grant_for_one_user_leaves_the_others_cached(mlflow_store: SqlAlchemyStore) -> None:
    """The MANAGE grant a new model gives its creator empties only the creator's cache entries."""
    mlflow_store.create_user("bob", "a-long-enough-password-1B!")
    counting = CountingStore(mlflow_store)
    here = CachedAuthStore(counting, 60, on_user_deleted=lambda _: None)
    elsewhere = CachedAuthStore(mlflow_store, 60, on_user_deleted=lambda _: None)
    for user in ("alice", "bob"):
        with request_as(user):
            here.list_grants(here.get_user(user).id, "default", {"registered_model"})
    assert counting.reads == {"get_user": 2, "list_grants": 2}

    elsewhere.create_registered_model_permission("alices-model", "alice", "MANAGE")

    with request_as("bob"):  # bob's entries survive: not one read
        here.list_grants(here.get_user("bob").id, "default", {"registered_model"})
    assert counting.reads == {"get_user": 2, "list_grants": 2}
    with request_as("alice"):  # alice's were dropped: her next request sees the grant
        grants = here.list_grants(here.get_user("alice").id, "default", {"registered_model"})
    assert ("registered_model", "alices-model") in {(g.resource_type, g.resource_pattern) for g in grants}
    assert counting.reads == {"get_user": 3, "list_grants": 3}

    elsewhere.create_role("reviewers", "default", "")  # not one user's: everyone's entries go
    with request_as("bob"):
        here.list_grants(here.get_user("bob").id, "default", {"registered_model"})
    assert counting.reads == {"get_user": 4, "list_grants": 4}


def test_a_users_entries_cached_for_someone_else_are_not_trusted_by_that_user(
    mlflow_store: SqlAlchemyStore,
) -> None:
    """An admin's request caches alice's grants; alice then gets a grant on another worker. Her own
    next request must see it: entries loaded under an epoch of hers never seen are dropped."""
    mlflow_store.create_user("admin", "a-long-enough-password-1C!")
    here = CachedAuthStore(mlflow_store, 60, on_user_deleted=lambda _: None)
    elsewhere = CachedAuthStore(mlflow_store, 60, on_user_deleted=lambda _: None)
    with request_as("admin"):
        assert here.list_grants(here.get_user("alice").id, "default", {"experiment"}) == []
    elsewhere.grant_user_permission("alice", "experiment", "9", "READ")
    with request_as("alice"):
        grants = here.list_grants(here.get_user("alice").id, "default", {"experiment"})
    assert [(grant.resource_type, grant.resource_pattern) for grant in grants] == [("experiment", "9")]


def counting_epoch_reads(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The usernames each auth-epoch read was made for, in order."""
    from hokusai_registry.server import auth_store

    reads: list[str | None] = []
    real = auth_store.read_epochs

    def counted(engine: Any, username: str | None) -> tuple[int, int]:
        reads.append(username)
        return real(engine, username)

    monkeypatch.setattr(auth_store, "read_epochs", counted)
    return reads


def test_a_deciding_request_trusts_its_callers_epochs_read_within_the_interval(
    mlflow_store: SqlAlchemyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow_store.create_user("bob", "a-long-enough-password-1B!")
    reads = counting_epoch_reads(monkeypatch)
    now = [0.0]
    store = CachedAuthStore(mlflow_store, TTL, on_user_deleted=lambda _: None, clock=lambda: now[0])
    for at, user, deciding, read in [
        (0.0, "alice", True, True),  # nothing read for alice yet
        (0.5, "alice", True, False),  # read 0.5 s ago
        (0.6, "alice", False, True),  # not a decision alone (a search): always read
        (0.7, "bob", True, True),  # alice's read says nothing about bob's epoch
        (1.5, "alice", True, False),  # 0.9 s after her last read
        (1.6, "alice", True, True),  # 1.0 s: read again
    ]:
        now[0] = at
        before = len(reads)
        with request_as(user, decides_only=deciding) as state:
            store.get_user(user)
            store.get_user(user)  # once per request either way
        assert (len(reads) - before, state.epochs_skipped) == (int(read), not read), (at, user)


def test_a_cache_ttl_of_zero_reads_the_epochs_on_every_request(
    mlflow_store: SqlAlchemyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = counting_epoch_reads(monkeypatch)
    store = CachedAuthStore(mlflow_store, 0, on_user_deleted=lambda _: None, clock=lambda: 0.0)
    for _ in range(3):
        with request_as("alice", decides_only=True):
            store.get_user("alice")
    assert reads == ["alice"] * 3


def test_a_grant_made_elsewhere_is_seen_once_the_epochs_are_refreshed(mlflow_store: SqlAlchemyStore) -> None:
    """A deciding request may use grants read a moment ago; before a refusal the epochs are read
    again (decisions.py), and then the grant made on another worker is there."""
    here, alice = granted_elsewhere(mlflow_store)
    with request_as("alice", decides_only=True) as state:
        assert here.list_grants(alice.id, "default", {"experiment"}) == []  # trusted: within the second
        assert state.epochs_skipped
        here.refresh_epochs()
        grants = here.list_grants(alice.id, "default", {"experiment"})
        assert not state.epochs_skipped and state.auth_epoch is not None
    assert [(grant.resource_type, grant.resource_pattern) for grant in grants] == [("experiment", "7")]
