"""MLflow's auth store behind a per-worker cache, with the key's scope deciding admin rights.

MLflow's auth app reads the user and the user's grants (``get_user``, ``list_grants``) several
times per request, each an SQL round trip, and they change rarely. We cache both. Correctness
across workers comes from the auth epoch (schema.py): every write through this store bumps it,
and each request reads it once before using the cache, so a grant created on one worker is seen
by the next request anywhere. The TTL bounds staleness for writes that bypass this store.

"An admin key acts as an MLflow admin": MLflow decides admin rights from ``get_user(name).is_admin``
in both its Flask and its FastAPI paths, so the user returned for the requesting principal carries
``is_admin = (key scope == admin)``. Other users are returned as stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from cachetools import TTLCache
from mlflow.server.auth.entities import User

from hokusai_registry.server.context import current_principal, current_request
from hokusai_registry.server.schema import bump_epoch, read_epoch

_WRITE_PREFIXES = (
    "create_", "update_", "delete_", "grant_", "revoke_", "assign_", "unassign_", "add_", "remove_",
    "rename_", "set_",
)  # fmt: skip
_MISSING = object()


class CachedAuthStore:
    def __init__(
        self,
        store: Any,
        ttl: float,
        on_user_deleted: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._on_user_deleted = on_user_deleted
        self._cache: TTLCache[tuple[Any, ...], Any] = TTLCache(
            maxsize=50_000, ttl=max(ttl, 1e-6), timer=clock
        )
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._epoch: int | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name.startswith(_WRITE_PREFIXES) and callable(attribute):
            return self._bumping(attribute)
        return attribute

    def delete_user(self, username: str) -> None:
        """Delete the user and revoke its keys: a user created later under the name gets none of them."""
        self._bumping(self._store.delete_user)(username)
        self._on_user_deleted(username)

    def get_user(self, username: str) -> User:
        user: User = self._cached(("user", username), lambda: self._store.get_user(username))
        principal = current_principal()
        if principal is not None and principal.username == username:
            return User(user.id, user.username, user.password_hash, principal.is_admin)
        return user

    def list_grants(self, user_id: int, workspace: str, resource_types: Collection[str]) -> list[Any]:
        key = ("grants", user_id, workspace, frozenset(resource_types))
        return list(self._cached(key, lambda: self._store.list_grants(user_id, workspace, resource_types)))

    def _cached(self, key: tuple[Any, ...], load: Callable[[], Any]) -> Any:
        # One get() per look-up: an entry can expire between a membership test and a read.
        self._sync_epoch()
        with self._lock:
            value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            return value
        # When an entry expires, every request in flight misses it at once; one loads, the rest wait
        # for its answer instead of repeating the same SQL (misses are rare, so one lock is enough).
        with self._load_lock:
            with self._lock:
                value = self._cache.get(key, _MISSING)
            if value is _MISSING:
                value = load()  # a missing user raises and is not cached
                with self._lock:
                    self._cache[key] = value
        return value

    def _sync_epoch(self) -> None:
        state = current_request.get()
        if state is not None and state.auth_epoch is not None:
            return
        epoch = read_epoch(self._store.engine)
        with self._lock:
            if epoch != self._epoch:
                self._cache.clear()
                self._epoch = epoch
        if state is not None:
            state.auth_epoch = epoch

    def _bumping(self, write: Callable[..., Any]) -> Callable[..., Any]:
        def write_then_bump(*args: Any, **kwargs: Any) -> Any:
            result = write(*args, **kwargs)
            bump_epoch(self._store.engine)
            with self._lock:
                self._cache.clear()
            return result

        return write_then_bump
