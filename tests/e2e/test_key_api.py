"""The key API against real `up` processes: who may do what, rotation under load, bad input, secrecy."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import Registry, run_postgres, run_registry

API = "/api/hokusai/v1"
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns() % 10**9}-{next(_names)}"


def create(registry: Registry, key: str, **body: Any) -> httpx.Response:
    with registry.client(key) as client:
        return client.post(f"{API}/keys", json={"name": unique("k")} | body)


def created(registry: Registry, key: str, **body: Any) -> dict[str, Any]:
    response = create(registry, key, **body)
    assert response.status_code == 201, response.text
    return response.json()


def call(registry: Registry, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with registry.client(key) as client:
        return client.request(method, f"{API}{path}", **kwargs)


def fresh_status(registry: Registry, key: str) -> int:
    """A read on a new connection each time, so the requests spread over the workers."""
    return httpx.get(
        f"{registry.url}/api/2.0/mlflow/registered-models/search",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ).status_code


def refused_within(registry: Registry, key: str, seconds: float) -> float:
    """Seconds until ``key`` is refused by every request, across workers; fails after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds + 1:
        if all(fresh_status(registry, key) == 401 for _ in range(6)):
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"key still accepted {seconds} s later")


def all_keys(registry: Registry) -> list[dict[str, Any]]:
    """The key table as an admin lists it, without the use times the listing itself moves."""
    response = call(registry, registry.admin_key, "GET", "/keys")
    assert response.status_code == 200, response.text
    return [{k: v for k, v in key.items() if k != "last_used_at"} for key in response.json()["keys"]]


def test_an_admin_onboards_a_new_third_party_whose_key_works_at_once(registry: Registry) -> None:
    user = unique("tenant")
    new = created(registry, registry.admin_key, user=user, scope="write", name="ci")
    assert new["key"].startswith("hk_live_") and (new["user"], new["scope"], new["name"]) == (
        user,
        "write",
        "ci",
    )
    assert fresh_status(registry, new["key"]) == 200
    me = call(registry, new["key"], "GET", "/whoami").json()
    assert (me["id"], me["user"], me["scope"], me["source"]) == (new["id"], user, "write", "local")
    assert me["grace_seconds_left"] is None and me["expires_at"] is None


def test_a_write_key_manages_its_own_users_read_and_write_keys_only(registry: Registry) -> None:
    user, other = unique("tenant"), unique("other")
    writer = created(registry, registry.admin_key, user=user, scope="write")["key"]
    assert created(registry, writer, scope="read")["user"] == user
    assert created(registry, writer, scope="write", user=user)["user"] == user
    before = all_keys(registry)
    for body in ({"user": other}, {"scope": "admin"}, {"user": other, "scope": "read"}):
        refused = create(registry, writer, **body)
        assert refused.status_code == 403, (body, refused.text)
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
    assert all_keys(registry) == before
    assert call(registry, registry.admin_key, "GET", "/keys", params={"user": other}).json() == {"keys": []}


def test_an_admin_creates_admin_keys(registry: Registry) -> None:
    admin = created(registry, registry.admin_key, user=unique("ops"), scope="admin")
    assert call(registry, admin["key"], "GET", "/keys").status_code == 200


