"""MLflow's auth store behind a per-worker cache, with the key's scope deciding admin rights.

MLflow's auth app reads the user and the user's grants (``get_user``, ``list_grants``) several
times per request, each an SQL round trip, and they change rarely. We cache both. Correctness
across workers comes from the auth epochs (schema.py): every write through this store bumps one
(``mlflow_adapter.AUTH_STORE_WRITES`` lists MLflow's writes), and each request reads the global
epoch and its caller's before using the cache, unless it only decides allow or deny and they were
read for its caller less than ``EPOCH_INTERVAL`` ago (decisions.py; :meth:`refresh_epochs` before a
refusal). A write that changes one user's access (the MANAGE
grant on a model they just created) moves only that user's epoch, so other users' cached data
stays; any other write moves the global one, which empties the whole cache. So a grant created on
one worker is seen by its user's next request anywhere. The TTL bounds staleness for writes that
bypass this store, and for another user's data read in a request (an admin reading a user). An
entry that was slow to load (an owner's 100,000 grants take about a second) lives ten times its
load time if that is longer, so a worker never spends more than a tenth of its time reloading it.

"An admin key acts as an MLflow admin": MLflow decides admin rights from ``get_user(name).is_admin``
in both its Flask and its FastAPI paths, so the user returned for the requesting principal carries
``is_admin = (key scope == admin)``. Other users are returned as stored.

A database that cannot be reached while reading or bumping the epochs raises the ``MlflowException``
MLflow's own store raises then (``TEMPORARILY_UNAVAILABLE``, outages.py), so every caller, MLflow's
Flask handlers and its FastAPI permission check alike, answers 503 as it does for MLflow's tables.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from mlflow.server.auth.entities import User

from hokusai_registry.server import outages
from hokusai_registry.server.context import current_principal, current_request
from hokusai_registry.server.database import single_statement_engine
from hokusai_registry.server.mlflow_adapter import (
    Delegating,
    GrantList,
    affected_user,
    is_auth_store_write,
)
from hokusai_registry.server.schema import bump_epoch, bump_user_epoch, read_epochs

_MISSING = object()
MAX_ENTRIES = 50_000
LOAD_STRIPES = 64
LOAD_COST_FACTOR = 10  # an entry lives at least this many times as long as it took to load
# Seconds a decides-only request trusts its caller's last epoch read, and a check a row (recent_rows.py).
EPOCH_INTERVAL = 1.0
Key = tuple[Any, ...]


class CachedAuthStore(Delegating):
    def __init__(
        self,
        store: Any,
        ttl: float,
        on_user_deleted: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store)
        self._on_user_deleted = on_user_deleted
        self._ttl = ttl
        self._clock = clock
        # A plain dict of (value, expiry), emptied as a whole when the global epoch moves, per user
        # when that user's epoch moves, and swept of expired entries once per TTL: a hit is one dict
        # read (MLflow asks about eight times per request). The generations guard against a load
        # that began before an emptying writing its older answer back.
        self._entries: dict[Key, tuple[Any, float]] = {}
        self._keys_of: dict[str, set[Key]] = {}  # username -> its entries
        self._name_of: dict[int, str] = {}  # user id -> username, learnt from get_user
        self._user_epochs: dict[str, int] = {}  # the epoch each user's entries were loaded under
        self._generation = 0
        self._user_generations: dict[str, int] = {}
        self._fresh_until = float("-inf")
        self._epoch: int | None = None
        # username -> when this worker last read the epochs for them; ``decides_only`` requests
        # trust a read this recent. Never longer than the TTL, the bound every other staleness has.
        self._epochs_read_at: dict[str, float] = {}
        self._epoch_interval = min(EPOCH_INTERVAL, ttl)
        self._lock = threading.Lock()
        # One load lock per stripe of keys: a slow load (an owner's 100,000 grants) holds up only the
        # requests that wait for the same answer, not every other user's cache miss.
        self._load_locks = tuple(threading.Lock() for _ in range(LOAD_STRIPES))
        self._epochs_engine: sa.Engine | None = None  # the store has its engine once MLflow inits it

    def __getattr__(self, name: str) -> Any:
        attribute = super().__getattr__(name)
        if is_auth_store_write(name) and callable(getattr(type(self.wrapped), name, None)):
            return self._bumping(name, attribute)
        return attribute

    def delete_user(self, username: str) -> None:
        """Delete the user and revoke its keys: a user created later under the name gets none of them."""
        self._bumping("delete_user", self.wrapped.delete_user)(username)
        self._on_user_deleted(username)

    def get_user(self, username: str) -> User:
        user: User = self._cached(("user", username), username, lambda: self.wrapped.get_user(username))
        self._name_of[user.id] = username
        principal = current_principal()
        if principal is not None and principal.username == username and user.is_admin != principal.is_admin:
            return User(user.id, user.username, user.password_hash, principal.is_admin)
        return user

    def list_grants(self, user_id: int, workspace: str, resource_types: Collection[str]) -> list[Any]:
        """The cache entry itself, read-only, with the index it built once (mlflow_adapter.GrantList)."""
        key = ("grants", user_id, workspace, frozenset(resource_types))
        owner = self._name_of.get(user_id)
        entry: GrantList = self._cached(
            key,
            owner,
            lambda: GrantList.indexed(self.wrapped.list_grants(user_id, workspace, resource_types)),
        )
        return entry

    def _cached(self, key: Key, username: str | None, load: Callable[[], Any]) -> Any:
        self._sync_epochs()
        hit = self._entries.get(key)
        if hit is not None and hit[1] > self._clock():  # the sweep alone would let it live 2 TTLs
            return hit[0]
        # When the cache empties, every request in flight misses at once; one loads each key, the
        # rest wait for its answer instead of repeating the same SQL.
        with self._load_locks[hash(key) % LOAD_STRIPES]:
            hit = self._entries.get(key)
            if hit is not None and hit[1] > self._clock():
                return hit[0]
            generations = self._generation, self._user_generations.get(username or "", 0)
            started = self._clock()
            with _unavailable_when_down("reading users and grants"):
                value = load()  # a missing user raises and is not cached
            loaded = self._clock()
            lifetime = max(self._ttl, LOAD_COST_FACTOR * (loaded - started)) if self._ttl > 0 else 0.0
            with self._lock:
                unchanged = generations == (
                    self._generation,
                    self._user_generations.get(username or "", 0),
                )
                if unchanged and username is not None and len(self._entries) < MAX_ENTRIES:
                    self._entries[key] = value, loaded + lifetime
                    self._keys_of.setdefault(username, set()).add(key)
        return value

    def refresh_epochs(self) -> None:
        """Read the epochs now, even if this request trusted recent ones: MLflow is about to refuse it,
        and a refusal is never decided on grants that may be a second old (decisions.py)."""
        state = current_request.get()
        if state is not None:
            state.auth_epoch, state.epochs_skipped = None, False
        self._sync_epochs(may_skip=False)

    def _sync_epochs(self, may_skip: bool = True) -> None:
        """Once per request: empty the cache if the global epoch moved, sweep expired entries once
        per TTL, and drop the caller's entries if their own epoch moved. A request that only decides
        allow or deny (``decides_only``) trusts the epochs read for its caller in the last
        ``epoch_interval`` instead."""
        state = current_request.get()
        if state is not None and (state.auth_epoch is not None or state.epochs_skipped):
            return
        username = state.principal.username if state is not None else None
        started = self._clock()
        if may_skip and state is not None and state.decides_only and username is not None:
            read_at = self._epochs_read_at.get(username)
            if read_at is not None and started - read_at < self._epoch_interval:
                state.epochs_skipped = True
                return
        with _unavailable_when_down("reading the auth epochs"):
            epoch, user_epoch = read_epochs(self._epochs(), username)
        now = self._clock()
        with self._lock:
            if epoch != self._epoch:
                self._empty()
                self._epoch = epoch
            if now >= self._fresh_until:
                self._sweep(now)
                self._fresh_until = now + self._ttl
            # Entries cached under an older epoch of the caller's, or under one never seen (loaded
            # while serving someone else, an admin reading this user), are dropped.
            if username is not None and self._user_epochs.get(username) != user_epoch:
                self._forget(username)
                self._user_epochs[username] = user_epoch
            if username is not None:
                self._epochs_read_at[username] = started  # what was read is at least this fresh
        if state is not None:
            state.auth_epoch = epoch

    def _epochs(self) -> sa.Engine:
        if self._epochs_engine is None:
            with self._lock:
                if self._epochs_engine is None:
                    self._epochs_engine = single_statement_engine(self.wrapped.engine, "epochs")
        return self._epochs_engine

    def _empty(self) -> None:
        self._entries, self._keys_of, self._user_epochs, self._name_of = {}, {}, {}, {}
        self._generation += 1

    def _sweep(self, now: float) -> None:
        self._entries = {key: hit for key, hit in self._entries.items() if hit[1] > now}
        self._epochs_read_at = {
            name: at for name, at in self._epochs_read_at.items() if now - at < self._epoch_interval
        }
        self._keys_of = {
            name: live for name, keys in self._keys_of.items() if (live := keys & self._entries.keys())
        }

    def _forget(self, username: str) -> None:
        for key in self._keys_of.pop(username, ()):
            self._entries.pop(key, None)
        self._user_epochs.pop(username, None)
        self._user_generations[username] = self._user_generations.get(username, 0) + 1

    def _bumping(self, name: str, write: Callable[..., Any]) -> Callable[..., Any]:
        def write_then_bump(*args: Any, **kwargs: Any) -> Any:
            result = write(*args, **kwargs)
            username = affected_user(name, args, kwargs)
            try:
                with _unavailable_when_down("bumping an auth epoch"):
                    if username is None:
                        bump_epoch(self.wrapped.engine)
                    else:
                        bump_user_epoch(self.wrapped.engine, username)
            finally:  # this worker forgets what the write changed, even if others could not be told
                with self._lock:
                    self._empty() if username is None else self._forget(username)
            return result

        return write_then_bump


@contextmanager
def _unavailable_when_down(doing: str) -> Iterator[None]:
    """Re-raise a database outage as MLflow's ``TEMPORARILY_UNAVAILABLE`` (a 503 wherever it lands)."""
    try:
        yield
    except Exception as exc:
        what = outages.dependency(exc)
        if what is None:
            raise
        outages.note(what, exc, doing)
        if getattr(exc, "error_code", None) == outages.ERROR_CODE:
            raise  # MLflow's own store said so already
        raise outages.unavailable(what, exc) from exc
