"""What the gate's artifact fast path relies on in MLflow's tables (the e2e suites drive it live)."""

from __future__ import annotations

import pytest
from mlflow.server.artifact_router import artifact_router
from mlflow.server.auth import (
    FASTAPI_ENDPOINT_RESPONSE_FILTERS,
    _find_fastapi_after_request_handler,
    _is_native_fastapi_proxy_artifact_path,
)


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
