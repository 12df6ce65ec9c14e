"""Share the registered-model read between MLflow's permission check and its handler.

For a registry read by name, MLflow's auth app loads the whole registered model only to learn
whether it is a prompt and which workspace holds it, and then the handler loads it again: a
second full read (about a quarter of a worker's time on ``registered-models/get``, see
docs/benchmarks.md). Within one read-only request both see the same answer, so the first read is
kept in the request state and reused. Nothing outlives the request, so nothing can go stale.
"""

from __future__ import annotations

from typing import Any

from hokusai_registry.server.context import current_request


class RequestMemoRegistryStore:
    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_registered_model(self, name: str, *args: Any, **kwargs: Any) -> Any:
        state = current_request.get()
        if state is None or not state.read_only or args or kwargs:
            return self._store.get_registered_model(name, *args, **kwargs)
        if name not in state.registered_models:
            state.registered_models[name] = self._store.get_registered_model(name)
        return state.registered_models[name]


def install() -> None:
    """Make MLflow's handlers and its auth app use the memoizing store (they share one global)."""
    from mlflow.server import handlers

    store = handlers._get_model_registry_store()
    if not isinstance(store, RequestMemoRegistryStore):
        handlers._model_registry_store = RequestMemoRegistryStore(store)
