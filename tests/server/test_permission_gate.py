"""The gate's artifact fast path: what it relies on in MLflow, and what it does with each decision.

The e2e suites (isolation, artifact paths, client flow) drive it live with MLflow's real dispatch.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any

import pytest
from mlflow.server.artifact_router import artifact_router
from mlflow.server.auth import (
    FASTAPI_ENDPOINT_RESPONSE_FILTERS,
    _find_fastapi_after_request_handler,
    _is_native_fastapi_proxy_artifact_path,
    add_fastapi_permission_middleware,
)
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from hokusai_registry.server.permission_gate import PermissionGate


def test_artifact_transfers_have_no_response_filter() -> None:
    """MLflow's dispatch must do nothing to an artifact response, or the fast path would skip it."""
    endpoints = {route.endpoint for route in artifact_router.routes}  # type: ignore[attr-defined]
    assert endpoints
    assert not endpoints & set(FASTAPI_ENDPOINT_RESPONSE_FILTERS)


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("prefix", ["/api/2.0", "/ajax-api/2.0"])
def test_artifact_transfers_have_no_after_handler(prefix: str, method: str) -> None:
    path = f"{prefix}/mlflow-artifacts/artifacts/1/run/artifacts/model.pkl"
    assert _is_native_fastapi_proxy_artifact_path(path, method)
    assert _find_fastapi_after_request_handler(path, method) is None


ARTIFACT_GET = {
    "type": "http",
    "method": "GET",
    "path": "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/model.pkl",
    "root_path": "",
    "query_string": b"",
    "headers": [],
}


def through_gate(dispatch: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Send an artifact GET through the gate with `dispatch` standing in for MLflow's decision."""
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def transfer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"artifact bytes"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    gate = PermissionGate(transfer, dispatch=dispatch, native_routes=[])
    asyncio.run(gate(dict(ARTIFACT_GET), receive, send))
    return reached, sent


def test_an_allowed_transfer_reaches_the_artifact_route_unchanged() -> None:
    async def allow(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    reached, sent = through_gate(allow)
    assert reached == [ARTIFACT_GET["path"]]
    assert sent[-1]["body"] == b"artifact bytes"


def test_a_refusal_is_sent_and_the_artifact_route_never_runs() -> None:
    async def deny(request: Request, call_next: Any) -> Any:
        return PlainTextResponse("Permission denied", status_code=403)

    reached, sent = through_gate(deny)
    assert reached == []
    assert sent[0]["status"] == 403


def test_a_dispatch_that_rewrites_the_allowed_response_fails_closed() -> None:
    """If an MLflow upgrade post-processes artifact responses, the fast path must not skip that."""

    async def allow_then_rewrite(request: Request, call_next: Any) -> Any:
        await call_next(request)
        return PlainTextResponse("filtered")

    with pytest.raises(RuntimeError, match="changed an allowed artifact response"):
        through_gate(allow_then_rewrite)


# The fast path assumes MLflow's dispatch, for an artifact transfer, only decides: it reads no body
# and does nothing after `call_next`. Any change to that function means re-reading it.
AUDITED_DISPATCH_SHA256 = "344ee9b3adc66f0cb7025ba78bf41537cd96b1f01163f80c896bfdf85b4baee2"  # MLflow 3.17.2


def test_mlflows_permission_dispatch_is_the_one_the_fast_path_was_audited_against() -> None:
    source = inspect.getsource(add_fastapi_permission_middleware)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == AUDITED_DISPATCH_SHA256, (
        "MLflow's fastapi_permission_middleware changed: re-audit permission_gate._decide_then_stream "
        "against it (body reads, work after call_next, response filters), then update the digest"
    )
