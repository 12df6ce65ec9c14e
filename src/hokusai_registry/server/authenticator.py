"""From a presented key to a Principal, with a per-worker cache in front of the key table.

A hit is one dict read, no lock; a miss reads the key table once, however many requests for the same
key are in flight (a key of the external service is asked for by each of them: that call is not shared).
A miss while the database cannot be reached is a 503 with Retry-After (outages.py), never a 401 or a 500.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

from hokusai_registry.server import outages
from hokusai_registry.server.context import Principal
from hokusai_registry.server.credentials import Refusal, unauthenticated
from hokusai_registry.server.external import ExternalKeyService, KeyServiceDown
from hokusai_registry.server.keys import ApiKey, KeyStore, utcnow
from hokusai_registry.server.metrics import AUTH_CACHE

CACHE_HITS, CACHE_MISSES = AUTH_CACHE.labels("hit"), AUTH_CACHE.labels("miss")
TOUCH_INTERVAL = timedelta(minutes=1)  # last_used_at is this fresh (finer under a short unused limit)


class Authenticator:
    """Turns a presented key into a Principal; look-ups are cached per worker for ``ttl`` seconds.

    Only successes are cached, so a revoked key stops working within ``ttl`` and a refusal is always
    re-checked against the database.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, keys: KeyStore, ttl: float, external: ExternalKeyService | None = None) -> None:
        self._keys = keys
        self._external = external
        self._ttl = ttl
        # digest -> (fresh until, record, principal); one dict read per hit, no lock needed.
        self._cache: dict[str, tuple[float, ApiKey, Principal]] = {}
        self._load_lock = threading.Lock()

    def digest(self, key: str) -> str:
        return self._keys.digest(key)

    def from_cache(self, digest: str) -> Principal | None:
        """The principal if every fact about the key is cached and fresh, else None (ask `resolve`)."""
        entry = self._cache.get(digest)
        if entry is not None and entry[0] > time.monotonic():
            self._check(entry[1])
            CACHE_HITS.inc()
            return entry[2]
        principal = self._external.cached(digest) if self._external else None
        (CACHE_HITS if principal else CACHE_MISSES).inc()
        return principal

    def resolve(self, key: str, digest: str) -> Principal:
        """The principal for a key, from the database or the external service; raises Refusal (a 503
        with Retry-After when the database cannot be reached)."""
        try:
            record = self._load(digest)
            if record is None:
                return self._resolve_external(key, digest)  # outside the lock: it may wait for the network
            return self._check(record)
        except Refusal:
            raise
        except Exception as exc:
            what = outages.dependency(exc)
            if what is None:
                raise
            outages.note(what, exc, "authenticating a key")
            raise outages.refusal(what, exc) from exc

    def _load(self, digest: str) -> ApiKey | None:
        # When a key's entry expires, all its requests in flight miss at once: the first reads the
        # database, the others wait and take its answer (a local read takes about a millisecond).
        with self._load_lock:
            entry = self._cache.get(digest)
            if entry is not None and entry[0] > time.monotonic():
                return entry[1]
            record = self._keys.find_by_hash(digest)
            if record is None:
                return None
            principal = self._check(record)  # before the touch: a long-unused key stays unused
            if not self._keys.users.has_user(record.username):
                raise unauthenticated(f"the user {record.username!r} of key {record.id} no longer exists")
            record = self._touch(record)
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache = {d: e for d, e in self._cache.items() if e[0] > time.monotonic()}
            if len(self._cache) < self.MAX_ENTRIES:
                self._cache[digest] = (time.monotonic() + self._ttl, record, principal)
            return record

    def _check(self, record: ApiKey) -> Principal:
        now = utcnow()
        if record.revoked_at is not None:
            raise unauthenticated(
                f"API key {record.id} was revoked at {record.revoked_at.isoformat()}", "revoked"
            )
        if record.is_expired(now):
            assert record.expires_at is not None
            if record.replaced_by is not None:
                raise unauthenticated(
                    f"API key {record.id} was replaced by {record.replaced_by} in a rotation; its grace "
                    f"period ended at {record.expires_at.isoformat()}: use the new key",
                    "expired",
                )
            raise unauthenticated(
                f"API key {record.id} expired at {record.expires_at.isoformat()}", "expired"
            )
        unused_days = self._keys.limits.expire_unused_days
        if record.is_unused_for(unused_days, now):
            raise unauthenticated(
                f"API key {record.id} was not used for {unused_days:g} days and has expired; "
                "an admin can create a new one",
                "expired",
            )
        return Principal(key_id=record.id, username=record.username, scope=record.scope)

    def _resolve_external(self, key: str, digest: str) -> Principal:
        if self._external is None:
            raise unauthenticated("unknown API key")
        try:
            principal = self._external.validate(key, digest)
        except KeyServiceDown as exc:
            raise Refusal(
                503, f"cannot validate the key: {exc}; retry later", {"Retry-After": "5"}, "key_service_down"
            ) from None
        if principal is None:
            raise unauthenticated("API key rejected by the key service (unknown, revoked or expired)")
        self._keys.ensure_user(principal.username)
        return principal

    def _touch(self, record: ApiKey) -> ApiKey:
        now, unused_days = utcnow(), self._keys.limits.expire_unused_days
        interval = min(TOUCH_INTERVAL, timedelta(days=unused_days) / 10) if unused_days else TOUCH_INTERVAL
        if record.last_used_at is None or now - record.last_used_at > interval:
            self._keys.touch(record.id, now)
            return replace(record, last_used_at=now)
        return record
