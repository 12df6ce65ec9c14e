"""The registry's key API (``/api/hokusai/v1``) from the client side: typed answers, one error type, and
what a key's expiry or rotation means for whoever runs with it.

Client-side and light, like ``client.py``: httpx only, nothing from MLflow or ``server/``, so
``keys --url``, ``verify`` and ``register`` load it in milliseconds. The same dataclasses carry what the
``keys`` commands read from the database (``from_json`` of the store's ``to_json``), so both print alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from hokusai_registry.client import error_body

__all__ = [
    "KEY_API",
    "MISSING_ENV_KEY",
    "WARN_WITHIN",
    "CreatedKey",
    "KeyApiError",
    "KeyApiUnreachable",
    "KeyClient",
    "KeyInfo",
    "KeyWarning",
    "WhoAmI",
    "utc_text",
]

KEY_API = "/api/hokusai/v1"
WARN_WITHIN = timedelta(days=7)  # a key expiring sooner than this is worth a warning
MISSING_ENV_KEY = (
    "no API key: set HOKUSAI_API_KEY (or MLFLOW_TRACKING_TOKEN); "
    "the keys commands never take a key on the command line"
)
T = TypeVar("T")


class KeyApiError(Exception):
    """The key API refused (``status``, its ``error_code`` and ``message``) or could not be asked.

    ``str()`` is what to show: the message, then the status and error code in brackets.
    """

    def __init__(self, status: int | None, error_code: str, message: str) -> None:
        self.status, self.error_code, self.message = status, error_code, message
        said = " ".join(part for part in (f"HTTP {status}" if status else "", error_code) if part)
        super().__init__(f"{message} ({said})" if said else message)


class KeyApiUnreachable(KeyApiError):
    """No HTTP answer at all: DNS, a refused connection, TLS, a timeout."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(None, "", f"could not reach {url}: {type(cause).__name__}: {cause}")


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name!r} is {value!r}, not a string")
    return value


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError(f"{name!r} is {value!r}, not a string")


def _time(data: Mapping[str, Any], name: str) -> datetime | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name!r} is {value!r}, not an ISO 8601 time")
    return datetime.fromisoformat(value)


