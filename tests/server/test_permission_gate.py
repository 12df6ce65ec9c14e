"""The gate's artifact fast path: what it does with each decision of MLflow's dispatch.

What it relies on in MLflow is pinned in test_mlflow_contract.py; the e2e suites (isolation, artifact
paths, client flow) drive it live with MLflow's real dispatch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from hokusai_registry.server.permission_gate import PermissionGate

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
