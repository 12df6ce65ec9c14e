"""Our API under ``/api/hokusai/v1/``: create, list, rotate and revoke keys, ``whoami``, and ``server``
(what this deployment is, for ``verify``'s recommendations).

It is served by the registry itself, behind the same ASGI key layer as every route (middleware.py),
so a handler runs only for an authenticated caller, and a ``read`` key has already been refused
anything but ``GET``. What a caller may do with keys (docs/keys.md):

- an ``admin`` key manages any user's keys, with any scope, and creates users;
- a ``write`` key manages its own user's keys, and creates or rotates only ``read`` and ``write`` ones;
- a key of the external key service is managed there, not here (409).

Every answer that is not a success is MLflow's JSON error shape, ``{"error_code", "message"}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from hokusai_registry.server import audit
from hokusai_registry.server.context import Principal, current_principal
from hokusai_registry.server.credentials import ERROR_CODES as REFUSAL_CODES
from hokusai_registry.server.keys import (
    DEFAULT_GRACE_SECONDS,
    MAX_GRACE_SECONDS,
    ApiKey,
    InvalidKeyRequest,
    KeyConflict,
    KeyNotFound,
    KeyStore,
    check_username,
    utcnow,
)

PREFIX = "/api/hokusai/v1"
EXTERNAL_PREFIX = "ext:"
SCOPES_A_WRITE_KEY_GIVES = ("read", "write")


class Forbidden(Exception):
    pass


class ExternallyManaged(Exception):
    pass


class CreateKey(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(description="Unique among the user's live keys: 1-64 of A-Z a-z 0-9 . _ -")
    user: str | None = Field(None, description="The MLflow user the key acts as; admins only, default: yours")
    scope: Literal["read", "write", "admin", "metrics"] = "write"
    expires_in_days: float | None = Field(
        None, description="Days until it expires; default: the server's maximum key lifetime, if any"
    )


class RotateKey(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    grace_seconds: int = Field(
        DEFAULT_GRACE_SECONDS,
        description=f"How long the old key keeps working, 0 to {MAX_GRACE_SECONDS} (7 days)",
    )


class KeyRecord(BaseModel):
    id: str
    name: str
    user: str
    scope: str
    created_at: str
    expires_at: str | None
    revoked: bool
    revoked_at: str | None
    last_used_at: str | None
    replaced_by: str | None


class CreatedKey(KeyRecord):
    key: str = Field(description="The key itself: shown in this response only, never again")


class RotatedKey(CreatedKey):
    replaces: str
    old_key_expires_at: str | None


class KeyList(BaseModel):
    keys: list[KeyRecord]


class WhoAmI(BaseModel):
    id: str
    name: str | None
    user: str
    scope: str
    expires_at: str | None
    expires_in_seconds: float | None
    grace_seconds_left: float | None = Field(description="Set while this is an old key in its rotation grace")
    source: Literal["local", "external"]


class ServerFacts(BaseModel):
    """What a client cannot learn from MLflow's server-info (its ``store_type`` is ``SqlStore`` for any
    SQL database): the database kind, the scan policy, and which replica answered."""

    backend: str = Field(description="The tracking store's database: sqlite, postgresql, mysql...")
    scan_policy: Literal["block", "warn", "off"]
    replica: str | None


class Error(BaseModel):
    error_code: str
    message: str


async def caller() -> Principal:
    principal = current_principal()
    if principal is None:  # the ASGI key layer did not run: refuse rather than guess
        raise Forbidden("this request was not authenticated by the registry's key layer")
    return principal


Caller = Annotated[Principal, Depends(caller)]


def is_external(key_id: str) -> bool:
    return key_id.startswith(EXTERNAL_PREFIX)


def target_user(actor: Principal, requested: str | None) -> str:
    """Whose keys a request is about: anyone's for an admin, otherwise only the caller's own."""
    if requested is None or requested == actor.username:
        return actor.username
    if not actor.is_admin:
        raise Forbidden(
            f"API key {actor.key_id} may manage only the keys of its own user {actor.username!r}; "
            "an admin key manages other users' keys"
        )
    return requested


def check_may_give(actor: Principal, scope: str) -> None:
    """A write key may hand out read or write keys of its own user, never admin or metrics ones."""
    if not actor.is_admin and scope not in SCOPES_A_WRITE_KEY_GIVES:
        raise Forbidden(
            f"API key {actor.key_id} has scope {actor.scope!r}; only an admin key creates {scope!r} keys"
        )


def check_not_external(actor: Principal, action: str) -> None:
    if is_external(actor.key_id) and not actor.is_admin:
        raise ExternallyManaged(
            f"your key {actor.key_id} is issued by the external key service; {action} keys there"
        )


def create_key_api(keys: KeyStore, facts: ServerFacts) -> FastAPI:
    """The API as an app of its own, mounted at ``PREFIX`` (its OpenAPI document included)."""
    api = FastAPI(
        title="hokusai-registry key API",
        version="1",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses={status: {"model": Error} for status in (400, 401, 403, 404, 409)},
    )
    _install_error_handlers(api)

    def owned_key(actor: Principal, key_id: str) -> ApiKey:
        """The key, if the caller may act on it; another user's key is not found for a non-admin."""
        if is_external(key_id):
            raise ExternallyManaged(f"key {key_id} is issued by the external key service; manage it there")
        record = keys.get(key_id)
        if not actor.is_admin and record.username != actor.username:
            raise KeyNotFound(f"no key with id {key_id!r} among the keys of user {actor.username!r}")
        return record

    @api.post("/keys", status_code=201, response_model=CreatedKey)
    def create_key(request: CreateKey, actor: Caller) -> dict[str, Any]:
        """Create a key; the response is the only place the key is ever shown."""
        check_not_external(actor, "create")
        if request.user is not None:
            check_username(request.user)
        username = target_user(actor, request.user)
        check_may_give(actor, request.scope)
        new = keys.create(username, request.scope, request.expires_in_days, name=request.name)
        audit.event("key.create", actor_key_id=actor.key_id, key_id=new.record.id, user=username)
        return new.to_json()

    @api.get("/keys", response_model=KeyList)
    def list_keys(actor: Caller, user: str | None = None) -> dict[str, Any]:
        """Keys without their secrets: all of one user's (yours unless an admin asks for another)."""
        if user is None and actor.is_admin:
            return {"keys": [key.to_json() for key in keys.list()]}
        return {"keys": [key.to_json() for key in keys.list(target_user(actor, user))]}

    @api.delete("/keys/{key_id}", response_model=KeyRecord)
    def revoke_key(key_id: str, actor: Caller) -> dict[str, Any]:
        """Revoke a key: every worker of every replica refuses it within the cache TTL (5 s at most)."""
        check_not_external(actor, "revoke")
        owned_key(actor, key_id)
        record = keys.revoke(key_id)
        audit.event("key.revoke", actor_key_id=actor.key_id, key_id=key_id, user=record.username)
        return record.to_json()

    @api.post("/keys/{key_id}/rotate", status_code=201, response_model=RotatedKey)
    def rotate_key(
        key_id: str, actor: Caller, request: Annotated[RotateKey | None, Body()] = None
    ) -> dict[str, Any]:
        """A new key with the same user, scope and name; the old one works until its grace ends."""
        check_not_external(actor, "rotate")  # else it could mint a local key that outlives its own
        old = owned_key(actor, key_id)
        check_may_give(actor, old.scope)
        rotated = keys.rotate(key_id, (request or RotateKey()).grace_seconds)
        audit.event(
            "key.rotate",
            actor_key_id=actor.key_id,
            key_id=rotated.new.record.id,
            replaces=key_id,
            user=old.username,
        )
        return rotated.to_json()

    @api.get("/whoami", response_model=WhoAmI)
    def whoami(actor: Caller) -> dict[str, Any]:
        """The key this request was made with: who it acts as, and when it stops working."""
        if is_external(actor.key_id):
            return {
                "id": actor.key_id,
                "name": None,
                "user": actor.username,
                "scope": actor.scope,
                "expires_at": None,
                "expires_in_seconds": None,
                "grace_seconds_left": None,
                "source": "external",
            }
        record, now = keys.get(actor.key_id), utcnow()
        expires = record.expires_at
        return record.to_json() | {
            "expires_in_seconds": max(0.0, (expires - now).total_seconds()) if expires else None,
            "grace_seconds_left": record.grace_left(now),
            "source": "local",
        }

    @api.get("/server", response_model=ServerFacts)
    def server(actor: Caller) -> ServerFacts:
        """The database kind, the scan policy and the replica: any key may ask."""
        return facts

    return api


