"""MLflow's FastAPI permission middleware, run only on the requests it has anything to decide for.

MLflow's auth app adds ``fastapi_permission_middleware`` as a ``BaseHTTPMiddleware``. It authorizes
the routes FastAPI serves natively (artifact streaming, gateway, OTel, jobs); every other request
goes on to the Flask app, whose own before-request hook authorizes it. For those Flask-bound
requests the middleware decides nothing, yet it costs about 1.5 ms of CPU each: the
``BaseHTTPMiddleware`` machinery and a regex walk over every native route
(``_scope_matches_native_route``, 0.3 ms even on an idle machine).

:class:`PermissionGate` takes its place in the middleware stack. It sends a request straight on
only when MLflow's middleware would have done exactly that: no FastAPI validator for the path, and
no native route that matches it. Everything else, including every native route, goes through
MLflow's middleware unchanged. The decision is memoized per (method, path): it depends on nothing
else, and the cache is bounded.

Artifact downloads and uploads (the native ``GET``/``PUT`` of ``mlflow-artifacts/artifacts/...``)
still get MLflow's own authorization decision, its dispatch function called as it is, but without
``BaseHTTPMiddleware`` around the transfer, which copied every body chunk through an anyio stream
(10 to 20% of stock's MB/s). For those routes MLflow's dispatch decides from the path, the query
and the user alone, and does nothing to the response (no after-handler, no response filter); if an
upgrade made its validator read the body, or its dispatch change the allowed response, the request
fails with a 500 instead of passing. A transfer only decides allow or deny, so it may trust its
caller's auth epochs read a moment ago; if MLflow refuses it on them, the epochs are read and MLflow
decides again (decisions.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cachetools import LRUCache
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hokusai_registry.server import mlflow_adapter
from hokusai_registry.server.context import current_request
from hokusai_registry.server.decisions import is_refusal

log = logging.getLogger(__name__)

MAX_CACHED_PATH = 512  # longer paths (artifact paths, mostly) are matched every time
Dispatch = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


async def _no_body() -> Message:
    raise RuntimeError("MLflow's artifact validator tried to read the request body; refusing to guess")


class PermissionGate:
    def __init__(
        self,
        app: ASGIApp,
        dispatch: Dispatch,
        native_routes: list[Any],
        refresh_epochs: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.dispatch = dispatch
        self.refresh_epochs = refresh_epochs
        self.mlflow_middleware = BaseHTTPMiddleware(app, dispatch=dispatch)
        self._native_routes = native_routes
        self._decisions: LRUCache[tuple[str, str], bool] = LRUCache(maxsize=4096)  # event loop only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Artifact transfers first: a prefix test, where ``bound_for_flask`` misses its cache on every
        # new file's path and walks the native routes (MLflow decides every transfer; the route test
        # pins that no transfer is one it leaves undecided).
        if scope["type"] == "http" and self.is_artifact_transfer(scope):
            await self._decide_then_stream(scope, receive, send)
        elif scope["type"] == "http" and self.bound_for_flask(scope):
            await self.app(scope, receive, send)
        else:
            await self.mlflow_middleware(scope, receive, send)

    def is_artifact_transfer(self, scope: Scope) -> bool:
        path, method = scope["path"], scope["method"]
        return (
            not scope.get("root_path")
            and mlflow_adapter.is_artifact_transfer(path, method)
            and mlflow_adapter.find_after_request_handler(path, method) is None
        )

    async def _decide_then_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """MLflow's dispatch decides; an allowed transfer then runs as plain ASGI, body untouched."""
        state = current_request.get()
        if state is not None:
            state.decides_only = True
        decision = await self._decide(scope)
        if state is not None and state.epochs_skipped and is_refusal(decision):
            self.refresh_epochs()
            decision = await self._decide(scope)
        if decision is None:
            await self.app(scope, receive, send)
        else:
            await decision(scope, receive, send)

    async def _decide(self, scope: Scope) -> Response | None:
        """None when MLflow's dispatch lets the request on, else the response it answers with."""
        allowed = Response(status_code=200)  # this request's "let it on"; nothing else may stand in
        let_on = False

        async def call_next(_request: Request) -> Response:
            nonlocal let_on
            let_on = True
            return allowed

        decision = await self.dispatch(Request(scope, _no_body), call_next)
        if decision is allowed:
            return None
        if let_on:  # it let the request on, then answered with something else: we cannot honour that
            raise RuntimeError("MLflow's permission middleware changed an allowed artifact response")
        return decision

    def bound_for_flask(self, scope: Scope) -> bool:
        """True when MLflow's middleware would pass the request on without deciding anything."""
        path, method = scope["path"], scope["method"]
        if scope.get("root_path"):
            return False
        decided = self._decisions.get((method, path))
        if decided is None:
            decided = mlflow_adapter.find_validator(
                path, method
            ) is None and not mlflow_adapter.matches_native_route(self._native_routes, scope)
            if len(path) <= MAX_CACHED_PATH:
                self._decisions[(method, path)] = decided
        return decided


def install(fastapi_app: Any, refresh_epochs: Callable[[], None] = lambda: None) -> bool:
    """Swap MLflow's permission middleware for the gate; False (and MLflow's own) if it is not there.
    ``refresh_epochs`` reads the auth epochs now, before a transfer is refused (decisions.py)."""
    if fastapi_app.middleware_stack is not None:
        raise RuntimeError("the FastAPI middleware stack is already built; install the gate before serving")
    found = mlflow_adapter.find_permission_middleware(fastapi_app)
    if found is None:
        log.warning("MLflow's permission middleware was not found; requests take MLflow's slower path")
        return False
    fastapi_app.user_middleware[found.index] = Middleware(
        PermissionGate,
        dispatch=found.dispatch,
        native_routes=mlflow_adapter.native_routes(fastapi_app),
        refresh_epochs=refresh_epochs,
    )
    return True
