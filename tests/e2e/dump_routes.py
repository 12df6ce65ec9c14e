"""Print every route of the app `mlflow server --app-name hokusai` serves, as JSON.

Builds the app exactly as a worker does (our create_app on MLflow's Flask app, wrapped in FastAPI)
and walks both route maps: FastAPI's own routes and the Flask app mounted under it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute, _IncludedRouter
from starlette.routing import Mount

from hokusai_registry.server.app import create_app


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
        if isinstance(route, Mount):
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
    print(json.dumps(routes))


if __name__ == "__main__":
    main()
