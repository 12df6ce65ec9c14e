"""Print every route of the app `mlflow server --app-name hokusai` serves, as JSON.

Builds the app exactly as a worker does (our create_app on MLflow's Flask app, wrapped in FastAPI)
and walks its route maps: FastAPI's own routes, the Flask app mounted under it, and our key API.
For each route and method it also records two decisions about a request to it: whether our
permission gate sends it straight to Flask, and whether MLflow's own permission middleware would
pass it on undecided.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute, _IncludedRouter
from starlette.routing import Mount

from hokusai_registry.server.app import create_app
from hokusai_registry.server.key_api import PREFIX
from hokusai_registry.server.permission_gate import PermissionGate


def flatten(routes: list[Any]) -> list[tuple[str, Any]]:
    """(full path, route) for every route, through FastAPI's included routers."""
    flat: list[tuple[str, Any]] = []
    for route in routes:
        if isinstance(route, _IncludedRouter):
            for candidate in route.effective_candidates():
                if isinstance(candidate, _IncludedRouter):
                    flat += flatten([candidate])
                else:
                    flat.append((candidate.path, candidate.original_route))
        else:
            flat.append((getattr(route, "path", "?"), route))
    return flat


def main() -> None:
    fastapi_app = create_app().app
    routes = []
    for path, route in flatten(fastapi_app.routes):
        if isinstance(route, Mount) and route.path == PREFIX:  # our key API
            routes += [  # its handlers and FastAPI's own (the OpenAPI document)
                {"path": PREFIX + sub.path, "methods": sorted(sub.methods - {"HEAD"}), "source": "hokusai"}
                for sub in route.app.routes
            ]
        elif isinstance(route, Mount):
            flask_app = route.app.app  # MLflow's WSGI adapter around the Flask app
            routes += [
                {"path": rule.rule, "methods": sorted(rule.methods - {"HEAD", "OPTIONS"}), "source": "flask"}
                for rule in flask_app.url_map.iter_rules()
            ]
        elif isinstance(route, APIRoute):
            routes.append({"path": path, "methods": sorted(route.methods - {"HEAD"}), "source": "fastapi"})
        elif isinstance(route, APIWebSocketRoute):
            routes.append({"path": path, "methods": ["WEBSOCKET"], "source": "fastapi"})
        else:
            routes.append({"path": path, "methods": ["GET"], "source": type(route).__name__})
    for route in routes:
        route["decisions"] = decisions(fastapi_app, concrete(route["path"]), route["methods"])
    print(json.dumps(routes))


def concrete(template: str) -> str:
    """A request path for a route template, Flask (<path:x>, <int:x>) or FastAPI ({x:path}, {x})."""
    path = re.sub(r"<path:[^>]+>|\{[^}:]+:path\}", "some/artifact.txt", template)
    path = re.sub(r"<int:[^>]+>", "1", path)
    return re.sub(r"<[^>]+>|\{[^}]+\}", "x1", path)


def decisions(fastapi_app: Any, path: str, methods: list[str]) -> dict[str, dict[str, bool]]:
    """Per method: does our gate bypass MLflow's middleware, and would MLflow's decide nothing?"""
    from mlflow.server.auth import (
        _find_fastapi_validator,
        _native_fastapi_routes,
        _scope_matches_native_route,
    )

    (gate_entry,) = [m for m in fastapi_app.user_middleware if m.cls is PermissionGate]
    gate = PermissionGate(None, **gate_entry.kwargs)
    native = _native_fastapi_routes(fastapi_app)
    found = {}
    for method in methods:
        if method == "WEBSOCKET":
            continue
        scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}
        found[method] = {
            "gate_bypasses": gate.bound_for_flask(scope),
            "artifact_transfer": gate.is_artifact_transfer(scope),
            "mlflow_undecided": _find_fastapi_validator(path, method) is None
            and not _scope_matches_native_route(native, scope),
        }
    return found


if __name__ == "__main__":
    main()
