"""Validation of keys issued by an existing auth service.

Contract: ``POST {auth_url}/api/v1/keys/validate`` with the key as ``Authorization: Bearer`` and the
JSON body ``{"service_id": ...}``. 200 with ``{"user_id", "key_id", "scopes": [...]}`` means valid;
401/403/404 mean invalid; anything else, or no answer, means the service is down, and the request
is refused with 503 + Retry-After, never let through. Only positive answers are cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import httpx
from cachetools import TTLCache

from hokusai_registry.server.context import Principal
from hokusai_registry.server.metrics import KEY_SERVICE_ERRORS, KEY_SERVICE_SECONDS

ADMIN_SCOPES = frozenset({"admin", "mlflow:admin"})
WRITE_SCOPES = frozenset({"write", "mlflow:write", "model:write", "mlflow:access", "full_access"})


class KeyServiceDown(RuntimeError):
    pass


def scope_from(scopes: Iterable[str]) -> str:
    granted = set(scopes)
    if granted & ADMIN_SCOPES:
        return "admin"
    return "write" if granted & WRITE_SCOPES else "read"


class ExternalKeyService:
    def __init__(self, url: str, service_id: str, cache_ttl: float, timeout: float) -> None:
        self._endpoint = url.rstrip("/") + "/api/v1/keys/validate"
        self._service_id = service_id
        self._client = httpx.Client(timeout=timeout)
        self._cache: TTLCache[str, Principal] = TTLCache(maxsize=10_000, ttl=cache_ttl)
        self._lock = threading.Lock()

    def cached(self, digest: str) -> Principal | None:
        with self._lock:
            return self._cache.get(digest)

    def validate(self, key: str, digest: str) -> Principal | None:
        """The principal for a valid key, None for an invalid one; raises KeyServiceDown."""
        started = time.perf_counter()
        try:
            response = self._client.post(
                self._endpoint,
                headers={"Authorization": f"Bearer {key}"},
                json={"service_id": self._service_id},
            )
        except httpx.HTTPError as exc:
            KEY_SERVICE_ERRORS.inc()
            raise KeyServiceDown(f"key service unreachable: {type(exc).__name__}") from None
        finally:
            KEY_SERVICE_SECONDS.observe(time.perf_counter() - started)
        if response.status_code in (401, 403, 404):
            return None
        if response.status_code != 200:
            KEY_SERVICE_ERRORS.inc()
            raise KeyServiceDown(f"key service answered {response.status_code}")
        try:
            body = response.json()
            principal = Principal(
                key_id="ext:" + str(body.get("key_id") or digest[:12]),
                username=str(body["user_id"]),
                scope=scope_from(body.get("scopes") or []),
            )
        except (ValueError, KeyError, TypeError):
            KEY_SERVICE_ERRORS.inc()
            raise KeyServiceDown("key service answered 200 without a user_id") from None
        with self._lock:
            self._cache[digest] = principal
        return principal
