"""The ASGI layer in front of MLflow: every non-public request needs a valid key, and is audited.

It wraps the whole FastAPI app, so it guards MLflow's Flask routes and its native FastAPI routes
(artifact streaming, gateway, OTel, jobs) alike, whatever MLflow's own route tables say. The
principal it finds is handed to MLflow's auth app through ``context.current_principal``; MLflow
then decides per-resource permissions, and its refusals are answered as JSON (json_errors.py).
"""

from __future__ import annotations

import time

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai_registry.server import audit, json_errors, metrics, policy
from hokusai_registry.server.authenticator import Authenticator
from hokusai_registry.server.context import Principal, RequestState, current_request
from hokusai_registry.server.credentials import Refusal, check_scope, extract_key
from hokusai_registry.server.metrics import RequestMetrics, counting_bytes, is_artifact_path


class ApiKeyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        metrics: RequestMetrics | None = None,
        replica_id: str | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.metrics = metrics
        # Every response says which replica answered, so `verify` can count them behind a load balancer.
        self._replica_header = [(b"x-hokusai-replica", replica_id.encode())] if replica_id else []
        audit.configure()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or policy.is_public(scope["path"]):
            await json_errors.serve(self.app, scope, receive, send, None)
            return
        started = time.perf_counter()
        method, path = scope.get("method", "GET"), scope["path"]
        writes = policy.is_write(method, path)
        principal: Principal | None = None
        status, refusal_reason = 500, None

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self._replica_header:
                    message["headers"] = [*message.get("headers", []), *self._replica_header]
            await send(message)

        try:
            try:
                principal = await self._authenticate(scope)
                check_scope(principal, method, path, writes=writes)
            except Refusal as refusal:
                status, refusal_reason = refusal.status, refusal.reason
                await _refuse(scope, send_and_note_status, refusal)
                return
            if path == policy.METRICS_PATH:  # here, not in MLflow's app: scraped by task IP, any Host
                await _metrics_response(send_and_note_status)
                return
            forward: Send = send_and_note_status
            if self.metrics is not None and is_artifact_path(path):
                receive, forward = counting_bytes(receive, forward)
            state = RequestState(
                principal,
                read_only=not writes,
                scoped_search=policy.is_scoped_search(path),
                shares_reads=policy.shares_reads(method, path),
            )
            token = current_request.set(state)
            try:
                await json_errors.serve(self.app, scope, receive, forward, principal)
            finally:
                current_request.reset(token)
        finally:
            if audit.should_record(writes, status):
                audit.record(
                    key_id=principal.key_id if principal else None,
                    user=principal.username if principal else None,
                    method=method,
                    path=path,
                    status=status,
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            if self.metrics is not None:
                self.metrics.observe(scope, status, time.perf_counter() - started, refusal_reason)

    async def _authenticate(self, scope: Scope) -> Principal:
        key = extract_key(credential_headers(scope["headers"]))
        digest = self.authenticator.digest(key)
        principal = self.authenticator.from_cache(digest)
        if principal is None:  # a database or key-service round trip: keep it off the event loop
            principal = await anyio.to_thread.run_sync(self.authenticator.resolve, key, digest)
        return principal


CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")


def credential_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers a key can come in, by lower-case name; the others are never decoded."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in raw
        if name.lower() in CREDENTIAL_HEADERS
    }


async def _refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = refusal.body()
    headers = [(name.lower().encode(), value.encode()) for name, value in refusal.response_headers().items()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _metrics_response(send: Send) -> None:
    body = await anyio.to_thread.run_sync(metrics.render)  # reads every worker's files
    headers = [
        (b"content-type", metrics.CONTENT_TYPE_LATEST.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
