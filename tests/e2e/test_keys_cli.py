"""`keys ... --url` against a real registry's key API, with the key only ever in the environment; `keys`
on the database answering the same shapes; and verify and register saying which key they run as."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.services import CLI, Registry, free_port

KEY_FIELDS = {
    "id", "name", "user", "scope", "created_at", "expires_at", "revoked", "revoked_at", "last_used_at",
    "replaced_by",
}  # fmt: skip
SEARCH = "/api/2.0/mlflow/experiments/search"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def keys_cli(*args: str, key: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the key in HOKUSAI_API_KEY only (nothing inherited that could carry another)."""
    drop = {"HOKUSAI_API_KEY", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI"}
    base = {k: v for k, v in os.environ.items() if k not in drop}
    extra = env | ({"HOKUSAI_API_KEY": key} if key else {})
    return subprocess.run([CLI, *args], env=base | extra, capture_output=True, text=True, timeout=120)


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    return done


def status_with(registry: Registry, key: str) -> int:
    with registry.client(key) as http:
        return http.post(SEARCH, json={"max_results": 1}).status_code


def refused_within(registry: Registry, key: str, seconds: float) -> float:
    """Seconds until ``key`` gets 401; fails if that takes longer than ``seconds``."""
    started = time.monotonic()
    while (status := status_with(registry, key)) != 401:
        assert status == 200, status
        assert time.monotonic() - started < seconds, f"key still accepted after {seconds}s"
        time.sleep(0.1)
    return time.monotonic() - started


def cli_key(registry: Registry, user: str, expires_in_days: float) -> str:
    """A key made by `keys create` on the database: unnamed, so the CLI names it by its id."""
    args = ("keys", "create", "--user", user, "--expires-in-days", str(expires_in_days))
    return registry.cli(*args).stdout.strip()


def create_via_url(registry: Registry, key: str, *args: str) -> dict[str, Any]:
    done = ok(keys_cli("keys", "create", "--url", registry.url, "--json", *args, key=key))
    created: dict[str, Any] = json.loads(done.stdout)
    return created


def test_create_with_url_prints_a_key_that_works(registry: Registry) -> None:
    user = unique("url-create")
    done = ok(
        keys_cli(
            "keys", "create", "--url", registry.url, "--user", user, "--name", "ci", key=registry.admin_key
        )
    )
    key = done.stdout.strip()
    assert done.stdout.count("\n") == 1 and key.startswith("hk_live_")
    assert f"for user '{user}' with scope 'write'; it is not shown again" in done.stderr
    assert status_with(registry, key) == 200
    who = json.loads(ok(keys_cli("keys", "whoami", "--url", registry.url, "--json", key=key)).stdout)
    assert (who["user"], who["name"], who["scope"], who["source"]) == (user, "ci", "write", "local")
    # the key it made is a key of that user: listed for them, by the database too
    listed = json.loads(registry.cli("keys", "list", "--user", user, "--json").stdout)
    assert [(k["id"], k["name"]) for k in listed] == [(who["id"], "ci")]


def test_create_json_has_the_same_keys_with_and_without_url(registry: Registry) -> None:
    on_db = json.loads(registry.cli("keys", "create", "--user", unique("db-json"), "--json").stdout)
    named = json.loads(
        registry.cli("keys", "create", "--user", unique("db-json"), "--name", "n1", "--json").stdout
    )
    via_url = create_via_url(registry, registry.admin_key, "--user", unique("url-json"), "--name", "n1")
    assert set(on_db) == set(via_url) == set(named) == KEY_FIELDS | {"key"}
    assert named["name"] == via_url["name"] == "n1" and on_db["name"] == on_db["id"]
    # and `keys list --json` items are the same key objects either way
    on_db_list = json.loads(registry.cli("keys", "list", "--user", via_url["user"], "--json").stdout)
    url_list = json.loads(
        ok(
            keys_cli(
                "keys",
                "list",
                "--url",
                registry.url,
                "--user",
                via_url["user"],
                "--json",
                key=registry.admin_key,
            )
        ).stdout
    )
    assert on_db_list == url_list and set(url_list[0]) == KEY_FIELDS


def test_list_with_url_shows_a_non_admin_only_its_own_keys(registry: Registry) -> None:
    mine, theirs = unique("lister"), unique("other")
    my_key = registry.create_key(mine)
    second = create_via_url(registry, my_key, "--name", "second")  # a write key makes its own user's keys
    registry.create_key(theirs)
    listed = json.loads(ok(keys_cli("keys", "list", "--url", registry.url, "--json", key=my_key)).stdout)
    assert {k["user"] for k in listed} == {mine} and len(listed) == 2
    assert second["id"] in {k["id"] for k in listed}
    assert "key" not in listed[0] and my_key not in json.dumps(listed)
    everyone = json.loads(registry.cli("keys", "list", "--json").stdout)
    assert theirs in {k["user"] for k in everyone}  # the other user's key exists; it is just not shown
    # piped, as on the database: tab-separated with a header
    lines = ok(keys_cli("keys", "list", "--url", registry.url, key=my_key)).stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["id", "user", "scope"] and len(lines) == 3
    refused = keys_cli("keys", "list", "--url", registry.url, "--user", theirs, key=my_key)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: API key ") and "(HTTP 403 PERMISSION_DENIED)" in refused.stderr


def test_revoke_with_url_is_refused_within_5_seconds(registry: Registry) -> None:
    user = unique("revoked")
    doomed = registry.create_key(user)
    keeper = registry.create_key(user)
    doomed_id = json.loads(
        ok(keys_cli("keys", "whoami", "--url", registry.url, "--json", key=doomed)).stdout
    )["id"]
    assert status_with(registry, doomed) == 200  # cached as good by now, which revocation must undo
    done = ok(keys_cli("keys", "revoke", doomed_id, "--url", registry.url, key=keeper))
    assert f"revoked key {doomed_id} of user '{user}'" in done.stderr
    print(f"revoked key refused after {refused_within(registry, doomed, 5.0):.1f}s")
    assert status_with(registry, keeper) == 200
    again = keys_cli("keys", "revoke", "k_000000000000", "--url", registry.url, key=keeper)
    assert again.returncode == 1
    assert (
        "error: no key with id 'k_000000000000'" in again.stderr and "RESOURCE_DOES_NOT_EXIST" in again.stderr
    )


def test_rotate_with_url_gives_a_working_key_and_the_old_one_a_grace_period(registry: Registry) -> None:
    user = unique("rotator")
    old = registry.create_key(user)
    old_id = json.loads(ok(keys_cli("keys", "whoami", "--url", registry.url, "--json", key=old)).stdout)["id"]
    # no KEY_ID: the key the command runs with
    done = ok(keys_cli("keys", "rotate", "--url", registry.url, "--grace-seconds", "600", "--json", key=old))
    rotated = json.loads(done.stdout)
    assert set(rotated) == KEY_FIELDS | {"key", "replaces", "old_key_expires_at"}
    assert rotated["replaces"] == old_id and rotated["user"] == user and rotated["key"] != old
    assert (
        f"rotated key {old_id} to key {rotated['id']}" in done.stderr and "keeps working until" in done.stderr
    )
    assert status_with(registry, rotated["key"]) == 200
    assert status_with(registry, old) == 200  # in its grace period
    # the old key, asked who it is, is warned about: it stops working, and the new key fixes that
    who = ok(keys_cli("keys", "whoami", "--url", registry.url, key=old))
    assert "warning: key " + old_id + " was rotated: this old key stops working in 9 minutes" in who.stderr
    assert "new key" in who.stderr
    new_who = json.loads(
        ok(keys_cli("keys", "whoami", "--url", registry.url, "--json", key=rotated["key"])).stdout
    )
    assert new_who["id"] == rotated["id"] and new_who["grace_seconds_left"] is None
    # an explicit id, no grace: the replaced key stops within 5 seconds
    newer = json.loads(
        ok(
            keys_cli(
                "keys",
                "rotate",
                rotated["id"],
                "--grace-seconds",
                "0",
                "--url",
                registry.url,
                "--json",
                key=registry.admin_key,
            )
        ).stdout
    )
    refused_within(registry, rotated["key"], 5.0)
    assert status_with(registry, newer["key"]) == 200
    twice = keys_cli("keys", "rotate", rotated["id"], "--url", registry.url, key=registry.admin_key)
    assert twice.returncode == 1 and "already rotated" in twice.stderr and "HTTP 409" in twice.stderr


def test_rotate_on_the_database_gives_a_working_key(registry: Registry) -> None:
    user = unique("db-rotator")
    created = json.loads(registry.cli("keys", "create", "--user", user, "--name", "job", "--json").stdout)
    done = registry.cli("keys", "rotate", created["id"], "--grace-seconds", "0", "--json")
    rotated = json.loads(done.stdout)
    assert (rotated["replaces"], rotated["name"], rotated["user"]) == (created["id"], "job", user)
    assert set(rotated) == KEY_FIELDS | {"key", "replaces", "old_key_expires_at"}
    refused_within(registry, created["key"], 5.0)
    assert status_with(registry, rotated["key"]) == 200
    plain = registry.cli("keys", "rotate", rotated["id"])  # human output: the key alone on stdout
    assert plain.stdout.count("\n") == 1 and plain.stdout.startswith("hk_live_")
    assert "the old key keeps working until" in plain.stderr.lower()
    without_id = registry.cli("keys", "rotate", check=False)
    assert without_id.returncode == 2 and "required without --url" in without_id.stderr


# `keys list`, `revoke` and `rotate` on the database, as the CLI runs them, reporting what was imported.
WITHOUT_MLFLOW = """
import sys
from hokusai_registry.cli import app
sys.argv = ["hokusai-registry", *sys.argv[1:]]
try:
    app()
except SystemExit as done:
    print("exit", done.code, "mlflow" in sys.modules, file=sys.stderr)
"""


def test_listing_revoking_and_rotating_on_the_database_import_no_mlflow(registry: Registry) -> None:
    """An operator's `keys list` took 4.5 s, 3 of it importing MLflow for a store it did not use."""
    key_id = json.loads(registry.cli("keys", "create", "--user", unique("quick"), "--json").stdout)["id"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", WITHOUT_MLFLOW, *args, "--data-dir", str(registry.data_dir)]
        return subprocess.run(command, env=registry.env, capture_output=True, text=True, timeout=120)

    listed = run("keys", "list")
    assert key_id in listed.stdout and "exit 0 False" in listed.stderr, listed.stderr
    rotated = run("keys", "rotate", key_id, "--json")
    assert "exit 0 False" in rotated.stderr, rotated.stderr
    revoked = run("keys", "revoke", json.loads(rotated.stdout)["id"])
    assert "exit 0 False" in revoked.stderr, revoked.stderr


def test_whoami_prints_id_user_and_scope_and_warns_of_expiry(registry: Registry) -> None:
    user = unique("whoami")
    key = registry.create_key(user, scope="read", expires_in_days=3)
    # the URL from MLFLOW_TRACKING_URI, as a third party has it set
    done = ok(keys_cli("keys", "whoami", key=key, MLFLOW_TRACKING_URI=registry.url))
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines())
    listed = json.loads(registry.cli("keys", "list", "--user", user, "--json").stdout)
    assert fields["id"] == listed[0]["id"] and fields["user"] == user and fields["scope"] == "read"
    assert fields["expires"].endswith(" UTC") and fields["source"] == "local"
    assert f"warning: key {fields['id']} expires in 2 days" in done.stderr
    assert "keys rotate" in done.stderr
    no_url = keys_cli("keys", "whoami", key=key)
    assert no_url.returncode == 2 and "no registry URL" in no_url.stderr


def test_the_key_is_taken_from_the_environment_never_from_argv(registry: Registry) -> None:
    key = registry.create_key(unique("argv"))
    for args in (["keys", "list"], ["keys", "whoami"], ["keys", "create", "--name", "x"], ["keys", "rotate"]):
        given = keys_cli(*args, "--url", registry.url, "--api-key", key)
        assert given.returncode == 2 and "No such option: --api-key" in given.stderr, given.stderr
        assert key not in given.stdout + given.stderr
    as_id = keys_cli("keys", "revoke", key, "--url", registry.url, key=key)
    assert as_id.returncode == 2 and "that is a key, not a key id" in as_id.stderr
    assert key not in as_id.stdout + as_id.stderr
    assert status_with(registry, key) == 200  # nothing was revoked
    missing = keys_cli("keys", "list", "--url", registry.url)
    assert missing.returncode == 2 and "set HOKUSAI_API_KEY (or MLFLOW_TRACKING_TOKEN)" in missing.stderr
    assert "--api-key" not in missing.stderr
    via_mlflow = ok(keys_cli("keys", "whoami", "--url", registry.url, "--json", MLFLOW_TRACKING_TOKEN=key))
    assert json.loads(via_mlflow.stdout)["user"].startswith("argv-")


def test_url_mode_errors_are_one_line_and_usage_errors_exit_2(registry: Registry) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    down = keys_cli("keys", "list", "--url", url, key="hk_live_whatever")
    assert down.returncode == 1 and down.stderr.startswith(f"error: could not reach {url}: ConnectError")
    no_name = keys_cli("keys", "create", "--url", registry.url, key=registry.admin_key)
    assert no_name.returncode == 2 and "--name" in no_name.stderr and "required with --url" in no_name.stderr
    both = keys_cli("keys", "list", "--url", registry.url, "--data-dir", str(registry.data_dir), key="k")
    assert both.returncode == 2 and "pass one" in both.stderr
    bad = keys_cli("keys", "create", "--url", registry.url, "--name", "has space", key=registry.admin_key)
    assert (
        bad.returncode == 1
        and bad.stderr.startswith("error: name: must be 1 to 64")
        and "HTTP 400" in bad.stderr
    )


def test_verify_names_the_key_and_warns_when_it_expires_soon(registry: Registry, tmp_path: Path) -> None:
    user = unique("verify-expiring")
    key = cli_key(registry, user, expires_in_days=2)  # unnamed, as the CLI makes it
    report = tmp_path / "report.json"
    quick = ("--skip-registration", "--large-mb", "0")
    done = keys_cli(
        "verify",
        "--url",
        registry.url,
        "--json",
        str(report),
        "--markdown",
        str(tmp_path / "r.md"),
        *quick,
        key=key,
    )
    assert done.returncode == 0, done.stderr  # a warning, not a failure
    auth = {c["id"]: c for c in json.loads(report.read_text())["checks"]}["authentication"]
    assert auth["status"] == "warn", auth
    assert f"(user {user}, scope write)" in auth["detail"] and "as key k_" in auth["detail"]
    assert auth["diagnosis"].startswith("key: key k_") and "expires in 47 hours" in auth["diagnosis"]
    assert "keys rotate" in auth["fix"]
    assert "keys rotate" in (tmp_path / "r.md").read_text()
    # a key without expiry: the same check passes, still naming the key
    calm = registry.create_key(unique("verify-calm"))
    ok(keys_cli("verify", "--url", registry.url, "--json", str(report), *quick, key=calm))
    auth = {c["id"]: c for c in json.loads(report.read_text())["checks"]}["authentication"]
    assert auth["status"] == "pass" and "as key k_" in auth["detail"], auth


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.arange(20.0).reshape(10, 2)
    path = tmp_path_factory.mktemp("models") / "linear"
    mlflow.sklearn.save_model(LinearRegression().fit(x, x @ [1.0, 2.0]), str(path))
    return path


def test_register_says_which_key_it_runs_as(registry: Registry, model_dir: Path) -> None:
    user = unique("registrant")
    key = cli_key(registry, user, expires_in_days=1)  # unnamed, as the CLI makes it
    name = unique("keyed-model")
    done = keys_cli(
        "register",
        str(model_dir),
        "--name",
        name,
        "--token-id",
        "KEY-1",
        "--metric",
        "r2",
        "--baseline",
        "0.9",
        "--url",
        registry.url,
        "--json",
        key=key,
    )
    assert done.returncode == 0, done.stderr
    identity = json.loads(done.stdout)["identity"]
    assert (identity["user"], identity["scope"], identity["source"]) == (user, "write", "local")
    assert identity["warning"].startswith(f"key {identity['id']} expires in 23 hours")
    lines = done.stderr.splitlines()
    said = [
        i
        for i, line in enumerate(lines)
        if line == f"registering as key {identity['id']} (user {user}, scope write)"
    ]
    assert len(said) == 1, done.stderr
    assert lines[said[0] + 1].startswith(f"warning: key {identity['id']} expires in 23 hours")
    assert not any("upload" in line for line in lines[: said[0]]), "said at the start, before any upload"