ERROR_CODES = {400: "INVALID_PARAMETER_VALUE", **REFUSAL_CODES}


def _error(status: int, message: str, error_code: str | None = None) -> JSONResponse:
    code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR")
    return JSONResponse({"error_code": code, "message": message}, status)


def _install_error_handlers(api: FastAPI) -> None:
    statuses: dict[type[Exception], int] = {
        InvalidKeyRequest: 400,
        Forbidden: 403,
        KeyNotFound: 404,
        KeyConflict: 409,
        ExternallyManaged: 409,
    }

    async def known(_request: Request, exc: Exception) -> JSONResponse:
        status = next(code for kind, code in statuses.items() if isinstance(exc, kind))
        return _error(status, str(exc))

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(400, validation_message(exc.errors()), "INVALID_PARAMETER_VALUE")

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # FastAPI could not read the body at all (not UTF-8 JSON)
            return _error(400, "the request body must be a UTF-8 JSON object", "INVALID_PARAMETER_VALUE")
        return _error(exc.status_code, str(exc.detail))

    for kind in statuses:
        api.add_exception_handler(kind, known)
    api.add_exception_handler(RequestValidationError, invalid)
    api.add_exception_handler(HTTPException, http_error)


def validation_message(errors: Any) -> str:
    """The first problem, naming its field: ``expires_in_days: Input should be a valid number``."""
    first = next(iter(errors), {"loc": (), "msg": "invalid request"})
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    field = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
    return f"{field or 'body'}: {first['msg']}"
