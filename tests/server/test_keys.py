"""The key store on its own: names, rotation with a grace period, limits, and the schema upgrade."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from hokusai_registry.server.authenticator import Authenticator
from hokusai_registry.server.credentials import Refusal
from hokusai_registry.server.keys import (
    InvalidKeyRequest,
    KeyConflict,
    KeyLimits,
    KeyNotFound,
    KeyStore,
    utcnow,
)
from hokusai_registry.server.schema import api_keys, create_tables


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32)


def rows(store: KeyStore) -> list[dict]:
    with store.users.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(api_keys).order_by(api_keys.c.id))]


def set_columns(store: KeyStore, key_id: str, **values: object) -> None:
    with store.users.engine.begin() as conn:
        conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(**values))


def test_a_name_is_unique_among_a_users_live_keys(store: KeyStore) -> None:
    first = store.create("acme", name="ci")
    with pytest.raises(KeyConflict, match="already has a key named 'ci'"):
        store.create("acme", name="ci")
    store.create("globex", name="ci")  # another user's names are theirs
    store.revoke(first.record.id)
    again = store.create("acme", name="ci")  # a revoked key gives its name up
    assert again.record.name == "ci"


def test_an_expired_key_gives_its_name_up(store: KeyStore) -> None:
    old = store.create("acme", name="ci")
    set_columns(store, old.record.id, expires_at=utcnow() - timedelta(seconds=1))
    new = store.create("acme", name="ci")
    assert store.get(old.record.id).replaced_by == new.record.id


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"username": ""}, "user"),
        ({"username": " acme"}, "user"),
        ({"username": "a\nb"}, "user"),
        ({"username": "u" * 256}, "user"),
        ({"scope": "root"}, "scope"),
        ({"name": "x" * 10_000}, "name"),
        ({"name": "-leading-dash"}, "name"),
        ({"name": "spa ce"}, "name"),
        ({"expires_in_days": -1}, "expires_in_days"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"expires_in_days": float("nan")}, "expires_in_days"),
        ({"expires_in_days": 1e9}, "expires_in_days"),
    ],
)
def test_bad_fields_are_refused_and_nothing_is_written(store: KeyStore, fields: dict, field: str) -> None:
    request = {"username": "newcomer", "scope": "write", "name": "ci", "expires_in_days": None} | fields
    with pytest.raises(InvalidKeyRequest) as refused:
        store.create(**request)
    assert refused.value.field == field
    assert rows(store) == []
    assert not store.users.has_user(request["username"])


def test_the_maximum_lifetime_is_the_default_and_the_limit(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32, KeyLimits(max_lifetime_days=30))
    with pytest.raises(InvalidKeyRequest, match="beyond this server's maximum key lifetime of 30 days"):
        store.create("acme", expires_in_days=31)
    default = store.create("acme").record
    assert default.expires_at is not None
    assert abs(default.expires_at - default.created_at - timedelta(days=30)) < timedelta(seconds=1)


def test_rotation_keeps_user_scope_name_and_lifetime_and_gives_the_old_key_a_grace(store: KeyStore) -> None:
    old = store.create("acme", scope="read", name="ci", expires_in_days=10)
    rotated = store.rotate(old.record.id, grace_seconds=600)
    new = rotated.new.record
    assert (new.username, new.scope, new.name) == ("acme", "read", "ci")
    assert new.expires_at is not None
    assert abs(new.expires_at - new.created_at - timedelta(days=10)) < timedelta(seconds=1)
    assert rotated.old.replaced_by == new.id
    assert rotated.old.expires_at is not None
    grace = rotated.old.grace_left(utcnow())
    assert grace is not None and 595 < grace <= 600
    assert rotated.new.key != old.key


@pytest.mark.parametrize("name", ["ci", None])  # keys made without a name (the CLI's default) too
def test_rotating_twice_leaves_exactly_one_old_key_in_its_grace(store: KeyStore, name: str | None) -> None:
    first = store.create("acme", name=name)
    second = store.rotate(first.record.id, grace_seconds=3600).new
    third = store.rotate(second.record.id, grace_seconds=3600).new
    now = utcnow() + timedelta(milliseconds=1)
    working = [key.id for key in store.list("acme") if key.revoked_at is None and not key.is_expired(now)]
    assert sorted(working) == sorted([second.record.id, third.record.id])


def test_a_rotated_key_never_outlives_the_maximum_lifetime(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/auth.db"
    forever = KeyStore(uri, b"k" * 32).create("acme", name="ci")  # made before the operator set a limit
    limited = KeyStore(uri, b"k" * 32, KeyLimits(max_lifetime_days=30))
    new = limited.rotate(forever.record.id).new.record
    assert new.expires_at is not None
    assert abs(new.expires_at - new.created_at - timedelta(days=30)) < timedelta(seconds=1)


def test_a_key_expired_by_disuse_can_be_neither_rotated_nor_hold_its_name(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32, KeyLimits(expire_unused_days=90))
    idle = store.create("acme", name="ci")
    set_columns(store, idle.record.id, created_at=utcnow() - timedelta(days=91))
    with pytest.raises(KeyConflict, match="has expired"):
        store.rotate(idle.record.id)
    assert store.create("acme", name="ci").record.name == "ci"


def test_a_grace_of_zero_ends_the_old_key_at_once(store: KeyStore) -> None:
    old = store.create("acme", name="ci")
    store.rotate(old.record.id, grace_seconds=0)
    assert store.get(old.record.id).is_expired(utcnow())


@pytest.mark.parametrize("grace", [-1, 604_801, "60", 1.5, True])
def test_a_bad_grace_is_refused_before_anything_changes(store: KeyStore, grace: object) -> None:
    old = store.create("acme", name="ci")
    before = rows(store)
    with pytest.raises(InvalidKeyRequest, match="grace_seconds"):
        store.rotate(old.record.id, grace_seconds=grace)  # type: ignore[arg-type]
    assert rows(store) == before


def test_only_a_live_key_can_be_rotated(store: KeyStore) -> None:
    with pytest.raises(KeyNotFound):
        store.rotate("k_000000000000")
    old = store.create("acme", name="ci")
    new = store.rotate(old.record.id).new
    with pytest.raises(KeyConflict, match=f"already rotated to {new.record.id}"):
        store.rotate(old.record.id)
    store.revoke(new.record.id)
    with pytest.raises(KeyConflict, match="was revoked"):
        store.rotate(new.record.id)


def test_a_key_unused_longer_than_the_limit_is_refused_and_stays_refused(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32, KeyLimits(expire_unused_days=90))
    used, idle = store.create("acme", name="used"), store.create("acme", name="idle")
    set_columns(store, used.record.id, last_used_at=utcnow() - timedelta(days=89))
    set_columns(store, idle.record.id, created_at=utcnow() - timedelta(days=91))
    authenticator = Authenticator(store, ttl=0)
    assert authenticator.resolve(used.key, authenticator.digest(used.key)).key_id == used.record.id
    for _ in range(2):  # the refusal does not count as a use
        with pytest.raises(Refusal, match="not used for 90 days"):
            authenticator.resolve(idle.key, authenticator.digest(idle.key))
    assert store.get(idle.record.id).last_used_at is None


def test_a_rotated_key_past_its_grace_says_which_key_replaced_it(store: KeyStore) -> None:
    old = store.create("acme", name="ci")
    new = store.rotate(old.record.id, grace_seconds=0).new
    authenticator = Authenticator(store, ttl=0)
    with pytest.raises(Refusal, match=f"replaced by {new.record.id}"):
        authenticator.resolve(old.key, authenticator.digest(old.key))


def test_a_key_table_from_the_first_release_is_upgraded_in_place(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/auth.db")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE hokusai_api_keys (id VARCHAR(32) PRIMARY KEY, key_hash VARCHAR(64) NOT NULL "
                "UNIQUE, username VARCHAR(255) NOT NULL, scope VARCHAR(16) NOT NULL, created_at DATETIME "
                "NOT NULL, expires_at DATETIME, revoked_at DATETIME, last_used_at DATETIME)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, key_hash, username, scope, created_at) "
                "VALUES ('k_old', 'h', 'acme', 'write', '2026-01-01 00:00:00')"
            )
        )
    create_tables(engine)
    create_tables(engine)  # every worker runs it
    store = KeyStore(f"sqlite:///{tmp_path}/auth.db", b"k" * 32)
    (old,) = store.list()
    assert old.to_json()["name"] == "k_old"  # unnamed keys are shown by id
    store.create("acme", name="ci")
    with pytest.raises(KeyConflict):
        store.create("acme", name="ci")  # the unique index came with the upgrade
