"""API keys: creation, storage (only an HMAC of the key), look-up, rotation, revocation.

A key is ``hk_live_`` + 43 URL-safe characters (32 random bytes). Keys are long random secrets, so a
fast keyed hash is the right store format: HMAC-SHA-256 with a server secret costs microseconds,
where a password hash would cost hundreds of milliseconds on every request. The key table lives in
the same database as MLflow's users and permissions, so the server and the `keys` commands share it.

Rotation makes a new key with the same user, scope and name and gives the old one a grace period
(it then expires), so a pipeline can switch keys without a failed request. Errors::

    KeyStoreError
    ├── InvalidKeyRequest   a field is wrong (400); ``field`` names it; nothing was written
    ├── KeyNotFound         no key with that id (404)
    └── KeyConflict         the name is taken, or the key was already revoked or rotated (409)
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hokusai_registry.server.schema import api_keys, create_tables

if TYPE_CHECKING:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    from hokusai_registry.settings import Settings

KEY_PREFIX = "hk_live_"
SCOPES = ("read", "write", "admin", "metrics")  # metrics: GET /metrics and nothing else
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_USERNAME = 255  # MLflow's users.username column
MAX_DAYS = 36_500  # "never" is no expiry, not a century
DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 7 * 86_400


class KeyStoreError(Exception):
    pass


class InvalidKeyRequest(KeyStoreError, ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class KeyNotFound(KeyStoreError, LookupError):
    pass


class KeyConflict(KeyStoreError):
    pass


@dataclass(frozen=True)
class KeyLimits:
    """The operator's limits (settings ``max_key_lifetime_days`` and ``expire_unused_days``)."""

    max_lifetime_days: float | None = None
    expire_unused_days: float | None = None

    @classmethod
    def of(cls, settings: Settings) -> KeyLimits:
        return cls(settings.max_key_lifetime_days, settings.expire_unused_days)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidKeyRequest(
            "name", "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_username(username: object) -> str:
    """MLflow refuses only an empty user name; we also refuse what could not be shown or typed back."""
    if (
        not isinstance(username, str)
        or not username
        or len(username) > MAX_USERNAME
        or not username.isprintable()
        or username != username.strip()
    ):
        raise InvalidKeyRequest(
            "user", f"must be 1 to {MAX_USERNAME} printable characters without surrounding spaces"
        )
    return username


def check_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise InvalidKeyRequest("scope", f"must be one of {', '.join(SCOPES)}, not {scope!r}")
    return str(scope)


def check_lifetime(days: float | None, limits: KeyLimits) -> float | None:
    """The key's lifetime in days: as asked, within the operator's maximum (which is the default)."""
    limit = limits.max_lifetime_days
    if days is None:
        return limit
    if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days) or days <= 0:
        raise InvalidKeyRequest("expires_in_days", "must be a positive number of days")
    if limit is not None and days > limit:
        raise InvalidKeyRequest(
            "expires_in_days", f"{days:g} is beyond this server's maximum key lifetime of {limit:g} days"
        )
    if days > MAX_DAYS:
        raise InvalidKeyRequest("expires_in_days", f"must be at most {MAX_DAYS}; omit it for no expiry")
    return float(days)


