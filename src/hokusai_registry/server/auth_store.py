"""MLflow's auth store behind a per-worker cache, with the key's scope deciding admin rights.

MLflow's auth app reads the user and the user's grants (``get_user``, ``list_grants``) several
times per request, each an SQL round trip, and they change rarely. We cache both. Correctness
across workers comes from the auth epoch (schema.py): every write through this store bumps it
(``mlflow_adapter.AUTH_STORE_WRITES`` lists MLflow's writes), and each request reads it once before
using the cache, so a grant created on one worker is seen by the next request anywhere. The TTL
bounds staleness for writes that bypass this store.

"An admin key acts as an MLflow admin": MLflow decides admin rights from ``get_user(name).is_admin``
in both its Flask and its FastAPI paths, so the user returned for the requesting principal carries
``is_admin = (key scope == admin)``. Other users are returned as stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from mlflow.server.auth.entities import User

from hokusai_registry.server.context import current_principal, current_request
from hokusai_registry.server.mlflow_adapter import Delegating, is_auth_store_write
from hokusai_registry.server.schema import bump_epoch, read_epoch

_MISSING = object()
MAX_ENTRIES = 50_000


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
        # A plain dict, emptied as a whole when the epoch moves or the TTL has passed since it was
        # last emptied: a hit is one dict read (MLflow asks about eight times per request), and no
        # entry is older than the TTL. The generation guards against a load that began before an
        # emptying writing its older answer into the new cache.
        self._entries: dict[tuple[Any, ...], Any] = {}
        self._generation = 0
        self._fresh_until = float("-inf")
        self._epoch: int | None = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = super().__getattr__(name)
        if is_auth_store_write(name) and callable(getattr(type(self.wrapped), name, None)):
            return self._bumping(attribute)
        return attribute

    def delete_user(self, username: str) -> None:
        """Delete the user and revoke its keys: a user created later under the name gets none of them."""
        self._bumping(self.wrapped.delete_user)(username)
        self._on_user_deleted(username)

    def get_user(self, username: str) -> User:
        user: User = self._cached(("user", username), lambda: self.wrapped.get_user(username))
        principal = current_principal()
        if principal is not None and principal.username == username and user.is_admin != principal.is_admin:
            return User(user.id, user.username, user.password_hash, principal.is_admin)
        return user

    def list_grants(self, user_id: int, workspace: str, resource_types: Collection[str]) -> list[Any]:
        key = ("grants", user_id, workspace, frozenset(resource_types))
        return list(self._cached(key, lambda: self.wrapped.list_grants(user_id, workspace, resource_types)))

    def _cached(self, key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
        self._sync_epoch()
        value = self._entries.get(key, _MISSING)
        if value is not _MISSING:
            return value
        # When the cache empties, every request in flight misses at once; one loads, the rest wait
        # for its answer instead of repeating the same SQL (misses are rare, so one lock is enough).
        with self._load_lock:
            value = self._entries.get(key, _MISSING)
            if value is _MISSING:
                generation = self._generation
                value = load()  # a missing user raises and is not cached
                with self._lock:
                    if generation == self._generation and len(self._entries) < MAX_ENTRIES:
                        self._entries[key] = value
        return value

    def _sync_epoch(self) -> None:
        """Once per request: empty the cache if another writer moved the epoch or the TTL ran out."""
        state = current_request.get()
        if state is not None and state.auth_epoch is not None:
            return
        epoch = read_epoch(self.wrapped.engine)
        now = self._clock()
        if epoch != self._epoch or now >= self._fresh_until:
            with self._lock:
                self._empty()
                self._epoch = epoch
                self._fresh_until = now + self._ttl
        if state is not None:
            state.auth_epoch = epoch

    def _empty(self) -> None:
        self._entries = {}
        self._generation += 1

    def _bumping(self, write: Callable[..., Any]) -> Callable[..., Any]:
        def write_then_bump(*args: Any, **kwargs: Any) -> Any:
            result = write(*args, **kwargs)
            bump_epoch(self.wrapped.engine)
            with self._lock:
                self._empty()
            return result

        return write_then_bump
