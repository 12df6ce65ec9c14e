"""`up` with HOKUSAI_REGISTRY_LOG_FORMAT=json: every line its server writes is one JSON object.

Except the lines `up` and `mlflow server`'s own process print before uvicorn starts (the connection
help, MLflow's click messages and store set-up, one import warning): they are listed exactly here, so
a new raw line fails the test. No key and no secret appears in any line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.services import CLI, Registry, run_registry

API = "/api/2.0/mlflow"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")  # audit.py's
MLFLOW_TEXT = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.store\.db\.utils: "
# Printed before uvicorn starts, in this order, by `up` (the connection help) and by `mlflow server`'s
# process (click.echo, its store set-up on a fresh database, importing the app to see it is a factory).
BEFORE_UVICORN = [
    r"hokusai-registry: serving http://127\.0\.0\.1:\d+ \(data in .+\)",
    r"First admin key k_\w+ \(shown once; only its hash is stored\):",
    r"",
    r"  export MLFLOW_TRACKING_URI=http://127\.0\.0\.1:\d+",
    r"  export MLFLOW_TRACKING_TOKEN=hk_live_\S+",
    r"",
    r"Registry store URI not provided\. Using backend store URI\.",
    MLFLOW_TEXT + r"Creating initial MLflow database tables\.\.\.",
    MLFLOW_TEXT + r"Updating database tables",
    r"\[MLflow\] Security middleware enabled with default settings \(localhost-only\)\. .+",
    r".+/mlflow/server/fastapi_app\.py:\d+: StarletteDeprecationWarning: .+",
    r"  from starlette\.middleware\.wsgi import .+",
]
AUDIT_FIELDS = ["time", "key_id", "user", "method", "path", "status", "duration_ms"]


def json_object(line: str) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def exercise(registry: Registry) -> list[str]:
    """A read (200), a refusal (401), writes with two keys; returns every key sent."""
    write_key = registry.create_key("log-writer")
    wrong_key = "hk_live_" + "x" * 43
    with registry.client(registry.admin_key) as admin:
        assert admin.get(f"{API}/experiments/search", params={"max_results": 5}).status_code == 200
        assert admin.post(f"{API}/experiments/create", json={"name": "logs-admin"}).status_code == 200
    with registry.client(wrong_key) as wrong:
        assert wrong.get(f"{API}/experiments/search").status_code == 401
    with registry.client(None) as writer:
        created = writer.post(
            f"{API}/experiments/create", json={"name": "logs-writer"}, headers={"X-API-Key": write_key}
        )
        assert created.status_code == 200
    return [registry.admin_key, write_key, wrong_key]


def test_json_logs_are_one_object_per_line_without_keys(tmp_path: Path) -> None:
    with run_registry(tmp_path, env={"HOKUSAI_REGISTRY_LOG_FORMAT": "json"}) as registry:
        keys = exercise(registry)
    log = registry.log()  # after the server stopped: its shutdown lines are in
    lines = log.splitlines()
    entries = [json_object(line) for line in lines]

    raw = [line for line, entry in zip(lines, entries, strict=True) if entry is None]
    assert len(raw) == len(BEFORE_UVICORN), "\n".join(raw)
    for line, pattern in zip(raw, BEFORE_UVICORN, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)
    first_json = next(i for i, entry in enumerate(entries) if entry is not None)
    assert all(entry is not None for entry in entries[first_json:]), "a raw line after uvicorn started"

    objects = [entry for entry in entries if entry is not None]
    assert all(TIME.fullmatch(str(entry["time"])) for entry in objects)
    audit = [entry for entry in objects if "key_id" in entry and "action" not in entry]  # requests
    others = [entry for entry in objects if "key_id" not in entry]
    assert all(list(entry) == AUDIT_FIELDS for entry in audit), audit  # as they were, never wrapped
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in others), others
    assert {(e["method"], e["path"], e["status"], e["user"]) for e in audit} >= {
        ("POST", f"{API}/experiments/create", 200, "admin"),
        ("GET", f"{API}/experiments/search", 401, None),
        ("POST", f"{API}/experiments/create", 200, "log-writer"),
    }

    access = [entry for entry in others if entry["logger"] == "uvicorn.access"]
    assert all({"method", "path", "status", "client"} <= set(entry) for entry in access)
    assert all("duration_ms" not in entry for entry in access)  # uvicorn does not measure it
    assert {(e["method"], e["path"], e["status"]) for e in access} >= {
        ("GET", "/health", 200),
        ("GET", f"{API}/experiments/search", 200),
        ("GET", f"{API}/experiments/search", 401),
        ("POST", f"{API}/experiments/create", 200),
    }
    messages = [entry["message"] for entry in others if entry["logger"] == "uvicorn.error"]
    assert sum(str(m).startswith("Started server process") for m in messages) == 2  # both workers
    assert sum(str(m).startswith("Finished server process") for m in messages) == 2
    assert any(entry["logger"] == "mlflow.server.auth" for entry in others)  # MLflow's own lines

    secrets = json.loads((registry.data_dir / "secrets.json").read_text()).values()
    for secret in [*keys, *secrets]:
        where = [i for i, line in enumerate(lines) if secret in line]
        assert where == ([4] if secret == registry.admin_key else []), secret[:12]  # only `up`'s help


def test_up_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        [CLI, "up", "--data-dir", str(data_dir)],
        env={**os.environ, "HOKUSAI_REGISTRY_LOG_FORMAT": "yaml"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "refusing to start: log_format: Input should be 'text' or 'json'" in done.stderr
    assert not data_dir.exists()