def check_grace(seconds: object) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= MAX_GRACE_SECONDS:
        raise InvalidKeyRequest("grace_seconds", f"must be a whole number from 0 to {MAX_GRACE_SECONDS}")
    return seconds


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """In UTC: SQLite returns naive datetimes (stored as UTC), PostgreSQL the session's time zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    username: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    name: str | None = None
    replaced_by: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        return cls(
            id=row.id,
            username=row.username,
            scope=row.scope,
            created_at=_aware(row.created_at) or utcnow(),
            expires_at=_aware(row.expires_at),
            revoked_at=_aware(row.revoked_at),
            last_used_at=_aware(row.last_used_at),
            name=row.name,
            replaced_by=row.replaced_by,
        )

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def is_unused_for(self, days: float | None, now: datetime) -> bool:
        """Not used (or, never used, not created) in the last ``days``; False when there is no such limit."""
        return days is not None and (self.last_used_at or self.created_at) <= now - timedelta(days=days)

    def grace_left(self, now: datetime) -> float | None:
        """Seconds an old, rotated key still works; None for a key that was not rotated."""
        if self.replaced_by is None or self.expires_at is None:
            return None
        return max(0.0, (self.expires_at - now).total_seconds())

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "name": self.name or self.id,
            "user": self.username,
            "scope": self.scope,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked": self.revoked_at is not None,
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
            "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True)
class NewKey:
    key: str
    record: ApiKey

    def to_json(self) -> dict[str, Any]:
        """The one response that ever holds the key: the record, plus the key."""
        return self.record.to_json() | {"key": self.key}


@dataclass(frozen=True)
class RotatedKey:
    new: NewKey
    old: ApiKey  # as it is after the rotation: replaced, expiring at the end of its grace period

    def to_json(self) -> dict[str, Any]:
        expires = self.old.expires_at
        return self.new.to_json() | {
            "replaces": self.old.id,
            "old_key_expires_at": expires.isoformat() if expires else None,
        }


def new_key_id() -> str:
    return "k_" + secrets.token_hex(6)


def hash_key(key: str, secret: bytes) -> str:
    return hmac.digest(secret, key.encode(), "sha256").hex()


class KeyStore:
    """The key table, plus the MLflow user each key acts as."""

    def __init__(
        self,
        db_uri: str,
        hash_secret: bytes,
        limits: KeyLimits | None = None,
        *,
        engine: sa.Engine | None = None,
    ) -> None:
        """Without ``engine``, MLflow's auth store is opened now and the keys share its engine (the
        server). With one (the ``keys`` commands), MLflow's auth store, and MLflow with it (about
        3 s of imports), is opened only when a user must be looked up or made."""
        self._db_uri = db_uri
        self._secret = hash_secret
        self.limits = limits or KeyLimits()
        self._users: SqlAlchemyStore | None = None
        self._engine = engine if engine is not None else self.users.engine
        create_tables(self._engine)

    @property
    def users(self) -> SqlAlchemyStore:
        """MLflow's users and permissions on the same database (its migrations run on opening)."""
        if self._users is None:
            from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

            users = SqlAlchemyStore()
            users.init_db(self._db_uri)
            self._users = users
        return self._users

    def create(
        self,
        username: str,
        scope: str = "write",
        expires_in_days: float | None = None,
        name: str | None = None,
    ) -> NewKey:
        """A new key; every field is checked before anything (the user included) is written."""
        check_username(username)
        check_scope(scope)
        if name is not None:
            check_name(name)
        lifetime = check_lifetime(expires_in_days, self.limits)
        self.ensure_user(username)
        key_id = new_key_id()
        with self._engine.begin() as conn:
            if name is not None:
                self._claim_name(conn, username, name, key_id)
            return self._insert(conn, username, scope, name, lifetime, key_id)

    def rotate(self, key_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> RotatedKey:
        """A new key in place of ``key_id``, which keeps working for ``grace_seconds``, then expires.

        A key still in the grace period of an earlier rotation of the same name expires now, so
        there is never more than one old key working beside the new one.
        """
        check_grace(grace_seconds)
        now = utcnow()
        with self._engine.begin() as conn:
            old = self._get(conn, key_id)
            self._refuse_unless_live(old, now, "rotated")
            lifetime, limit = None, self.limits.max_lifetime_days
            if old.expires_at is not None:
                lifetime = (old.expires_at - old.created_at).total_seconds() / 86_400
            if limit is not None:
                lifetime = min(lifetime, limit) if lifetime is not None else limit
            conn.execute(  # the key this one replaced, if still in its grace: it ends now
                api_keys.update()
                .where(
                    api_keys.c.replaced_by == key_id,
                    api_keys.c.revoked_at.is_(None),
                    sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
                )
                .values(expires_at=now)
            )
            new_id = new_key_id()
            grace_end = now + timedelta(seconds=grace_seconds)
            ends = min(old.expires_at, grace_end) if old.expires_at else grace_end
            changed = conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.id == key_id, api_keys.c.replaced_by.is_(None), api_keys.c.revoked_at.is_(None)
                )
                .values(replaced_by=new_id, expires_at=ends)
            ).rowcount
            if changed != 1:
                raise KeyConflict(f"key {key_id} was rotated or revoked by another request just now")
            new = self._insert(conn, old.username, old.scope, old.name, lifetime, key_id=new_id)
            return RotatedKey(new=new, old=self._get(conn, key_id))

    def get(self, key_id: str) -> ApiKey:
        with self._engine.connect() as conn:
            return self._get(conn, key_id)

    def _get(self, conn: sa.Connection, key_id: str) -> ApiKey:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        return ApiKey.from_row(row)

    def _refuse_unless_live(self, key: ApiKey, now: datetime, action: str) -> None:
        if key.revoked_at is not None:
            raise KeyConflict(f"key {key.id} was revoked; it cannot be {action}; create a new key")
        if key.replaced_by is not None:
            raise KeyConflict(f"key {key.id} was already rotated to {key.replaced_by}; rotate that key")
        if key.is_expired(now) or key.is_unused_for(self.limits.expire_unused_days, now):
            raise KeyConflict(f"key {key.id} has expired; it cannot be {action}; create a new key")

    def _claim_name(self, conn: sa.Connection, username: str, name: str, claimant: str) -> None:
        """Refuse a name a live key of the user holds; an expired key holding it gives it up."""
        now = utcnow()
        for row in conn.execute(
            sa.select(api_keys).where(
                api_keys.c.username == username,
                api_keys.c.name == name,
                api_keys.c.revoked_at.is_(None),
                api_keys.c.replaced_by.is_(None),
            )
        ):
            holder = ApiKey.from_row(row)
            if not (holder.is_expired(now) or holder.is_unused_for(self.limits.expire_unused_days, now)):
                raise KeyConflict(
                    f"user {username!r} already has a key named {name!r} ({holder.id}); "
                    "choose another name, rotate that key, or revoke it first"
                )
            conn.execute(api_keys.update().where(api_keys.c.id == holder.id).values(replaced_by=claimant))

    def _insert(
        self,
        conn: sa.Connection,
        username: str,
        scope: str,
        name: str | None,
        lifetime_days: float | None,
        key_id: str,
    ) -> NewKey:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        record = ApiKey(
            id=key_id,
            username=username,
            scope=scope,
            created_at=now,
            expires_at=now + timedelta(days=lifetime_days) if lifetime_days else None,
            revoked_at=None,
            last_used_at=None,
            name=name,
        )
        values = asdict(record) | {"key_hash": hash_key(key, self._secret)}
        try:
            with conn.begin_nested():
                conn.execute(api_keys.insert().values(**values))
        except sa.exc.IntegrityError:
            raise KeyConflict(f"user {username!r} already has a key named {name!r}") from None
        return NewKey(key=key, record=record)

    def list(self, username: str | None = None) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        if username is not None:
            query = query.where(api_keys.c.username == username)
        with self._engine.connect() as conn:
            return [ApiKey.from_row(row) for row in conn.execute(query)]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one())

    def revoke(self, key_id: str) -> ApiKey:
        with self._engine.begin() as conn:
            _revoke_where(conn, api_keys.c.id == key_id)
            return self._get(conn, key_id)

    def ensure_user(self, username: str) -> None:
        """Create the MLflow user a key acts as; the key is its only credential (random password)."""
        from mlflow.exceptions import MlflowException

        if self.users.has_user(username):
            return
        try:
            self.users.create_user(username, secrets.token_urlsafe(32))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another worker created it first
                raise

    def digest(self, key: str) -> str:
        return hash_key(key, self._secret)

    def find_by_hash(self, digest: str) -> ApiKey | None:
        """The record whose stored hash is ``digest``.

        The look-up compares HMACs, not keys: its timing tells an attacker nothing about any key,
        since they cannot compute the HMAC without the server secret.
        """
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == digest)).first()
        return None if row is None else ApiKey.from_row(row)

    def revoke_all(self, username: str) -> None:
        """Revoke every key of a user, so a user created again later under the same name gets none."""
        with self._engine.begin() as conn:
            _revoke_where(conn, api_keys.c.username == username)

    def touch(self, key_id: str, when: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=when))


def _revoke_where(conn: sa.Connection, condition: sa.ColumnElement[bool]) -> None:
    """Revoke the matching keys that are not revoked yet (a revoked key keeps its first revocation time)."""
    conn.execute(
        api_keys.update().where(condition, api_keys.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