def test_a_read_key_changes_no_key(registry: Registry) -> None:
    user = unique("tenant")
    reader = created(registry, registry.admin_key, user=user, scope="read")
    other = created(registry, registry.admin_key, user=user, scope="read")
    before = all_keys(registry)
    for method, path in (
        ("POST", "/keys"),
        ("DELETE", f"/keys/{other['id']}"),
        ("POST", f"/keys/{other['id']}/rotate"),
        ("POST", f"/keys/{reader['id']}/rotate"),
    ):
        body = {"name": "x"} if path == "/keys" else None
        refused = call(registry, reader["key"], method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["error_code"] == "PERMISSION_DENIED"
    assert all_keys(registry) == before
    assert call(registry, reader["key"], "GET", "/whoami").status_code == 200
    assert call(registry, reader["key"], "GET", "/keys").status_code == 200


def test_a_non_admin_lists_only_its_own_users_keys(registry: Registry) -> None:
    user, other = unique("tenant"), unique("other")
    mine = created(registry, registry.admin_key, user=user)
    created(registry, registry.admin_key, user=other)
    listed = call(registry, mine["key"], "GET", "/keys").json()["keys"]
    assert {key["user"] for key in listed} == {user} and [key["id"] for key in listed] == [mine["id"]]
    assert call(registry, mine["key"], "GET", "/keys", params={"user": other}).status_code == 403
    theirs = call(registry, registry.admin_key, "GET", "/keys", params={"user": other}).json()["keys"]
    assert {key["user"] for key in theirs} == {other}
    assert all("key" not in key for key in listed + theirs)


def test_revoking_through_the_api_is_seen_by_every_worker_within_5_seconds(registry: Registry) -> None:
    user = unique("tenant")
    writer = created(registry, registry.admin_key, user=user)
    victim = created(registry, writer["key"], scope="read")
    assert all(fresh_status(registry, victim["key"]) == 200 for _ in range(6))  # cached on both workers
    revoked = call(registry, writer["key"], "DELETE", f"/keys/{victim['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert refused_within(registry, victim["key"], 5) <= 5


def test_another_users_key_cannot_be_revoked_or_rotated(registry: Registry) -> None:
    mine = created(registry, registry.admin_key, user=unique("tenant"))
    theirs = created(registry, registry.admin_key, user=unique("other"))
    for method, path in (("DELETE", f"/keys/{theirs['id']}"), ("POST", f"/keys/{theirs['id']}/rotate")):
        refused = call(registry, mine["key"], method, path)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert fresh_status(registry, theirs["key"]) == 200
    missing = call(registry, registry.admin_key, "DELETE", "/keys/k_000000000000")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_a_write_key_cannot_rotate_its_users_admin_key(registry: Registry) -> None:
    user = unique("ops")
    admin = created(registry, registry.admin_key, user=user, scope="admin")
    writer = created(registry, registry.admin_key, user=user, scope="write")
    refused = call(registry, writer["key"], "POST", f"/keys/{admin['id']}/rotate")
    assert refused.status_code == 403, refused.text
    assert call(registry, admin["key"], "GET", "/whoami").json()["grace_seconds_left"] is None


PIPELINE = textwrap.dedent(
    """
    # A pipeline that reads its key from a file (as from a secrets manager) before each call.
    import os, sys, time
    from mlflow import MlflowClient
    key_file, stop_file = sys.argv[1], sys.argv[2]
    client, ok, failed = MlflowClient(), 0, []
    while not os.path.exists(stop_file):
        os.environ["MLFLOW_TRACKING_TOKEN"] = open(key_file).read().strip()
        try:
            client.search_registered_models(max_results=5)
            ok += 1
        except Exception as exc:
            failed.append(str(exc)[:300])
        time.sleep(0.05)
    print(ok, len(failed), failed[:3], flush=True)
    """
)


def test_a_pipeline_keeps_working_through_a_rotation_and_the_old_key_ends_with_its_grace(
    registry: Registry, tmp_path: Path
) -> None:
    user = unique("pipeline")
    old = created(registry, registry.admin_key, user=user, name="nightly")
    key_file, stop_file = tmp_path / "key", tmp_path / "stop"
    key_file.write_text(old["key"])
    env = registry.third_party_env(old["key"])
    pipeline = subprocess.Popen(
        [sys.executable, "-c", PIPELINE, str(key_file), str(stop_file)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)  # the pipeline is running on the old key
        grace = 6
        rotated = call(
            registry, old["key"], "POST", f"/keys/{old['id']}/rotate", json={"grace_seconds": grace}
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        assert (new["name"], new["user"], new["replaces"]) == ("nightly", user, old["id"])
        me = call(registry, old["key"], "GET", "/whoami").json()
        assert 0 < me["grace_seconds_left"] <= grace
        time.sleep(2)  # the operator updates the secret during the grace period
        key_file.write_text(new["key"])
        time.sleep(grace + 1)
        refused = httpx.get(
            f"{registry.url}/api/2.0/mlflow/registered-models/search",
            headers={"Authorization": f"Bearer {old['key']}"},
        )
        assert refused.status_code == 401 and f"replaced by {new['id']}" in refused.json()["message"]
        time.sleep(2)
    finally:
        stop_file.touch()
        out, _ = pipeline.communicate(timeout=60)
    ok, failures, *_ = out.split(maxsplit=2)
    assert int(failures) == 0, out
    assert int(ok) > 50, out


def test_rotating_twice_leaves_exactly_one_old_key_working(registry: Registry) -> None:
    first = created(registry, registry.admin_key, user=unique("tenant"), name="svc")
    second = call(
        registry, first["key"], "POST", f"/keys/{first['id']}/rotate", json={"grace_seconds": 3600}
    ).json()
    third = call(
        registry, second["key"], "POST", f"/keys/{second['id']}/rotate", json={"grace_seconds": 3600}
    )
    assert third.status_code == 201, third.text
    refused_within(registry, first["key"], 5)
    assert fresh_status(registry, second["key"]) == 200
    assert fresh_status(registry, third.json()["key"]) == 200
    again = call(registry, registry.admin_key, "POST", f"/keys/{first['id']}/rotate")
    assert again.status_code == 409 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


def test_a_name_is_unique_per_user(registry: Registry) -> None:
    user = unique("tenant")
    created(registry, registry.admin_key, user=user, name="ci")
    taken = create(registry, registry.admin_key, user=user, name="ci")
    assert taken.status_code == 409 and taken.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert created(registry, registry.admin_key, user=unique("other"), name="ci")["name"] == "ci"


BAD_CREATES: list[tuple[str, Any, str]] = [
    ("unknown scope", {"scope": "root"}, "scope"),
    ("negative days", {"expires_in_days": -3}, "expires_in_days"),
    ("zero days", {"expires_in_days": 0}, "expires_in_days"),
    ("huge days", {"expires_in_days": 1e12}, "expires_in_days"),
    ("days as text", {"expires_in_days": "5"}, "expires_in_days"),
    ("empty user", {"user": ""}, "user"),
    ("user with a newline", {"user": "evil\nuser"}, "user"),
    ("user as a number", {"user": 7}, "user"),
    ("10 KB name", {"name": "n" * 10_240}, "name"),
    ("name as a list", {"name": ["ci"]}, "name"),
    ("name missing", {"name": None}, "name"),
    ("unknown field", {"password": "x"}, "password"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_CREATES, ids=[case for case, _, _ in BAD_CREATES])
def test_bad_input_gets_400_naming_the_field_and_writes_nothing(
    registry: Registry, case: str, body: dict[str, Any], field: str
) -> None:
    user = unique("never")
    request = {"name": "ci", "user": user} | body
    request = {name: value for name, value in request.items() if value is not None}
    before = all_keys(registry)
    refused = call(registry, registry.admin_key, "POST", "/keys", json=request)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert refused.json()["message"].startswith(f"{field}:") or field in refused.json()["message"]
    assert all_keys(registry) == before
    users = call(registry, registry.admin_key, "GET", "/keys", params={"user": user})
    assert users.json() == {"keys": []}
    assert (
        httpx.get(
            f"{registry.url}/api/2.0/mlflow/users/get",
            params={"username": user},
            headers={"Authorization": f"Bearer {registry.admin_key}"},
        ).status_code
        == 404
    )  # the user was not created either


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe\x00{", b'{"name": "ci"', b"[1, 2]", b'"ci"', '{"name": "caf\u00e9"}'.encode("latin-1")],
    ids=["not UTF-8", "truncated", "a list", "a string", "latin-1"],
)
def test_a_body_that_is_not_a_utf8_json_object_gets_400(registry: Registry, body: bytes) -> None:
    before = all_keys(registry)
    for path in ("/keys", f"/keys/{before[0]['id']}/rotate"):
        refused = call(
            registry,
            registry.admin_key,
            "POST",
            path,
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 400, (path, refused.text)
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert all_keys(registry) == before


@pytest.mark.parametrize("grace", [-1, 604_801, "60", 1.5, None])
def test_a_bad_grace_gets_400_and_the_key_is_not_rotated(registry: Registry, grace: Any) -> None:
    key = created(registry, registry.admin_key, user=unique("tenant"))
    refused = call(
        registry, registry.admin_key, "POST", f"/keys/{key['id']}/rotate", json={"grace_seconds": grace}
    )
    assert refused.status_code == 400, refused.text
    assert "grace_seconds" in refused.json()["message"]
    assert call(registry, key["key"], "GET", "/whoami").json()["grace_seconds_left"] is None


def test_a_key_appears_only_in_the_response_that_created_it_and_never_in_a_log(registry: Registry) -> None:
    user = unique("secret")
    first = created(registry, registry.admin_key, user=user, name="a")
    rotated = call(
        registry, first["key"], "POST", f"/keys/{first['id']}/rotate", json={"grace_seconds": 60}
    ).json()
    bodies = [
        call(registry, rotated["key"], "GET", "/keys").text,
        call(registry, rotated["key"], "GET", "/whoami").text,
        call(registry, first["key"], "GET", "/whoami").text,
        call(registry, registry.admin_key, "GET", "/keys").text,
        call(registry, rotated["key"], "DELETE", f"/keys/{first['id']}").text,
        call(registry, rotated["key"], "POST", "/keys", json={"name": "a"}).text,  # 409
    ]
    time.sleep(0.5)  # let the workers flush their log lines
    log = registry.log()
    for secret in (first["key"], rotated["key"]):
        assert secret[len("hk_live_") :] not in log
        assert not any(secret in body for body in bodies)
    assert rotated["key"] not in json.dumps(first)


def test_create_rotate_and_revoke_are_audited_with_the_acting_and_the_target_key(registry: Registry) -> None:
    admin_id = call(registry, registry.admin_key, "GET", "/whoami").json()["id"]
    made = created(registry, registry.admin_key, user=unique("audited"))
    rotated = call(
        registry, registry.admin_key, "POST", f"/keys/{made['id']}/rotate", json={"grace_seconds": 0}
    ).json()
    call(registry, rotated["key"], "DELETE", f"/keys/{rotated['id']}")
    time.sleep(0.5)
    events = [
        json.loads(line)
        for line in registry.log().splitlines()
        if line.startswith('{"time"') and "action" in line
    ]
    mine = {(e["action"], e["actor_key_id"], e["key_id"]) for e in events if e.get("user") == made["user"]}
    assert mine == {
        ("key.create", admin_id, made["id"]),
        ("key.rotate", admin_id, rotated["id"]),
        ("key.revoke", rotated["id"], rotated["id"]),
    }


def test_the_openapi_document_is_served_behind_authentication(registry: Registry) -> None:
    assert httpx.get(f"{registry.url}{API}/openapi.json").status_code == 401
    document = call(registry, registry.admin_key, "GET", "/openapi.json").json()
    assert set(document["paths"]) == {
        "/keys",
        "/keys/{key_id}",
        "/keys/{key_id}/rotate",
        "/whoami",
        "/server",
    }
    assert set(document["paths"]["/keys"]) == {"get", "post"}


def test_the_server_says_what_it_is_to_any_key(registry: Registry) -> None:
    reader = created(registry, registry.admin_key, user=unique("tenant"), scope="read")["key"]
    answer = call(registry, reader, "GET", "/server")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "backend": "sqlite",
        "scan_policy": "block",
        "replica": answer.headers["x-hokusai-replica"],
    }
    assert httpx.get(f"{registry.url}{API}/server").status_code == 401


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    env = {"HOKUSAI_REGISTRY_MAX_KEY_LIFETIME_DAYS": "30", "HOKUSAI_REGISTRY_EXPIRE_UNUSED_DAYS": "90"}
    with run_registry(tmp_path_factory.mktemp("limited"), env=env) as running:
        yield running


def test_the_operators_maximum_lifetime_is_enforced_on_the_api_and_the_cli(limited: Registry) -> None:
    too_long = create(limited, limited.admin_key, expires_in_days=31)
    assert too_long.status_code == 400 and "maximum key lifetime of 30 days" in too_long.json()["message"]
    default = created(limited, limited.admin_key, user=unique("tenant"))
    me = call(limited, default["key"], "GET", "/whoami").json()
    assert 29.9 * 86400 < me["expires_in_seconds"] <= 30 * 86400
    cli = limited.cli("keys", "create", "--user", unique("tenant"), "--expires-in-days", "31", check=False)
    assert cli.returncode != 0 and "maximum key lifetime" in cli.stderr


def test_a_key_unused_for_the_limit_stops_working(limited: Registry) -> None:
    import sqlalchemy as sa

    key = created(limited, limited.admin_key, user=unique("idle"))
    engine = sa.create_engine(f"sqlite:///{limited.data_dir / 'auth.db'}")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE hokusai_api_keys SET created_at = '2026-01-01 00:00:00.000000' WHERE id = :id"),
            {"id": key["id"]},
        )
    engine.dispose()
    refused = httpx.get(f"{limited.url}{API}/whoami", headers={"Authorization": f"Bearer {key['key']}"})
    assert refused.status_code == 401 and "not used for 90 days" in refused.json()["message"]


def test_on_postgresql_keys_are_created_rotated_and_revoked(tmp_path: Path) -> None:
    with run_postgres() as uri, run_registry(tmp_path, "--backend-store-uri", uri) as registry:
        user = unique("pg")
        first = created(registry, registry.admin_key, user=user, name="ci")
        assert create(registry, registry.admin_key, user=user, name="ci").status_code == 409
        rotated = call(
            registry, first["key"], "POST", f"/keys/{first['id']}/rotate", json={"grace_seconds": 0}
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()
        refused_within(registry, first["key"], 5)
        assert fresh_status(registry, new["key"]) == 200
        assert call(registry, new["key"], "DELETE", f"/keys/{new['id']}").status_code == 200
        refused_within(registry, new["key"], 5)
