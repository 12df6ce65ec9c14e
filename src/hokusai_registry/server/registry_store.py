"""Share the registered-model read between MLflow's permission check and its handler.

For a registry read by name, MLflow's auth app loads the whole registered model only to learn
whether it is a prompt and which workspace holds it, and then the handler loads it again: a
second full read (about a quarter of a worker's time on ``registered-models/get``, see
docs/benchmarks.md). Within one read-only request both see the same answer, so the first read is
kept in the request state and reused. Nothing outlives the request, so nothing can go stale.
"""

from __future__ import annotations

from typing import Any

from hokusai_registry.server import mlflow_adapter
from hokusai_registry.server.context import current_request


class RequestMemoRegistryStore(mlflow_adapter.Delegating):
    def get_registered_model(self, name: str, *args: Any, **kwargs: Any) -> Any:
        state = current_request.get()
        if state is None or not state.read_only or args or kwargs:
            return self.wrapped.get_registered_model(name, *args, **kwargs)
        if name not in state.registered_models:
            state.registered_models[name] = self.wrapped.get_registered_model(name)
        return state.registered_models[name]


def install() -> RequestMemoRegistryStore:
    """Make MLflow's handlers and its auth app use the memoizing store (they share one global)."""
    return mlflow_adapter.install_registry_store(RequestMemoRegistryStore)
