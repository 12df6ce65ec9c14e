"""The `hokusai-registry` command: keys for scripts, and `up` refusing configurations that break uploads."""

from __future__ import annotations

import json
import os
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
    assert set(created) == {"id", "key", "user", "scope", "expires_at"}
    assert created["user"] == "json-user" and created["scope"] == "read" and created["expires_at"]
    listed = json.loads(registry.cli("keys", "list", "--user", "json-user", "--json").stdout)
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    assert created["key"] not in registry.cli("keys", "list", "--json").stdout
    assert listed[0]["revoked"] is False


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
        "scope must be one of read, write, admin"
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
