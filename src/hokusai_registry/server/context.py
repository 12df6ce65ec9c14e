"""Per-request state shared between our ASGI layer and MLflow's Flask hooks.

The ASGI layer authenticates each request once and stores the principal here. Flask runs in a
worker thread with a copy of this context, so MLflow's hooks read the same principal without
authenticating again.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key's id, its MLflow user and its scope."""

    key_id: str
    username: str
    scope: str

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


current_principal: ContextVar[Principal | None] = ContextVar("hokusai_principal", default=None)
