"""One full read per read by id, shared by MLflow's auth app and the handler.

For ``runs/get``, ``logged-models/<id>`` and ``registered-models/get`` (``policy.shares_reads``) MLflow's
auth app first reads the resource to learn its experiment (or prompt flag and workspace), then the
handler reads all of it again. Such a request only reads, so nothing changes between the two: the
check makes the full read, it is kept in the request state, and the handler gets it. Nothing outlives
the request, and a failed read is not kept (the handler reads again and fails as MLflow does). Every
other request's check reads only the row it decides on (``mlflow_adapter.install_auth_row_lookups``):
a full read there would be one nobody reuses (``get-history``'s check of each run, for one), and
a run's or logged model's row read by a check less than a second ago answers again (recent_rows.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from hokusai_registry.server import mlflow_adapter
from hokusai_registry.server.context import current_request
from hokusai_registry.server.recent_rows import RecentRows

T = TypeVar("T")


def sharing_reads() -> bool:
    """Whether a read now is kept for the rest of the request (see above)."""
    state = current_request.get()
    return state is not None and state.shares_reads


def shared_read(key: Hashable, read: Callable[[], T]) -> T:
    """``read()``, or in a read by id the answer it gave earlier in the request."""
    state = current_request.get()
    if state is None or not state.shares_reads:
        return read()
    if key not in state.reads:
        state.reads[key] = read()
    found: T = state.reads[key]
    return found


def _shared_get_run(get_run: Callable[..., Any]) -> Callable[..., Any]:
    def get_run_once(store: Any, run_id: str) -> Any:
        return shared_read((id(store), "run", run_id), lambda: get_run(store, run_id))

    return get_run_once


def _shared_get_logged_model(get_logged_model: Callable[..., Any]) -> Callable[..., Any]:
    def get_logged_model_once(store: Any, model_id: str, allow_deleted: bool = False) -> Any:
        key = (id(store), "logged_model", model_id, bool(allow_deleted))
        return shared_read(key, lambda: get_logged_model(store, model_id, allow_deleted))

    return get_logged_model_once


def install(recent_rows_interval: float = 0) -> None:
    """Share the tracking store's full reads, and give the auth app full reads in reads by id; its
    other checks reuse a run's or logged model's row read less than ``recent_rows_interval`` ago."""
    mlflow_adapter.intercept_store_method("tracking", "get_run", _shared_get_run)
    mlflow_adapter.intercept_store_method("tracking", "get_logged_model", _shared_get_logged_model)
    mlflow_adapter.install_auth_row_lookups(sharing_reads, RecentRows(recent_rows_interval))
