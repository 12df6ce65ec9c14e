"""MLflow's auth store behind a short per-worker cache, with the key's scope deciding admin rights.

MLflow's auth app reads the user on nearly every request (``sender_is_admin``, permission
resolution); each read is an SQL round trip. Users change rarely, so a cache with a TTL inside the
revocation bound removes that cost. Only found users are cached, and writes through this worker
drop the entry at once.

"An admin key acts as an MLflow admin": MLflow decides admin rights from ``get_user(name).is_admin``
in both its Flask and its FastAPI paths, so the user returned for the requesting principal carries
``is_admin = (key scope == admin)``. Other users are returned as stored.
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import TTLCache
from mlflow.server.auth.entities import User

from hokusai_registry.server.context import current_principal


class CachedAuthStore:
    def __init__(self, store: Any, ttl: float) -> None:
        self._store = store
        self._users: TTLCache[str, User] = TTLCache(maxsize=10_000, ttl=max(ttl, 1e-6))
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_user(self, username: str) -> User:
        with self._lock:
            user = self._users.get(username)
        if user is None:
            user = self._store.get_user(username)
            with self._lock:
                self._users[username] = user
        principal = current_principal.get()
        if principal is not None and principal.username == username:
            return User(user.id, user.username, user.password_hash, principal.is_admin)
        return user

    def forget_user(self, username: str) -> None:
        with self._lock:
            self._users.pop(username, None)

    def update_user(self, username: str, *args: Any, **kwargs: Any) -> Any:
        self.forget_user(username)
        return self._store.update_user(username, *args, **kwargs)

    def delete_user(self, username: str) -> Any:
        self.forget_user(username)
        return self._store.delete_user(username)
