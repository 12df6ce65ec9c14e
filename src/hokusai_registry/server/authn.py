"""Authentication by API key, and the ``authorization_function`` hook MLflow's auth app calls.

Refusals, by status (the body is always ``{"error_code", "message"}``)::

    Refusal
    ├── 401 UNAUTHENTICATED      no key, malformed, unknown, revoked, expired, or its user was deleted
    ├── 403 PERMISSION_DENIED    a ``read`` key on a request that changes data
    └── 503 TEMPORARILY_UNAVAILABLE  the external key service cannot be asked (with Retry-After)

403s for missing per-resource permission come from MLflow's own auth app, after us.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from flask import Response, g, request
from mlflow.exceptions import MlflowException
from werkzeug.datastructures import Authorization

from hokusai_registry.server import policy
from hokusai_registry.server.context import Principal, current_principal
from hokusai_registry.server.external import ExternalKeyService, KeyServiceDown
from hokusai_registry.server.keys import ApiKey, KeyStore, looks_like_key, utcnow

REALM = 'Basic realm="hokusai-registry"'
HOW_TO_SEND = (
    "send it as 'Authorization: Bearer <key>', 'X-API-Key: <key>', or Basic auth with the key as password"
)
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass
class Refusal(Exception):
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error_code(self) -> str:
        return {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(self.status, "TEMPORARILY_UNAVAILABLE")

    def body(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": self.message}).encode()

    def response_headers(self) -> dict[str, str]:
        extra = {"WWW-Authenticate": REALM} if self.status == 401 else {}
        return {"Content-Type": "application/json", **extra, **self.headers}


def unauthenticated(message: str) -> Refusal:
    return Refusal(401, message)


def extract_key(headers: Mapping[str, str]) -> str:
    """The key from a request's headers (lower-case names); raises a 401 Refusal saying what is wrong."""
    authorization = headers.get("authorization")
    if authorization is None:
        key = headers.get("x-api-key")
        if key is None:
            raise unauthenticated(f"missing API key: {HOW_TO_SEND}")
    else:
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            key = credentials
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credentials, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                raise unauthenticated("malformed Basic credentials: expected base64 of 'user:key'") from None
        else:
            # Quote the scheme only when it cannot be a key sent without one.
            named = f" {scheme!r}" if scheme.isalpha() and len(scheme) <= 10 else ""
            raise unauthenticated(f"unsupported authorization scheme{named}: {HOW_TO_SEND}")
    if not key:
        raise unauthenticated(f"empty API key: {HOW_TO_SEND}")
    if not looks_like_key(key):
        raise unauthenticated("malformed API key: expected a printable ASCII token of 16 to 256 characters")
    return key


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
            return entry[2]
        return self._external.cached(digest) if self._external else None

    def resolve(self, key: str, digest: str) -> Principal:
        """The principal for a key, from the database or the external service; raises Refusal."""
        record = self._load(digest)
        if record is None:
            return self._resolve_external(key, digest)  # outside the lock: it may wait for the network
        return self._check(record)

    def _load(self, digest: str) -> ApiKey | None:
        # When a key's entry expires, all its requests in flight miss at once: the first reads the
        # database, the others wait and take its answer (a local read takes about a millisecond).
        with self._load_lock:
            entry = self._cache.get(digest)
            if entry is not None and entry[0] > time.monotonic():
                return entry[1]
            record = self._keys.find_by_hash(digest)
            if record is not None and record.revoked_at is None and not record.is_expired(utcnow()):
                if not self._keys.users.has_user(record.username):
                    raise unauthenticated(f"the user {record.username!r} of key {record.id} no longer exists")
                self._touch(record)
                if len(self._cache) >= self.MAX_ENTRIES:
                    self._cache = {d: e for d, e in self._cache.items() if e[0] > time.monotonic()}
                if len(self._cache) < self.MAX_ENTRIES:
                    self._cache[digest] = (time.monotonic() + self._ttl, record, self._check(record))
            return record

    def _check(self, record: ApiKey) -> Principal:
        if record.revoked_at is not None:
            raise unauthenticated(f"API key {record.id} was revoked at {record.revoked_at.isoformat()}")
        if record.is_expired(utcnow()):
            assert record.expires_at is not None
            raise unauthenticated(f"API key {record.id} expired at {record.expires_at.isoformat()}")
        return Principal(key_id=record.id, username=record.username, scope=record.scope)

    def _resolve_external(self, key: str, digest: str) -> Principal:
        if self._external is None:
            raise unauthenticated("unknown API key")
        try:
            principal = self._external.validate(key, digest)
        except KeyServiceDown as exc:
            raise Refusal(503, f"cannot validate the key: {exc}; retry later", {"Retry-After": "5"}) from None
        if principal is None:
            raise unauthenticated("API key rejected by the key service (unknown, revoked or expired)")
        self._keys.ensure_user(principal.username)
        return principal

    def _touch(self, record: ApiKey) -> None:
        now = utcnow()
        if record.last_used_at is None or now - record.last_used_at > TOUCH_INTERVAL:
            self._keys.touch(record.id, now)


def check_scope(principal: Principal, method: str, path: str, *, writes: bool | None = None) -> None:
    if writes is None:
        writes = policy.is_write(method, path)
    if principal.scope == "read" and writes:
        raise Refusal(
            403,
            f"API key {principal.key_id} has scope 'read'; {method} {path} changes data and needs a "
            "'write' key",
        )


_authenticator: Authenticator | None = None


def install(authenticator: Authenticator) -> None:
    global _authenticator
    _authenticator = authenticator


def authorization_function() -> Authorization | Response:
    """MLflow's ``authorization_function`` hook: who is this request?

    Our ASGI layer has already authenticated the request (see middleware.py); this reads the result.
    Called outside that layer, it authenticates from the Flask request itself and memoizes on ``g``.
    """
    principal = current_principal() or g.get("hokusai_principal")
    if principal is None:
        if _authenticator is None:
            raise MlflowException("hokusai-registry's authenticator is not installed")
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            key = extract_key(headers)
            digest = _authenticator.digest(key)
            principal = _authenticator.from_cache(digest) or _authenticator.resolve(key, digest)
            check_scope(principal, request.method, request.path)
        except Refusal as refusal:
            return Response(refusal.body(), refusal.status, refusal.response_headers())
        g.hokusai_principal = principal
    return Authorization("bearer", {"username": principal.username})
