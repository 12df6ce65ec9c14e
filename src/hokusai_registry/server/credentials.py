"""What a request presents and why it is refused: key extraction, the scope rule, the ``Refusal`` tree.

Refusals, by status (the body is always ``{"error_code", "message"}``)::

    Refusal
    ├── 401 UNAUTHENTICATED      no key, malformed, unknown, revoked, expired, or its user was deleted
    ├── 403 PERMISSION_DENIED    a ``read`` key on a request that changes data, a ``metrics`` key on
    │                            anything but /metrics, any other non-admin key on /metrics
    └── 503 TEMPORARILY_UNAVAILABLE  the external key service cannot be asked (with Retry-After)

403s for missing per-resource permission come from MLflow's own auth app, after us. Pure functions:
no Flask, no database, so the ASGI layer and the Flask hook share them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from hokusai_registry.server import policy
from hokusai_registry.server.context import Principal

REALM = 'Basic realm="hokusai-registry"'
# The MLflow error_code of each refusal status, ours and MLflow's (json_errors.py rewrites MLflow's).
ERROR_CODES: dict[int, str] = {
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    503: "TEMPORARILY_UNAVAILABLE",
}
HOW_TO_SEND = (
    "send it as 'Authorization: Bearer <key>', 'X-API-Key: <key>', or Basic auth with the key as password"
)


@dataclass
class Refusal(Exception):
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    # For hokusai_auth_refusals_total: missing, malformed, unknown, revoked, expired, forbidden,
    # key_service_down (metrics.REFUSAL_REASONS).
    reason: str = "forbidden"

    @property
    def error_code(self) -> str:
        return ERROR_CODES.get(self.status, "TEMPORARILY_UNAVAILABLE")

    def body(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": self.message}).encode()

    def response_headers(self) -> dict[str, str]:
        extra = {"WWW-Authenticate": REALM} if self.status == 401 else {}
        return {"Content-Type": "application/json", **extra, **self.headers}


def looks_like_key(value: str) -> bool:
    """Anything else is refused before it is hashed or looked up."""
    return 16 <= len(value) <= 256 and value.isascii() and value.isprintable() and " " not in value


def unauthenticated(message: str, reason: str = "unknown") -> Refusal:
    return Refusal(401, message, reason=reason)


def extract_key(headers: Mapping[str, str]) -> str:
    """The key from a request's headers (lower-case names); raises a 401 Refusal saying what is wrong."""
    authorization = headers.get("authorization")
    if authorization is None:
        key = headers.get("x-api-key")
        if key is None:
            raise unauthenticated(f"missing API key: {HOW_TO_SEND}", "missing")
    else:
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            key = credentials
        elif scheme.lower() == "basic":
            try:
                key = base64.b64decode(credentials, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                raise unauthenticated(
                    "malformed Basic credentials: expected base64 of 'user:key'", "malformed"
                ) from None
        else:
            # Quote the scheme only when it cannot be a key sent without one.
            named = f" {scheme!r}" if scheme.isalpha() and len(scheme) <= 10 else ""
            raise unauthenticated(f"unsupported authorization scheme{named}: {HOW_TO_SEND}", "malformed")
    if not key:
        raise unauthenticated(f"empty API key: {HOW_TO_SEND}", "missing")
    if not looks_like_key(key):
        raise unauthenticated(
            "malformed API key: expected a printable ASCII token of 16 to 256 characters", "malformed"
        )
    return key


def check_scope(principal: Principal, method: str, path: str, *, writes: bool | None = None) -> None:
    """A ``read`` key may not change data, ``/metrics`` is for ``admin`` and ``metrics`` keys, and a
    ``metrics`` key reads nothing else; raises the 403 Refusal that says which."""
    if path == policy.METRICS_PATH:
        if principal.scope not in ("admin", "metrics"):
            raise Refusal(
                403,
                f"API key {principal.key_id} has scope {principal.scope!r}; {policy.METRICS_PATH} needs an "
                "'admin' key or a key of scope 'metrics'",
            )
        return
    if principal.scope == "metrics":
        raise Refusal(
            403,
            f"API key {principal.key_id} has scope 'metrics': it reads {policy.METRICS_PATH}, nothing else",
        )
    if writes is None:
        writes = policy.is_write(method, path)
    if principal.scope == "read" and writes:
        raise Refusal(
            403,
            f"API key {principal.key_id} has scope 'read'; {method} {path} changes data and needs a "
            "'write' key",
        )
