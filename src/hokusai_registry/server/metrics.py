"""Prometheus metrics of one replica, summed over its uvicorn workers.

Each worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode; `up` empties the directory at every start), and ``GET /metrics``, whichever
worker serves it, reads them all. Without that variable (a test building the app in-process) the
samples stay in the process. The families, their labels and the label values are fixed, so
dashboards and alarms can rely on them (docs/operations.md); ``route`` is a route template, never
a path, so its cardinality is bounded by the route map.
"""

from __future__ import annotations

import os
import re
from typing import Any

from cachetools import LRUCache
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Message, Receive, Scope, Send

from hokusai_registry.server.policy import METRICS_PATH

__all__ = [
    "ARTIFACT_BYTES",
    "AUTH_CACHE",
    "AUTH_REFUSALS",
    "CONTENT_TYPE_LATEST",
    "KEY_SERVICE_ERRORS",
    "KEY_SERVICE_SECONDS",
    "METRICS_PATH",
    "REFUSAL_REASONS",
    "REGISTRATIONS",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SCANS",
    "RequestMetrics",
    "RouteNames",
    "counting_bytes",
    "is_artifact_path",
    "render",
]

OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFUSAL_REASONS = ("missing", "malformed", "unknown", "revoked", "expired", "forbidden", "key_service_down")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "hokusai_requests", "Requests answered, by route template, method, status", ["route", "method", "status"]
)
REQUEST_SECONDS = Histogram(
    "hokusai_request_duration_seconds",
    "Time to answer a request, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
AUTH_REFUSALS = Counter("hokusai_auth_refusals", "Requests refused 401/403/503 by reason", ["reason"])
ARTIFACT_BYTES = Counter(
    "hokusai_artifact_bytes", "Artifact bytes through the server (up, down)", ["direction"]
)
REGISTRATIONS = Counter("hokusai_registrations", "New model versions by outcome", ["outcome"])
SCANS = Counter("hokusai_scans", "Model version scans by verdict", ["verdict"])
AUTH_CACHE = Counter("hokusai_auth_cache", "Key look-ups answered from the worker's cache or not", ["result"])
KEY_SERVICE_SECONDS = Histogram(
    "hokusai_key_service_seconds", "Time the external key service took to answer", buckets=LATENCY_BUCKETS
)
KEY_SERVICE_ERRORS = Counter("hokusai_key_service_errors", "External key service calls that failed")


def _initialize() -> None:
    """Every fixed label value is exported from the start, at 0, so an alarm on a rate has a series."""
    for reason in REFUSAL_REASONS:
        AUTH_REFUSALS.labels(reason)
    for direction in ("up", "down"):
        ARTIFACT_BYTES.labels(direction)
    for result in ("hit", "miss"):
        AUTH_CACHE.labels(result)


_initialize()


def render() -> bytes:
    """The text exposition of every worker's samples (or this process's, outside multiprocess mode)."""
    if not os.environ.get(MULTIPROC_ENV):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class RouteNames:
    """The route template a request was routed to, ``other`` when none; never the path itself.

    FastAPI leaves the route it picked in ``scope["route"]`` (its template, under the mount it
    came through). Anything else went to MLflow's Flask app, mounted at the root, whose URL map
    then names the rule. Flask look-ups are memoized per (method, path), except long paths
    (artifact paths), so one-off paths cannot fill the memo.
    """

    MAX_CACHED_PATH = 256

    def __init__(self, flask_url_map: Any) -> None:
        self._flask = flask_url_map.bind("registry")
        self._memo: LRUCache[tuple[str, str], str] = LRUCache(maxsize=4096)

    def __call__(self, scope: Scope) -> str:
        template = getattr(scope.get("route"), "path", None)
        if isinstance(template, str) and template:  # a FastAPI route, ours or MLflow's native ones
            return str(scope.get("root_path", "")) + template
        return self._flask_rule(scope.get("method", "GET"), scope["path"])

    def _flask_rule(self, method: str, path: str) -> str:
        found = self._memo.get((method, path))
        if found is None:
            try:
                rule, _ = self._flask.match(path, method=method, return_rule=True)
                found = str(rule.rule)
            except Exception:  # werkzeug's NotFound, MethodNotAllowed, RequestRedirect (its HTTPException,
                found = OTHER  # not imported: the ASGI layer loads no Flask, tests/test_structure.py)
            if len(path) <= self.MAX_CACHED_PATH:
                self._memo[(method, path)] = found
        return found


# Uploads and downloads through the server: the native artifact routes and Flask's get-artifact ones.
_ARTIFACT_PATH = re.compile(
    r"/(?:ajax-)?api/2\.0/mlflow-artifacts/.*|/(?:ajax-)?api/2\.0/mlflow/logged-models/[^/]+/artifacts/.*|"
    r"/get-artifact|/model-versions/get-artifact"
)


def is_artifact_path(path: str) -> bool:
    return bool(_ARTIFACT_PATH.fullmatch(path))


_UP, _DOWN = ARTIFACT_BYTES.labels("up"), ARTIFACT_BYTES.labels("down")


def counting_bytes(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """``receive`` and ``send`` that add the body bytes they pass to the artifact byte counters."""

    async def receive_counted() -> Message:
        message = await receive()
        if message["type"] == "http.request" and (body := message.get("body")):
            _UP.inc(len(body))
        return message

    async def send_counted(message: Message) -> None:
        if message["type"] == "http.response.body" and (body := message.get("body")):
            _DOWN.inc(len(body))
        await send(message)

    return receive_counted, send_counted


class RequestMetrics:
    """What the ASGI layer records for every authenticated-or-refused request."""

    def __init__(self, route_names: RouteNames) -> None:
        self._route_names = route_names

    def observe(self, scope: Scope, status: int, seconds: float, refusal_reason: str | None) -> None:
        method = scope.get("method", "GET")
        method = method if method in METHODS else OTHER  # a client may send any token as its method
        route = self._route_names(scope)  # "other" for a request refused before it was routed
        REQUESTS.labels(route, method, str(status)).inc()
        REQUEST_SECONDS.labels(route, method).observe(seconds)
        if refusal_reason is None and status == 403:
            refusal_reason = "forbidden"  # MLflow's own per-resource refusal
        if refusal_reason in REFUSAL_REASONS:
            AUTH_REFUSALS.labels(refusal_reason).inc()
