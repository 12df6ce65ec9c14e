"""API keys: creation, storage (only an HMAC of the key), look-up, revocation.

A key is ``hk_live_`` + 43 URL-safe characters (32 random bytes). Keys are long random secrets, so a
fast keyed hash is the right store format: HMAC-SHA-256 with a server secret costs microseconds,
where a password hash would cost hundreds of milliseconds on every request. The key table lives in
the same database as MLflow's users and permissions, so the server and the `keys` commands share it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from hokusai_registry.server.schema import api_keys, create_tables

KEY_PREFIX = "hk_live_"
SCOPES = ("read", "write", "admin")


class KeyNotFound(LookupError):
    pass


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
        )

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "user": self.username,
            "scope": self.scope,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "revoked": self.revoked_at is not None,
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


@dataclass(frozen=True)
class NewKey:
    key: str
    record: ApiKey


def hash_key(key: str, secret: bytes) -> str:
    return hmac.digest(secret, key.encode(), "sha256").hex()


class KeyStore:
    """The key table, plus the MLflow user each key acts as."""

    def __init__(self, db_uri: str, hash_secret: bytes) -> None:
        self._secret = hash_secret
        self._users = SqlAlchemyStore()
        self._users.init_db(db_uri)  # runs MLflow's auth migrations when needed
        self._engine = self._users.engine
        create_tables(self._engine)

    @property
    def users(self) -> SqlAlchemyStore:
        return self._users

    def create(self, username: str, scope: str = "write", expires_in_days: float | None = None) -> NewKey:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        if expires_in_days is not None and expires_in_days <= 0:
            raise ValueError("--expires-in-days must be positive")
        self.ensure_user(username)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        record = ApiKey(
            id="k_" + secrets.token_hex(6),
            username=username,
            scope=scope,
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            revoked_at=None,
            last_used_at=None,
        )
        values = asdict(record) | {"key_hash": hash_key(key, self._secret)}
        with self._engine.begin() as conn:
            conn.execute(api_keys.insert().values(**values))
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
            row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        return ApiKey.from_row(row)

    def ensure_user(self, username: str) -> None:
        """Create the MLflow user a key acts as; the key is its only credential (random password)."""
        if self._users.has_user(username):
            return
        try:
            self._users.create_user(username, secrets.token_urlsafe(32))
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
