"""The ``authorization_function`` MLflow's auth app calls on its Flask side: who is this request?

MLflow calls it from its before-request hook and from every permission helper, several times per
request. Our ASGI layer (middleware.py) has already authenticated the request, so this only reads the
result. Called outside that layer, it authenticates from the Flask request itself and memoizes on ``g``.
"""

from __future__ import annotations

from flask import Response, g, request
from mlflow.exceptions import MlflowException
from werkzeug.datastructures import Authorization

from hokusai_registry.server.authenticator import Authenticator
from hokusai_registry.server.context import current_principal
from hokusai_registry.server.credentials import Refusal, check_scope, extract_key

AUTHORIZATION_FUNCTION = f"{__name__}:authorization_function"

_authenticator: Authenticator | None = None


def install(authenticator: Authenticator) -> None:
    global _authenticator
    _authenticator = authenticator


def authorization_function() -> Authorization | Response:
    principal = current_principal() or g.get("hokusai_principal")
    if principal is None:
        if _authenticator is None:
            raise MlflowException("hokusai-registry's authenticator is not installed")
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            key = extract_key(headers)
            digest = _authenticator.digest(key)
            principal = _authenticator.from_cache(digest) or _authenticator.resolve(key, digest)
            check_scope(principal, request.method, request.path)
        except Refusal as refusal:
            return Response(refusal.body(), refusal.status, refusal.response_headers())
        g.hokusai_principal = principal
    return Authorization("bearer", {"username": principal.username})
