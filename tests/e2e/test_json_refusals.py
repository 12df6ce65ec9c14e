"""Every refusal is JSON with an MLflow error_code, MLflow's own included, and says what to do.

Against the shared session registry: user and model names are unique per test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.services import Registry

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts"

# The first thing a new tenant tries: a run without mlflow.set_experiment, with the stock client.
START_RUN_WITHOUT_EXPERIMENT = """
import json
import mlflow
from mlflow.exceptions import MlflowException

try:
    with mlflow.start_run():
        mlflow.log_param("p", 1)
except MlflowException as exc:
    print(json.dumps({"refused": True, "message": exc.message}))
else:
    print(json.dumps({"refused": False, "message": ""}))
"""


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def key_id_of(registry: Registry, user: str) -> str:
    return str(json.loads(registry.cli("keys", "list", "--user", user, "--json").stdout)[0]["id"])


def assert_json_refusal(response: httpx.Response, status: int, error_code: str) -> str:
    """The refusal's status, a JSON body with ``error_code`` and its length right; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert body["error_code"] == error_code, body
    return str(body["message"])


def test_a_first_run_in_the_default_experiment_says_to_set_an_experiment(
    registry: Registry, tmp_path: Path
) -> None:
    key = registry.create_key(unique("first-run"))
    done = subprocess.run(
        [sys.executable, "-c", START_RUN_WITHOUT_EXPERIMENT],
        env=registry.third_party_env(key),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["refused"], "a tenant created a run in the shared Default experiment"
    message = outcome["message"]
    assert message.startswith("PERMISSION_DENIED: "), message
    assert "Default experiment (id 0)" in message and "mlflow.set_experiment(" in message, message
    assert key not in message


def test_reading_another_tenants_model_is_json_naming_the_key_id_not_the_key(registry: Registry) -> None:
    owner = registry.client(registry.create_key(unique("owner")))
    model = unique("json-refusal-model")
    experiment_id = owner.post(f"{API}/experiments/create", json={"name": unique("json-refusal")}).json()[
        "experiment_id"
    ]
    run_id = owner.post(f"{API}/runs/create", json={"experiment_id": experiment_id}).json()["run"]["info"][
        "run_id"
    ]
    artifact = f"{experiment_id}/{run_id}/artifacts/notes.txt"
    assert owner.put(f"{ARTIFACTS}/artifacts/{artifact}", content=b"owner's").status_code == 200
    assert owner.post(f"{API}/registered-models/create", json={"name": model}).status_code == 200

    reader_name = unique("reader")
    reader_key = registry.create_key(reader_name)
    reader_key_id = key_id_of(registry, reader_name)
    reader = registry.client(reader_key)

    # MLflow's Flask-side 403 and its FastAPI-side one (the native artifact route, which has no
    # security headers of MLflow's to keep)
    for path, params, kept in (
        (f"{API}/registered-models/get", {"name": model}, ("x-content-type-options", "vary")),
        (f"{ARTIFACTS}/artifacts/{artifact}", {}, ()),
    ):
        response = reader.get(path, params=params)
        message = assert_json_refusal(response, 403, "PERMISSION_DENIED")
        assert f"user '{reader_name}' (API key {reader_key_id})" in message, message
        assert f"GET {path}" in message and "owner or an admin can grant" in message, message
        assert reader_key not in response.text
        assert all(name in response.headers for name in kept), response.headers

    # the audit line still has the status the client got
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in registry.log().splitlines() if line.startswith('{"time"')]
        requests = [a for a in lines if "action" not in a]  # not key-management actions
        if any(a["key_id"] == reader_key_id and a["status"] == 403 for a in requests):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no audit line with status 403 for the refused read")


def test_an_unknown_path_is_json_404(registry: Registry) -> None:
    admin = registry.client(registry.admin_key)  # a non-admin gets MLflow's fail-closed 403 instead
    response = admin.get(f"/{unique('no-such-route')}/x")
    message = assert_json_refusal(response, 404, "ENDPOINT_NOT_FOUND")
    assert "no-such-route" in message
    head = admin.head(f"/{unique('no-such-route')}/x")  # HEAD answers carry no body and are left alone
    assert head.status_code == 404 and head.content == b""


def test_a_401_stays_json_with_www_authenticate(registry: Registry) -> None:
    response = httpx.get(f"{registry.url}{API}/registered-models/get", params={"name": "x"})
    message = assert_json_refusal(response, 401, "UNAUTHENTICATED")
    assert "missing API key" in message
    assert response.headers["www-authenticate"] == 'Basic realm="hokusai-registry"'
