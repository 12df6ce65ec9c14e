"""Route templates as labels, artifact byte counting, and the families an operator's alarms rely on."""

from __future__ import annotations

import anyio
import pytest
from mlflow.server import app as mlflow_flask_app
from starlette.routing import Route

from hokusai_registry.server import metrics
from hokusai_registry.server.context import Principal
from hokusai_registry.server.credentials import Refusal, check_scope


@pytest.fixture(scope="module")
def names() -> metrics.RouteNames:
    return metrics.RouteNames(mlflow_flask_app.url_map)


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", "/api/2.0/mlflow/registered-models/search", "/api/2.0/mlflow/registered-models/search"),
        ("POST", "/ajax-api/2.0/mlflow/runs/create", "/ajax-api/2.0/mlflow/runs/create"),
        ("GET", "/get-artifact", "/get-artifact"),
        ("GET", "/api/2.0/mlflow/no-such-route", "other"),
        ("DELETE", "/api/2.0/mlflow/registered-models/search", "other"),  # method not allowed
    ],
)
def test_a_flask_request_is_named_by_its_rule(
    names: metrics.RouteNames, method: str, path: str, template: str
) -> None:
    assert names({"type": "http", "method": method, "path": path}) == template


def test_a_fastapi_request_is_named_by_its_template_under_its_mount(names: metrics.RouteNames) -> None:
    route = Route("/keys/{key_id}", endpoint=lambda request: None)
    scope = {"type": "http", "method": "DELETE", "path": "/api/hokusai/v1/keys/k_1", "route": route}
    assert names(scope | {"root_path": "/api/hokusai/v1"}) == "/api/hokusai/v1/keys/{key_id}"


def test_artifact_paths_never_become_labels(names: metrics.RouteNames) -> None:
    """However many distinct paths arrive, the label set stays the route map's."""
    seen = {names({"type": "http", "method": "GET", "path": f"/api/2.0/mlflow/x{i}/y"}) for i in range(300)}
    assert seen == {"other"}


def test_counting_bytes_adds_request_and_response_bodies() -> None:
    up, down = metrics.ARTIFACT_BYTES.labels("up"), metrics.ARTIFACT_BYTES.labels("down")
    before = (up._value.get(), down._value.get())
    incoming = [
        {"type": "http.request", "body": b"x" * 1000, "more_body": True},
        {"type": "http.request", "body": b"y" * 24},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        counted_receive, counted_send = metrics.counting_bytes(receive, send)
        assert (await counted_receive())["body"] == b"x" * 1000
        await counted_receive()
        await counted_send({"type": "http.response.start", "status": 200, "headers": []})
        await counted_send({"type": "http.response.body", "body": b"z" * 77})

    anyio.run(run)
    assert (up._value.get() - before[0], down._value.get() - before[1]) == (1024, 77)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # passed on unchanged


@pytest.mark.parametrize(
    ("path", "counted"),
    [
        ("/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl", True),
        ("/ajax-api/2.0/mlflow-artifacts/artifacts/1/x", True),
        ("/get-artifact", True),
        ("/model-versions/get-artifact", True),
        ("/api/2.0/mlflow/registered-models/search", False),
    ],
)
def test_which_paths_count_as_artifact_transfers(path: str, counted: bool) -> None:
    assert metrics.is_artifact_path(path) is counted


def test_every_family_and_fixed_label_value_is_exported_from_the_start() -> None:
    text = metrics.render().decode()
    for family in (
        "hokusai_requests_total",
        "hokusai_request_duration_seconds",
        "hokusai_auth_refusals_total",
        "hokusai_artifact_bytes_total",
        "hokusai_registrations_total",
        "hokusai_scans_total",
        "hokusai_auth_cache_total",
        "hokusai_key_service_seconds",
        "hokusai_key_service_errors_total",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family
    for reason in metrics.REFUSAL_REASONS:
        assert f'hokusai_auth_refusals_total{{reason="{reason}"}}' in text


@pytest.mark.parametrize(
    ("scope", "path", "allowed"),
    [
        ("metrics", "/metrics", True),
        ("admin", "/metrics", True),
        ("write", "/metrics", False),
        ("read", "/metrics", False),
        ("metrics", "/api/2.0/mlflow/registered-models/search", False),
        ("metrics", "/api/hokusai/v1/whoami", False),
    ],
)
def test_metrics_are_for_admin_and_metrics_keys_and_metrics_keys_read_nothing_else(
    scope: str, path: str, allowed: bool
) -> None:
    principal = Principal(key_id="k_1", username="prom", scope=scope)
    if allowed:
        check_scope(principal, "GET", path)
    else:
        with pytest.raises(Refusal) as refused:
            check_scope(principal, "GET", path)
        assert refused.value.status == 403 and refused.value.reason == "forbidden"


def test_a_method_no_http_client_sends_is_counted_as_other() -> None:
    """uvicorn accepts any token as a method: it must not become a label value."""
    observe = metrics.RequestMetrics(metrics.RouteNames(mlflow_flask_app.url_map)).observe
    scope = {"type": "http", "method": "X-RANDOM-abc123", "path": "/api/2.0/mlflow/experiments/get"}
    observe(scope, 401, 0.001, "missing")
    text = metrics.render().decode()
    assert "X-RANDOM-abc123" not in text
    assert 'method="other"' in text