def _seconds(data: Mapping[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name!r} is {value!r}, not a number of seconds")
    return float(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class KeyInfo:
    """A key as the key API (and ``keys list --json``) shows it, never with its secret."""

    id: str
    name: str | None
    user: str
    scope: str
    created_at: datetime | None
    expires_at: datetime | None
    revoked: bool
    revoked_at: datetime | None
    last_used_at: datetime | None
    replaced_by: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyInfo:
        """Parse a key object; ``ValueError`` names the first field that is not as the contract says."""
        revoked = data.get("revoked", data.get("revoked_at") is not None)
        if not isinstance(revoked, bool):
            raise ValueError(f"'revoked' is {revoked!r}, not a boolean")
        return cls(
            id=_text(data, "id"),
            name=_optional_text(data, "name"),
            user=_text(data, "user"),
            scope=_text(data, "scope"),
            created_at=_time(data, "created_at"),
            expires_at=_time(data, "expires_at"),
            revoked=revoked,
            revoked_at=_time(data, "revoked_at"),
            last_used_at=_time(data, "last_used_at"),
            replaced_by=_optional_text(data, "replaced_by"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "user": self.user, "scope": self.scope,
            "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at), "revoked": self.revoked,
            "revoked_at": _iso(self.revoked_at), "last_used_at": _iso(self.last_used_at),
            "replaced_by": self.replaced_by,
        }  # fmt: skip


@dataclass(frozen=True)
class CreatedKey:
    """A new key, shown once: from ``create``, or from ``rotate`` (then ``replaces`` is the old key's id
    and ``old_key_expires_at`` when the old key stops working)."""

    key: str
    record: KeyInfo
    replaces: str | None = None
    old_key_expires_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreatedKey:
        return cls(
            key=_text(data, "key"),
            record=KeyInfo.from_json(data),
            replaces=_optional_text(data, "replaces"),
            old_key_expires_at=_time(data, "old_key_expires_at"),
        )

    def to_json(self) -> dict[str, Any]:
        """The created-key object: the key object plus ``key`` (and, after a rotation, what it replaced)."""
        out = self.record.to_json() | {"key": self.key}
        if self.replaces is not None:
            out |= {"replaces": self.replaces, "old_key_expires_at": _iso(self.old_key_expires_at)}
        return out


@dataclass(frozen=True)
class KeyWarning:
    """Why the key will soon stop working (``problem``) and what to do about it (``fix``)."""

    problem: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.problem}; {self.fix}"


@dataclass(frozen=True)
class WhoAmI:
    """The key a request was made with (``GET /api/hokusai/v1/whoami``).

    ``grace_seconds_left`` is set only for an old key in its rotation grace period; ``source`` is
    ``local`` (this registry's key table) or ``external`` (the external key service).
    """

    id: str
    name: str | None
    user: str
    scope: str
    expires_at: datetime | None
    expires_in_seconds: float | None
    grace_seconds_left: float | None
    source: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WhoAmI:
        return cls(
            id=_text(data, "id"),
            name=_optional_text(data, "name"),
            user=_text(data, "user"),
            scope=_text(data, "scope"),
            expires_at=_time(data, "expires_at"),
            expires_in_seconds=_seconds(data, "expires_in_seconds"),
            grace_seconds_left=_seconds(data, "grace_seconds_left"),
            source=_optional_text(data, "source") or "local",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "user": self.user, "scope": self.scope,
            "expires_at": _iso(self.expires_at), "expires_in_seconds": self.expires_in_seconds,
            "grace_seconds_left": self.grace_seconds_left, "source": self.source,
        }  # fmt: skip

    def describe(self) -> str:
        """``as key k_… (name, user acme, scope write)``, for the first line of a command's output."""
        parts = [self.name] if self.name and self.name != self.id else []
        parts += [f"user {self.user}", f"scope {self.scope}"]
        if self.source == "external":
            parts.append("from the external key service")
        return f"as key {self.id} ({', '.join(parts)})"

    def warning(self, now: datetime) -> KeyWarning | None:
        """A warning when the key stops working within ``WARN_WITHIN`` of ``now`` (an aware datetime), or
        at all because it is an old key in its rotation grace period; None otherwise.

        The server's own countdowns (``grace_seconds_left``, ``expires_in_seconds``) win over
        ``expires_at - now``, so a client's wrong clock cannot hide a warning.
        """
        if self.grace_seconds_left is not None:
            left = self.grace_seconds_left
            ends = self.expires_at or now + timedelta(seconds=left)
            return KeyWarning(
                f"key {self.id} was rotated: this old key stops working {_when(left, ends)}",
                "switch to the new key that `hokusai-registry keys rotate` printed",
            )
        if self.expires_in_seconds is not None:
            left = self.expires_in_seconds
        elif self.expires_at is not None:
            left = (self.expires_at - now).total_seconds()
        else:
            return None
        if left > WARN_WITHIN.total_seconds():
            return None
        ends = self.expires_at or now + timedelta(seconds=left)
        fix = (
            "ask the key service for a new key before then"
            if self.source == "external"
            else "run `hokusai-registry keys rotate --url URL` before then and use the new key"
        )
        return KeyWarning(f"key {self.id} expires {_when(left, ends)}", fix)


def _when(seconds: float, at: datetime) -> str:
    """``in 6 days (2026-05-01 09:30 UTC)``: the time left rounded down, so it never looks later."""
    seconds = max(0.0, seconds)
    if seconds >= 2 * 86_400:
        span = f"{int(seconds // 86_400)} days"
    elif seconds >= 2 * 3_600:
        span = f"{int(seconds // 3_600)} hours"
    else:
        minutes = int(seconds // 60)
        span = f"{minutes} minute{'' if minutes == 1 else 's'}"
    return f"in {span} ({utc_text(at, seconds=False)})"


def utc_text(at: datetime, *, seconds: bool = True) -> str:
    """``2026-05-01 09:30:12 UTC`` (a naive time is taken to be UTC already)."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return f"{utc:%Y-%m-%d %H:%M:%S UTC}" if seconds else f"{utc:%Y-%m-%d %H:%M UTC}"


class KeyClient:
    """The key API of one registry, called with one key (sent as ``Authorization: Bearer``).

    ``http`` is a client to reuse (its ``base_url`` must be ``url``; it is not closed here), e.g. verify's
    or a test's ``httpx.MockTransport``. Every method raises ``KeyApiError`` for a refusal or an answer
    that is not the contract's, and ``KeyApiUnreachable`` when the server could not be asked.
    """

    def __init__(
        self, url: str, api_key: str, *, timeout: float = 30.0, http: httpx.Client | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "hokusai-registry-keys"}
        self._own = http is None
        self._http = http or httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> KeyClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def create(
        self,
        name: str | None,
        *,
        user: str | None = None,
        scope: str | None = None,
        expires_in_days: float | None = None,
    ) -> CreatedKey:
        """A new key named ``name`` for ``user`` (default: the caller's own user; another needs admin)."""
        body: dict[str, Any] = {}
        for field, value in (
            ("name", name),
            ("user", user),
            ("scope", scope),
            ("expires_in_days", expires_in_days),
        ):
            if value is not None:
                body[field] = value
        return self._call(CreatedKey.from_json, "POST", "/keys", json=body)

    def list(self, user: str | None = None) -> list[KeyInfo]:
        """The keys the caller may see (all for an admin, else its own), only ``user``'s if given."""
        return self._call(_key_list, "GET", "/keys", params={"user": user} if user is not None else None)

    def revoke(self, key_id: str) -> KeyInfo:
        return self._call(KeyInfo.from_json, "DELETE", f"/keys/{quote(key_id, safe='')}")

    def rotate(self, key_id: str, grace_seconds: int | None = None) -> CreatedKey:
        """A new key in place of ``key_id``; the old one keeps working ``grace_seconds`` (server default)."""
        body = {} if grace_seconds is None else {"grace_seconds": grace_seconds}
        return self._call(CreatedKey.from_json, "POST", f"/keys/{quote(key_id, safe='')}/rotate", json=body)

    def whoami(self) -> WhoAmI:
        return self._call(WhoAmI.from_json, "GET", "/whoami")

    def identify(self) -> WhoAmI | None:
        """``whoami``, or None from a server without the key API (404): not knowing is no error there."""
        try:
            return self.whoami()
        except KeyApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _call(
        self,
        parse: Callable[[Mapping[str, Any]], T],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> T:
        """One request; its JSON answer through ``parse``, or ``KeyApiError``."""
        what = f"{method} {KEY_API}{path}"
        try:
            response = self._http.request(
                method, f"{KEY_API}{path}", json=json, params=params, headers=self._headers
            )
        except httpx.TransportError as exc:
            raise KeyApiUnreachable(self.url, exc) from exc
        if not response.is_success:
            raise self._refused(response, what)
        try:
            answer = response.json()
            if not isinstance(answer, Mapping):
                raise ValueError("the answer is not a JSON object")
            return parse(answer)
        except (ValueError, TypeError) as exc:
            raise KeyApiError(
                response.status_code, "", f"unexpected answer to {what} from {self.url}: {exc}"
            ) from None

    def _refused(self, response: httpx.Response, what: str) -> KeyApiError:
        body = error_body(response.text)
        status = response.status_code
        if status == 404 and body.error_code != "RESOURCE_DOES_NOT_EXIST":
            # Not the key API's own 404 (an unknown key id): the route itself is missing.
            message = (
                f"{self.url} has no key API ({what} is not found): upgrade the registry, or run the "
                "keys command on its database, without --url"
            )
        elif body.is_json and body.message:
            message = body.message
        else:
            message = f"{what} answered {status}" + (f": {body.message}" if body.message else "")
        return KeyApiError(status, body.error_code, message)


def _key_list(data: Mapping[str, Any]) -> list[KeyInfo]:
    keys = data.get("keys")
    if not isinstance(keys, list):
        raise ValueError(f"'keys' is {keys!r}, not a list")
    if not all(isinstance(key, Mapping) for key in keys):
        raise ValueError("'keys' holds something that is not a key object")
    return [KeyInfo.from_json(key) for key in keys]
