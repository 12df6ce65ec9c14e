"""Per-request state shared between our ASGI layer and MLflow's Flask hooks.

The ASGI layer authenticates each request once and stores the result here. Flask runs in a worker
thread with a copy of this context; the copy refers to the same RequestState object, so MLflow's
hooks read the principal without authenticating again, and what they note (the auth epoch) is
noted once per request.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key's id, its MLflow user and its scope."""

    key_id: str
    username: str
    scope: str

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


@dataclass
class RequestState:
    principal: Principal
    read_only: bool
    scoped_search: bool = False  # a search the store query is scoped for (scoped_search.py)
    shares_reads: bool = False  # a read by id: the check's read is the handler's (shared_reads.py)
    auth_epoch: int | None = None  # read by the cached auth store at most once per request
    decides_only: bool = False  # may trust recently read auth epochs (decisions.py)
    epochs_skipped: bool = False  # it did: a refusal reads them and decides again
    reads: dict[Any, Any] = field(default_factory=dict)  # see shared_reads.py
    readable: dict[Any, frozenset[str] | None] = field(default_factory=dict)  # see scoped_search.py


current_request: ContextVar[RequestState | None] = ContextVar("hokusai_request", default=None)


def current_principal() -> Principal | None:
    state = current_request.get()
    return state.principal if state else None
