"""The `hokusai-registry` command: keys for scripts, and `up` refusing configurations that break uploads."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

from tests.services import CLI, Registry, run_registry


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_keys_create_prints_the_key_alone(registry: Registry) -> None:
    done = registry.cli("keys", "create", "--user", "script-user")
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("hk_live_")
    assert len(done.stdout.strip()) >= len("hk_live_") + 43  # 32 random bytes
    assert "not shown again" in done.stderr


def test_keys_create_json_and_list_never_show_the_key(registry: Registry) -> None:
    created = json.loads(
        registry.cli(
            "keys", "create", "--user", "json-user", "--scope", "read", "--expires-in-days", "7", "--json"
        ).stdout
    )
    assert set(created) == {  # the created-key object of the key API (tests/e2e/test_keys_cli.py)
        "id", "name", "key", "user", "scope", "created_at", "expires_at", "revoked", "revoked_at",
        "last_used_at", "replaced_by",
    }  # fmt: skip
    assert created["user"] == "json-user" and created["scope"] == "read" and created["expires_at"]
    listed = json.loads(registry.cli("keys", "list", "--user", "json-user", "--json").stdout)
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    assert created["key"] not in registry.cli("keys", "list", "--json").stdout
    assert listed[0]["revoked"] is False


def test_version_is_the_package_metadata_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == importlib.metadata.version("hokusai-registry") + "\n"


def test_help_is_for_users() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    assert "MLflow model registry" in done.stdout and "--version" in done.stdout
    assert "parse, call, print" not in done.stdout


def _key_list_env(registry: Registry, **extra: str) -> dict[str, str]:
    """The registry's environment without anything that makes rich treat a pipe as a terminal."""
    env = {k: v for k, v in registry.env.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS")}
    return env | extra


def _create_keys(registry: Registry, prefix: str) -> list[str]:
    ids = []
    for user in (f"{prefix}-a", f"{prefix}-with-a-user-name-longer-than-the-terminal-is-wide"):
        done = registry.cli("keys", "create", "--user", user, "--expires-in-days", "3", "--json")
        ids.append(json.loads(done.stdout)["id"])
    return ids


def test_keys_list_keeps_ids_whole_in_a_narrow_terminal(registry: Registry) -> None:
    ids = _create_keys(registry, "narrow")
    done = subprocess.run(
        [CLI, "keys", "list", "--data-dir", str(registry.data_dir)],
        env=_key_list_env(registry, TTY_COMPATIBLE="1", NO_COLOR="1", COLUMNS="40"),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert "\t" not in text and "─" in text  # a table (its header rule), not the piped form
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 40
    words = text.split()
    for key_id in ids:
        assert key_id in words, text  # whole, on one line, so it can be pasted into `keys revoke`


def test_keys_list_piped_is_tab_separated_with_whole_ids(registry: Registry) -> None:
    ids = _create_keys(registry, "piped")
    done = subprocess.run(
        [CLI, "keys", "list", "--data-dir", str(registry.data_dir)],
        env=_key_list_env(registry, COLUMNS="40"),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "\x1b" not in done.stdout
    header, *rows = list(csv.reader(done.stdout.splitlines(), delimiter="\t"))
    assert header == ["id", "user", "scope", "created", "expires", "revoked", "last used", "name"]
    assert all(len(row) == len(header) for row in rows), rows
    listed = json.loads(registry.cli("keys", "list", "--json").stdout)
    assert [row[0] for row in rows] == [key["id"] for key in listed]
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    for key_id in ids:
        assert by_id[key_id]["scope"] == "write" and by_id[key_id]["revoked"] == "-"
        assert by_id[key_id]["expires"].endswith("+00:00")  # full ISO 8601 for scripts
        assert by_id[key_id]["name"] == key_id  # an unnamed key is named by its id


def test_default_scope_is_write(registry: Registry) -> None:
    created = json.loads(registry.cli("keys", "create", "--user", "default-scope", "--json").stdout)
    assert created["scope"] == "write"


def test_bad_key_requests_exit_2_and_create_nothing(registry: Registry) -> None:
    before = json.loads(registry.cli("keys", "list", "--json").stdout)
    for args in (
        ["--user", "bad-scope", "--scope", "owner"],
        ["--user", "bad-expiry", "--expires-in-days", "-1"],
    ):
        done = registry.cli("keys", "create", *args, check=False)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
    assert (
        "scope: must be one of read, write, admin"
        in registry.cli("keys", "create", "--user", "x", "--scope", "owner", check=False).stderr
    )
    assert json.loads(registry.cli("keys", "list", "--json").stdout) == before


def test_revoke_unknown_key_exits_1(registry: Registry) -> None:
    done = registry.cli("keys", "revoke", "k_doesnotexist", check=False)
    assert done.returncode == 1 and "no key with id" in done.stderr


def test_keys_without_a_server_secret_say_what_to_do(tmp_path: Path) -> None:
    done = run_cli("keys", "list", "--data-dir", str(tmp_path / "empty"))
    assert done.returncode == 2
    assert "run `hokusai-registry up` once" in done.stderr


def test_up_refuses_an_artifact_root_that_bypasses_the_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = run_cli("up", "--data-dir", str(data_dir), "--default-artifact-root", "s3://bucket/path")
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "bypass the server" in done.stderr
    assert not data_dir.exists()


def test_up_refuses_to_turn_artifact_serving_off(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = run_cli("up", "--data-dir", str(data_dir), env={"HOKUSAI_REGISTRY_SERVE_ARTIFACTS": "false"})
    assert done.returncode == 2
    assert "artifact serving cannot be turned off" in done.stderr
    assert not data_dir.exists()


def test_up_refuses_trivial_secrets_and_clear_text_key_checks(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for env, expected in [
        ({"HOKUSAI_REGISTRY_KEY_HASH_SECRET": ""}, "key_hash_secret: Value error, must be at least 16"),
        ({"HOKUSAI_REGISTRY_ADMIN_PASSWORD": "hunter2"}, "admin_password: Value error, must be at least 16"),
        ({"HOKUSAI_REGISTRY_AUTH_URL": "http://auth.example.com"}, "would send every API key in clear"),
    ]:
        done = run_cli("up", "--data-dir", str(data_dir), env=env)
        assert done.returncode == 2, done.stderr
        assert expected in " ".join(done.stderr.split()), done.stderr
        assert "hunter2" not in done.stderr  # a secret's value is never echoed
        assert not data_dir.exists()


def test_secrets_are_private_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    with run_registry(tmp_path, workers=2) as registry:
        for name in ("secrets.json", "auth.ini"):
            assert stat.S_IMODE((registry.data_dir / name).stat().st_mode) == 0o600, name
        group = registry.proc.pid
        members = _processes_in_group(group)
        assert len(members) >= 3, members  # mlflow server, uvicorn supervisor, 2 workers
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in members]
        assert not [c for c in commands if b"huey" in c], "MLflow's job runner should be off by default"
        os.kill(registry.proc.pid, signal.SIGTERM)  # what ECS or `docker stop` sends the entrypoint
        deadline = time.monotonic() + 30
        while _processes_in_group(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _processes_in_group(group), "workers outlived SIGTERM"
        assert registry.proc.wait(5) is not None


def _processes_in_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids
