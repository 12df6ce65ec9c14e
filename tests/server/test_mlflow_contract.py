"""Every assumption server/mlflow_adapter.py makes about MLflow's internals, pinned.

When an MLflow upgrade fails one of these, the adapter is the one file to change; the rest of
``src/`` reaches MLflow's internals only through it (the last tests here prove that).
"""

from __future__ import annotations

import ast
import asyncio
import functools
import hashlib
import inspect
import io
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import environment_variables
from mlflow.server import auth, handlers
from mlflow.server.artifact_router import artifact_router
from mlflow.server.auth import (
    FASTAPI_ENDPOINT_RESPONSE_FILTERS,
    add_fastapi_permission_middleware,
)
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from hokusai_registry.server import database, mlflow_adapter
from hokusai_registry.server.auth_store import CachedAuthStore
from hokusai_registry.server.context import RequestState, current_request
from hokusai_registry.server.recent_rows import RecentRows
from hokusai_registry.server.registry_store import RegistryStore
from hokusai_registry.server.schema import create_tables, read_epochs
from tests.services import Postgres, postgres_cluster

SRC = Path(__file__).resolve().parents[2] / "src" / "hokusai_registry"
ADAPTER = SRC / "server" / "mlflow_adapter.py"

# --- 1. the auth store: which methods write ----------------------------------------------------------------


def public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, callable) if not name.startswith("_")}


def test_every_public_auth_store_method_is_known_to_read_or_to_write() -> None:
    """A new MLflow method must be sorted by hand: if it writes, it has to move the auth epoch."""
    methods = public_methods(SqlAlchemyStore)
    assert not mlflow_adapter.AUTH_STORE_READS & mlflow_adapter.AUTH_STORE_WRITES
    unknown = methods - mlflow_adapter.AUTH_STORE_READS - mlflow_adapter.AUTH_STORE_WRITES
    gone = (mlflow_adapter.AUTH_STORE_READS | mlflow_adapter.AUTH_STORE_WRITES) - methods
    assert not unknown, f"classify these new auth store methods in mlflow_adapter: {sorted(unknown)}"
    assert not gone, f"MLflow no longer has these auth store methods: {sorted(gone)}"


def answer_with(name: str) -> Any:
    return lambda self, *args, **kwargs: name


class Inert(SqlAlchemyStore):
    """MLflow's store class with every public method answering its own name: nothing is stored."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.ManagedSessionMaker = lambda: "a session"  # an instance attribute, as init_db sets it


for _name in public_methods(SqlAlchemyStore):
    setattr(Inert, _name, answer_with(_name))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


def arguments(name: str) -> dict[str, str]:
    """Keyword arguments for the auth store's method ``name``: ``username`` is alice's."""
    parameters = list(inspect.signature(getattr(SqlAlchemyStore, name)).parameters)[1:]
    return {p: "alice" if p == "username" else "x" for p in parameters}


def test_every_write_moves_an_epoch_and_no_read_does(engine: sa.Engine) -> None:
    """A write that changes one user's access moves that user's epoch; any other, the global one."""
    deleted: list[str] = []
    store = CachedAuthStore(Inert(engine), ttl=60, on_user_deleted=deleted.append)
    for name in sorted(mlflow_adapter.AUTH_STORE_WRITES):
        before = read_epochs(engine, "alice")
        answer = getattr(store, name)(**arguments(name))
        assert answer == (None if name == "delete_user" else name)  # the write's own answer
        moved = (0, 1) if name in mlflow_adapter.USER_SCOPED_WRITES else (1, 0)
        after = read_epochs(engine, "alice")
        assert (after[0] - before[0], after[1] - before[1]) == moved, f"{name} moved the wrong epoch"
    assert deleted == ["alice"]  # deleting a user also revokes its keys
    before = read_epochs(engine, "alice")
    assert store.ManagedSessionMaker() == "a session" and read_epochs(engine, "alice") == before
    for name in sorted(mlflow_adapter.AUTH_STORE_READS - {"get_user", "list_grants"}):
        before = read_epochs(engine, "alice")
        assert getattr(store, name)("alice") == name
        assert read_epochs(engine, "alice") == before, f"{name} moved an epoch"


def test_user_scoped_writes_name_the_user_they_change() -> None:
    """Each write counted as changing one user's access takes that user as ``username``."""
    assert mlflow_adapter.USER_SCOPED_WRITES <= mlflow_adapter.AUTH_STORE_WRITES
    for name in mlflow_adapter.USER_SCOPED_WRITES:
        assert "username" in inspect.signature(getattr(SqlAlchemyStore, name)).parameters, name
        assert mlflow_adapter.affected_user(name, (), arguments(name)) == "alice"
    assert (
        mlflow_adapter.affected_user(
            "delete_grants_for_resource", (), arguments("delete_grants_for_resource")
        )
        is None
    )
    assert mlflow_adapter.affected_user("delete_user", ("alice",), {}) is None  # its id may be reused


def test_a_method_mlflow_adds_later_counts_as_a_write() -> None:
    assert mlflow_adapter.is_auth_store_write("upsert_user_permission")
    assert not mlflow_adapter.is_auth_store_write("get_user")
    assert not mlflow_adapter.is_auth_store_write("_get_user")  # MLflow's own helpers, called by the store


def test_a_real_write_through_the_cache_moves_the_epoch(tmp_path: Path) -> None:
    real = SqlAlchemyStore()
    real.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    create_tables(real.engine)
    store = CachedAuthStore(real, ttl=60, on_user_deleted=lambda _: None)
    store.create_user("alice", "a-long-enough-password-1A!")
    assert read_epochs(real.engine, "alice") == (0, 1)
    store.create_role("reviewers", "default", "")
    assert read_epochs(real.engine, "alice") == (1, 1)
    assert store.has_user("alice") and read_epochs(real.engine, "alice") == (1, 1)


# --- 2, 3. the globals we replace --------------------------------------------------------------------------


def test_the_auth_config_names_the_hook_and_the_database() -> None:
    assert {"authorization_function", "database_uri", "default_permission"} <= set(auth.auth_config._fields)


def mlflow_server_sources() -> Iterator[tuple[Path, ast.Module]]:
    root = Path(auth.__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


REPLACED_IN = ("mlflow.server.auth", "mlflow.server.handlers")
# Module globals of mlflow.server.auth the adapter replaces (assumptions 7 and 12): a module importing
# one by name would keep MLflow's own (correct, but the slow read we replaced).
REPLACED_IN_AUTH = {
    "_get_tracking_store", "_get_model_registry_store", "RetentionGate", "retention_gate",
    "resolve_permissions", "_role_grant_for_resource",
}  # fmt: skip


def test_no_mlflow_module_keeps_its_own_reference_to_the_stores_we_replace() -> None:
    """``from mlflow.server.auth import store`` would keep MLflow's store after we replaced the global."""
    bound = []
    for path, tree in mlflow_server_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in (
                "mlflow.server.auth",
                "mlflow.server.handlers",
            ):
                names = {alias.name for alias in node.names}
                replaced = {"store", "auth_config", "_model_registry_store"}
                if node.module == "mlflow.server.auth":
                    replaced |= REPLACED_IN_AUTH
                if names & replaced:
                    bound.append(f"{path.name}: from {node.module} import {sorted(names & replaced)}")
    assert not bound


def test_the_registry_store_global_is_what_the_handlers_return() -> None:
    assert "_model_registry_store" in vars(handlers)
    source = inspect.getsource(handlers._get_model_registry_store)
    assert "global _model_registry_store" in source and "return _model_registry_store" in source


@pytest.fixture
def mlflow_globals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test installs into MLflow's module globals is undone after it."""
    monkeypatch.setattr(auth, "store", auth.store)
    monkeypatch.setattr(auth, "auth_config", auth.auth_config)
    monkeypatch.setattr(handlers, "_model_registry_store", object())


def test_installing_twice_wraps_the_auth_store_once(mlflow_globals: None, engine: sa.Engine) -> None:
    original = auth.store
    for _ in range(2):
        installed = mlflow_adapter.install_auth_store(
            lambda store: CachedAuthStore(store, 2, on_user_deleted=lambda _: None)
        )
        assert auth.store is installed and installed.wrapped is original


def test_installing_twice_wraps_the_registry_store_once(mlflow_globals: None) -> None:
    original = handlers._model_registry_store
    for _ in range(2):
        installed = mlflow_adapter.install_registry_store(RegistryStore)
        assert handlers._get_model_registry_store() is installed and installed.wrapped is original


def test_the_authorization_function_replaces_the_configured_one(
    mlflow_globals: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mlflow_adapter.FAIL_CLOSED_ENV, "")  # recorded, so the test leaves it as it was
    monkeypatch.delenv(mlflow_adapter.FAIL_CLOSED_ENV)
    mlflow_adapter.use_authorization_function("somewhere:hook")
    assert auth.auth_config.authorization_function == "somewhere:hook"
    assert environment_variables.MLFLOW_BASIC_AUTH_FAIL_CLOSED.get() is True
    assert mlflow_adapter.auth_database_uri() == auth.auth_config.database_uri


def test_the_fastapi_side_asks_the_hook_through_one_global_then_the_store_for_the_user() -> None:
    """What authenticate_fastapi_by_principal takes the place of (assumption 2)."""
    source = inspect.getsource(auth)
    assert "auth_result = _authenticate_custom_for_fastapi(request)" in source
    bridge = auth._authenticate_custom_for_fastapi
    bridge = getattr(bridge, "__wrapped__", bridge)
    assert "return store.get_user(username)" in inspect.getsource(bridge)


def test_a_principal_skips_the_flask_context_and_gets_the_user_mlflows_bridge_gets(
    mlflow_globals: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Differential: MLflow's own bridge, running our hook in a Flask request context, and ours."""
    from starlette.requests import Request

    from hokusai_registry.server import flask_hook
    from hokusai_registry.server.context import Principal, current_principal

    real = SqlAlchemyStore()
    real.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    real.create_user("alice", "a-long-enough-password-1A!")
    monkeypatch.setattr(auth, "store", real)
    monkeypatch.setattr(auth, "_authenticate_custom_for_fastapi", auth._authenticate_custom_for_fastapi)
    mlflow_adapter.use_authorization_function(flask_hook.AUTHORIZATION_FUNCTION)
    mlflow_bridge = auth._authenticate_custom_for_fastapi
    for _ in range(2):  # installed twice: wraps MLflow's bridge once
        mlflow_adapter.authenticate_fastapi_by_principal(current_principal)
    assert auth._authenticate_custom_for_fastapi.__wrapped__ is mlflow_bridge  # type: ignore[attr-defined]
    scope = {"type": "http", "method": "PUT", "path": "/ajax-api/2.0/mlflow-artifacts/artifacts/1/x",
             "query_string": b"", "headers": [], "root_path": ""}  # fmt: skip
    for username in ("alice", "nobody"):
        token = current_request.set(
            RequestState(Principal(key_id="k1", username=username, scope="write"), read_only=False)
        )
        try:
            ours, theirs = (
                bridge(Request(scope)) for bridge in (auth._authenticate_custom_for_fastapi, mlflow_bridge)
            )
        finally:
            current_request.reset(token)
        assert (ours and (ours.id, ours.username, ours.is_admin)) == (
            theirs and (theirs.id, theirs.username, theirs.is_admin)
        )
        assert (ours is None) == (username == "nobody")
    asked: list[object] = []
    monkeypatch.setattr(auth, "_authenticate_custom_for_fastapi", lambda request: asked.append(request))
    mlflow_adapter.authenticate_fastapi_by_principal(current_principal)
    request = Request(scope)
    assert auth._authenticate_custom_for_fastapi(request) is None and asked == [request]  # no principal


# --- 4. the FastAPI permission middleware ------------------------------------------------------------------


def test_the_permission_middleware_is_found_by_its_dispatch_name() -> None:
    app = FastAPI()
    add_fastapi_permission_middleware(app)
    found = mlflow_adapter.find_permission_middleware(app)
    assert found is not None and app.user_middleware[found.index].kwargs["dispatch"] is found.dispatch
    assert mlflow_adapter.find_permission_middleware(FastAPI()) is None


def test_artifact_transfers_have_no_response_filter() -> None:
    """MLflow's dispatch must do nothing to an artifact response, or the gate's fast path would skip it."""
    endpoints = {route.endpoint for route in artifact_router.routes}  # type: ignore[attr-defined]
    assert endpoints
    assert not endpoints & set(FASTAPI_ENDPOINT_RESPONSE_FILTERS)


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("prefix", ["/api/2.0", "/ajax-api/2.0"])
def test_artifact_transfers_have_no_after_handler(prefix: str, method: str) -> None:
    path = f"{prefix}/mlflow-artifacts/artifacts/1/run/artifacts/model.pkl"
    assert mlflow_adapter.is_artifact_transfer(path, method)
    assert mlflow_adapter.find_after_request_handler(path, method) is None
    assert not mlflow_adapter.is_artifact_transfer(f"{prefix}/mlflow/experiments/get", method)


def test_flask_routes_have_no_fastapi_validator_and_artifact_routes_are_native() -> None:
    app = FastAPI()
    app.include_router(artifact_router)
    routes = mlflow_adapter.native_routes(app)
    artifact = {"type": "http", "method": "GET", "path": "/api/2.0/mlflow-artifacts/artifacts/1/x"}
    flask = {"type": "http", "method": "GET", "path": "/api/2.0/mlflow/experiments/get"}
    assert mlflow_adapter.matches_native_route(routes, artifact)
    assert not mlflow_adapter.matches_native_route(routes, flask)
    assert mlflow_adapter.find_validator(flask["path"], "GET") is None


def test_our_app_is_reached_only_when_mounted_before_mlflows_catch_all_flask_mount() -> None:
    from flask import Flask
    from mlflow.server.fastapi_app import create_fastapi_app
    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    flask = Flask("stand-in")
    flask.add_url_rule("/<path:anything>", "any", lambda anything: "flask")
    fastapi_app = create_fastapi_app(flask)
    local = "http://127.0.0.1"  # MLflow's host check refuses TestClient's default host
    assert TestClient(fastapi_app, base_url=local).get("/api/ours/ping").text == "flask"  # Flask swallows it
    ours = FastAPI()
    ours.add_api_route("/ping", lambda: PlainTextResponse("ours"))
    mlflow_adapter.mount_before_flask(fastapi_app, "/api/ours", ours)
    client = TestClient(fastapi_app, base_url=local)
    assert client.get("/api/ours/ping").text == "ours"
    assert client.get("/api/2.0/mlflow/experiments/get").text == "flask"
    native = mlflow_adapter.native_routes(fastapi_app)
    assert not mlflow_adapter.matches_native_route(
        native, {"type": "http", "method": "GET", "path": "/api/ours/ping"}
    )


# The fast path assumes MLflow's dispatch, for an artifact transfer, only decides: it reads no body
# and does nothing after `call_next`. Any change to that function means re-reading it.
AUDITED_DISPATCH_SHA256 = "344ee9b3adc66f0cb7025ba78bf41537cd96b1f01163f80c896bfdf85b4baee2"  # MLflow 3.17.2


def test_mlflows_permission_dispatch_is_the_one_the_fast_path_was_audited_against() -> None:
    source = inspect.getsource(add_fastapi_permission_middleware)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == AUDITED_DISPATCH_SHA256, (
        "MLflow's fastapi_permission_middleware changed: re-audit permission_gate._decide_then_stream "
        "against it (body reads, work after call_next, response filters), then update the digest"
    )


# --- 5. private environment variables ----------------------------------------------------------------------


def test_the_private_environment_variables_exist_under_these_names() -> None:
    assert environment_variables._MLFLOW_AUTH_ADMIN_BOOTSTRAPPED.name == mlflow_adapter.ADMIN_BOOTSTRAPPED_ENV
    assert environment_variables.MLFLOW_BASIC_AUTH_FAIL_CLOSED.name == mlflow_adapter.FAIL_CLOSED_ENV


# --- nothing else reaches MLflow's internals ---------------------------------------------------------------


def private_mlflow_uses(path: Path) -> list[str]:
    """Private MLflow names a module imports or reads: ``from mlflow... import _x``, ``mlflow._m``,
    ``handlers._x`` on a module imported from mlflow, and ``_MLFLOW_*`` environment variables."""
    source = path.read_text()
    tree = ast.parse(source)
    found, mlflow_names = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            if any(part.startswith("_") for part in (node.module or "").split(".")):
                found.append(f"from {node.module}")
            for alias in node.names:
                mlflow_names.add(alias.asname or alias.name)
                if alias.name.startswith("_"):
                    found.append(f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlflow":
                    mlflow_names.add((alias.asname or alias.name).split(".")[0])
                    found += [
                        f"import {alias.name}" for part in alias.name.split(".") if part.startswith("_")
                    ]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in mlflow_names
        ):
            found.append(f"{node.value.id}.{node.attr}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "_MLFLOW_" in node.value:
            found.append(repr(node.value))
    return found


def test_only_the_adapter_touches_mlflow_internals() -> None:
    offenders = {
        str(path.relative_to(SRC)): uses
        for path in sorted(SRC.rglob("*.py"))
        if path != ADAPTER and (uses := private_mlflow_uses(path))
    }
    assert not offenders, f"private MLflow names outside server/mlflow_adapter.py: {offenders}"


def test_the_check_sees_private_names() -> None:
    """The grep above would pass vacuously if it could not see them: it must find the adapter's."""
    uses = private_mlflow_uses(ADAPTER)
    assert "from mlflow.server.auth import _find_fastapi_validator" in uses
    assert "handlers._model_registry_store" in uses
    assert "'_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED'" in uses


# --- 6, 7. how MLflow's search filters decide a row ---------------------------------------------------------

GRANT_TYPES = ("registered_model", "prompt", "experiment", "workspace", "registered_model_version")
IDS = ("a", "b", "c", "*")


@dataclass(frozen=True)
class Grant:
    """A row as ``store.list_grants`` returns it (the fold reads these three fields)."""

    resource_type: str
    resource_pattern: str
    permission: str


GRANTS = st.lists(
    st.builds(
        Grant,
        st.sampled_from(GRANT_TYPES),
        st.sampled_from(IDS),
        st.sampled_from(["READ", "USE", "EDIT", "MANAGE", "DENY", "NO_PERMISSIONS"]),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(grants=GRANTS, resource_type=st.sampled_from(GRANT_TYPES), resource_id=st.sampled_from(IDS))
def test_the_indexed_fold_is_mlflows_fold(grants: list[Grant], resource_type: str, resource_id: str) -> None:
    """Differential: for any grants and key, the indexed gate folds to what MLflow's own gate folds to."""
    from mlflow.server.auth import RetentionGate
    from mlflow.server.auth.permissions import GrantLoadKey

    key = GrantLoadKey(resource_type, resource_id)
    args: tuple[Any, ...] = ({}, grants, "NO_PERMISSIONS", auth.NO_PERMISSIONS)
    expected = RetentionGate(*args)._fold(key)
    assert mlflow_adapter.indexed_retention_gate()(*args)._fold(key) == expected
    cached = mlflow_adapter.GrantList.indexed(grants)  # as the cached auth store hands them out
    assert mlflow_adapter.indexed_retention_gate()({}, cached, *args[2:])._fold(key) == expected


@settings(max_examples=300, deadline=None)
@given(
    grants=GRANTS,
    default=st.sampled_from(["NO_PERMISSIONS", "READ", "EDIT"]),
    resource_type=st.sampled_from(("registered_model", "prompt", "experiment")),
    resource_id=st.sampled_from(IDS[:-1]),
)
def test_the_indexed_gate_retains_what_mlflows_retains(
    grants: list[Grant], default: str, resource_type: str, resource_id: str
) -> None:
    """The whole decision a search filter makes per row (template, workspace fallback, default)."""
    from mlflow.server.auth import RetentionGate
    from mlflow.server.auth.permissions import get_permission
    from mlflow.server.auth.requirements import Requirement

    template = Requirement(resource_type, "*", "read", fallback_if_no_grant=(("workspace", "*"),))
    args: tuple[Any, ...] = ({resource_type: template}, grants, default, get_permission(default))
    ours = mlflow_adapter.indexed_retention_gate()(*args)
    assert ours.retains(resource_type, resource_id) == RetentionGate(*args).retains(
        resource_type, resource_id
    )


def test_the_gate_is_built_from_the_module_global_and_folds_with_matches() -> None:
    """retention_gate must look RetentionGate up at call time, and a grant match only its type with
    its own id or *: the two facts the indexed fold stands on."""
    from mlflow.server.auth.permissions import matches

    assert "RetentionGate(" in inspect.getsource(auth.retention_gate)
    assert "fold_grants_for_key(self._grants, key)" in inspect.getsource(auth.RetentionGate._fold)
    assert matches("*", "registered_model", "m") and matches("m", "registered_model", "m")
    assert not matches("m", "registered_model", "n") and not matches("m*", "registered_model", "mm")


# MLflow 3.17.2's source of the three grant readers mlflow_adapter.GRANT_READERS replaces: a change to
# any of them means re-reading it and making ours the same code again.
AUDITED_GRANT_READERS_SHA256 = {
    "resolve_permissions": "89b4cbe233367e84f393b01f710c69faf5393aa995b183af71843cde78f70c38",
    "retention_gate": "4e1446fc3bd1b3e850ab19b19a8f983a8dcf68249ea9baea14a9aaf60dccca94",
    "_role_grant_for_resource": "933b3fe89ed5da43cc899e3c61541d8b534524a991899799dfc767ded2ecebff",
}


def mlflows(name: str) -> Any:
    current = getattr(auth, name)
    return getattr(current, "__wrapped__", current)


def test_the_grant_readers_replaced_are_the_ones_audited() -> None:
    assert set(mlflow_adapter.GRANT_READERS) == set(AUDITED_GRANT_READERS_SHA256)
    for name, digest in AUDITED_GRANT_READERS_SHA256.items():
        source = inspect.getsource(mlflows(name))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, f"MLflow's {name} changed: re-read it"


def test_installing_the_grant_readers_twice_keeps_mlflows_originals(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*mlflow_adapter.GRANT_READERS, "RetentionGate"]:
        monkeypatch.setattr(auth, name, getattr(auth, name))
    originals = {name: mlflows(name) for name in mlflow_adapter.GRANT_READERS}
    for _ in range(2):
        mlflow_adapter.index_grant_folds()
    for name, ours in mlflow_adapter.GRANT_READERS.items():
        assert getattr(auth, name) is ours and mlflows(name) is originals[name]


@dataclass
class OneUserStore:
    """An auth store with one user whose grants are ``grants``; ``cached``: as our cache hands them out."""

    grants: list[Grant]
    cached: bool

    def get_user(self, username: str) -> Any:
        return auth.User(7, username, "", False)

    def list_grants(self, user_id: int, workspace: str, resource_types: Any) -> list[Any]:
        found = [grant for grant in self.grants if grant.resource_type in resource_types]
        return mlflow_adapter.GrantList.indexed(found) if self.cached else found


KEYS = st.lists(st.tuples(st.sampled_from(GRANT_TYPES), st.sampled_from(IDS)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    grants=GRANTS,
    keys=KEYS,
    default=st.sampled_from(["NO_PERMISSIONS", "READ", "EDIT"]),
    action=st.sampled_from(["read", "update", "delete", "manage"]),
)
def test_the_grant_readers_decide_what_mlflows_decide(
    grants: list[Grant], keys: list[tuple[str, str]], default: str, action: str
) -> None:
    """Differential: MLflow's three grant readers over a plain list, ours over the cached, indexed list."""
    from mlflow.server.auth.permissions import GrantLoadKey
    from mlflow.server.auth.requirements import Requirement

    load_keys = [GrantLoadKey(t, i) for t, i in keys]
    types = sorted({t for t, _ in keys})
    templates = [Requirement(t, "*", action, fallback_if_no_grant=(("workspace", "*"),)) for t in types]
    config = auth.auth_config._replace(default_permission=default)
    original_store, original_config = auth.store, auth.auth_config
    try:
        auth.auth_config = config
        answers = []
        for store, readers in (
            (
                OneUserStore(grants, cached=False),
                {name: mlflows(name) for name in mlflow_adapter.GRANT_READERS},
            ),
            (OneUserStore(grants, cached=True), mlflow_adapter.GRANT_READERS),
        ):
            auth.store = store
            gate = readers["retention_gate"]("u", ("workspace", "*"), templates)
            answers.append(
                (
                    readers["resolve_permissions"]("u", "default", load_keys),
                    [readers["_role_grant_for_resource"](7, t, i, "default") for t, i in keys],
                    [gate.retains(t, i) for t, i in keys],
                    gate._always,
                )
            )
    finally:
        auth.store, auth.auth_config = original_store, original_config
    assert answers[0] == answers[1]


@pytest.mark.parametrize("resource_key", [["1"], {"id": "1"}, 1, None])
def test_a_resource_id_that_is_no_string_is_decided_as_mlflow_decides_it(resource_key: Any) -> None:
    """A request body can carry a list or an object where an id belongs: MLflow's fold compares it
    with each pattern (no grant matches but ``*``); ours must not hash it (a 500 instead of a 403)."""
    grants = [Grant("experiment", "1", "MANAGE"), Grant("experiment", "*", "READ")]
    original_store = auth.store
    try:
        answers = []
        for cached, reader in (
            (False, mlflows("_role_grant_for_resource")),
            (True, _role_grant_for_resource()),
        ):
            auth.store = OneUserStore(grants, cached=cached)
            answers.append(reader(7, "experiment", resource_key, "default"))
    finally:
        auth.store = original_store
    assert answers[0] == answers[1] == auth.get_permission("READ")


def _role_grant_for_resource() -> Any:
    return mlflow_adapter.GRANT_READERS["_role_grant_for_resource"]


def test_a_cached_grant_list_cannot_be_changed() -> None:
    grants = mlflow_adapter.GrantList.indexed([Grant("experiment", "1", "READ")])
    for change in (
        lambda: grants.append(Grant("experiment", "2", "MANAGE")),
        lambda: grants.__setitem__(0, Grant("experiment", "1", "MANAGE")),
        lambda: grants.sort(),
        lambda: grants.clear(),
    ):
        with pytest.raises(TypeError, match="shared"):
            change()
    assert grants == [Grant("experiment", "1", "READ")] and list(grants) == grants


def test_search_methods_take_the_keywords_the_scoping_passes() -> None:
    """MLflow's handlers and filters call these with keywords; scoping rewrites two of them."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    for method in (
        RegistryStore.search_registered_models,
        RegistryStore.search_model_versions,
        TrackingStore.search_experiments,
    ):
        assert {"filter_string", "page_token", "max_results"} <= set(inspect.signature(method).parameters)


# --- 8. model versions: the scan verdict in MLflow's own status --------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Any]:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistrySqlStore

    store = RegistrySqlStore(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield store
    mlflow_adapter.on_model_version_insert(lambda _conn, _row: None)  # the listener is process-wide
    store.engine.dispose()


def test_a_status_set_at_insert_is_the_one_stored_and_returned(registry: Any) -> None:
    from mlflow.entities.model_registry import ModelVersionTag

    seen: list[mlflow_adapter.NewModelVersion] = []

    def decide(conn: sa.Connection, row: mlflow_adapter.NewModelVersion) -> str:
        seen.append(row)
        conn.execute(sa.text("SELECT 1"))  # the inserting transaction's connection is usable
        return "PENDING_REGISTRATION"

    mlflow_adapter.on_model_version_insert(decide)
    mlflow_adapter.on_model_version_insert(decide)  # installing twice listens once
    registry.create_registered_model("m")
    created = registry.create_model_version(
        "m", "mlflow-artifacts:/1/models/m-1/artifacts", tags=[ModelVersionTag("k", "v")]
    )
    assert created.status == "PENDING_REGISTRATION"
    assert registry.get_model_version("m", "1").status == "PENDING_REGISTRATION"
    assert seen == [
        mlflow_adapter.NewModelVersion(
            "default", "m", 1, "mlflow-artifacts:/1/models/m-1/artifacts", {"k": "v"}
        )
    ]
    registry.create_registered_model("copy")
    copied = registry.copy_model_version(created, "copy")
    assert copied.status == "PENDING_REGISTRATION" and [row.name for row in seen] == ["m", "copy"]


def test_the_outcome_writes_status_message_and_tags_in_one_transaction(registry: Any) -> None:
    registry.create_registered_model("m")
    registry.create_model_version("m", "mlflow-artifacts:/x")
    with registry.engine.begin() as conn:
        mlflow_adapter.set_model_version_outcome(
            conn, "default", "m", 1, "FAILED_REGISTRATION", "x" * 600, {"hokusai_scan_verdict": "unsafe"}
        )
    with registry.engine.begin() as conn:  # a second outcome replaces the tag, it does not duplicate it
        mlflow_adapter.set_model_version_outcome(
            conn, "default", "m", 1, "FAILED_REGISTRATION", "why", {"hokusai_scan_verdict": "error"}
        )
    version = registry.get_model_version("m", "1")
    assert (version.status, version.status_message) == ("FAILED_REGISTRATION", "why")
    assert version.tags == {"hokusai_scan_verdict": "error"}
    assert mlflow_adapter.registry_engine is not None


def test_a_versions_tags_are_keyed_by_workspace_name_version_and_key() -> None:
    """model_version_outcome_after replaces a tag ON CONFLICT with this primary key (PostgreSQL)."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersionTag

    key = {column.name for column in SqlModelVersionTag.__table__.primary_key.columns}
    assert key == {"workspace", "name", "version", "key"}


@pytest.mark.parametrize(
    ("status", "message", "tags"),
    [
        ("READY", None, {"hokusai_scan_verdict": "clean", "client": "replaced"}),
        ("FAILED_REGISTRATION", "x" * 600, {"hokusai_scan_verdict": "unsafe"}),
    ],
)
def test_a_created_version_with_its_outcome_is_what_reading_it_back_returns(
    registry: Any, status: str, message: str | None, tags: dict[str, str]
) -> None:
    from mlflow.entities.model_registry import ModelVersionTag

    mlflow_adapter.on_model_version_insert(lambda _conn, _row: "PENDING_REGISTRATION")
    registry.create_registered_model("m")
    created = registry.create_model_version(
        "m", "mlflow-artifacts:/x", run_id=None, tags=[ModelVersionTag("client", "kept?")]
    )
    with registry.engine.begin() as conn:
        mlflow_adapter.set_model_version_outcome(conn, "default", "m", 1, status, message, tags)
    answered = mlflow_adapter.with_outcome(created, status, message, tags)
    read_back = registry.get_model_version("m", "1")
    protos = [version.to_proto() for version in (answered, read_back)]
    expected = sorted({"client": "kept?", **tags}.items())
    assert [sorted((tag.key, tag.value) for tag in proto.tags) for proto in protos] == [expected] * 2
    for proto in protos:
        del proto.tags[:]  # in no particular order
    assert protos[0] == protos[1]
    assert (answered.status, answered.status_message, answered.tags) == (
        read_back.status,
        read_back.status_message,
        read_back.tags,
    )
    assert (answered.model_id, answered.params, answered.metrics) == (
        read_back.model_id,
        read_back.params,
        read_back.metrics,
    )
    assert created.status == "PENDING_REGISTRATION" and created.tags == {"client": "kept?"}  # not changed


def test_the_status_message_column_holds_what_the_outcome_truncates_to() -> None:
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

    assert SqlModelVersion.__table__.c.status_message.type.length == 500
    assert SqlModelVersion.__table__.c.status.default.arg == "READY"


# --- 9. the artifact destination's repository ---------------------------------------------------------------


def test_every_proxied_transfer_goes_through_the_guarded_destination_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR
    from mlflow.server import artifact_router as native
    from mlflow.store.artifact.artifact_repo import (
        ArtifactRepository,
        MultipartUploadMixin,
        StreamUploadMixin,
    )

    monkeypatch.delenv(ARTIFACTS_DESTINATION_ENV_VAR, raising=False)
    monkeypatch.setattr(handlers, "_artifact_repo", None)
    reads: list[str] = []
    writes: list[str] = []
    guarded = mlflow_adapter.guard_artifact_repository(reads.append, writes.append, str(tmp_path))
    assert os.environ[ARTIFACTS_DESTINATION_ENV_VAR] == str(tmp_path)  # the name MLflow reads
    assert (
        handlers._get_artifact_repo_mlflow_artifacts() is guarded and native._get_artifact_repo() is guarded
    )
    again = mlflow_adapter.guard_artifact_repository(reads.append, writes.append, str(tmp_path))
    assert again is guarded  # guarding twice wraps once
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("x")
    local = tmp_path / "upload.bin"
    local.write_text("y")
    guarded.get_local_path("a/f.txt")
    guarded.log_artifact(str(local), "b/c")
    guarded.log_artifacts(str(tmp_path / "a"), artifact_path="d")
    guarded.delete_artifacts("b")
    assert reads == ["a/f.txt"] and writes == ["b/c/upload.bin", "d", "b"]
    # the local repository streams uploads: both handlers' stream methods are guarded too
    assert isinstance(guarded, StreamUploadMixin)
    guarded.log_artifact_from_stream(io.BytesIO(b"z"), "s.txt", artifact_path="e")

    async def chunks() -> Any:
        yield b"z"

    asyncio.run(guarded.log_artifact_from_async_stream(chunks(), "dir/a.txt", "f/g"))
    assert writes[3:] == ["e/s.txt", "f/g/a.txt"] and (tmp_path / "f" / "g" / "a.txt").read_bytes() == b"z"
    # the parameter names the guard binds positional arguments to
    owners = {"create_multipart_upload": MultipartUploadMixin, "log_artifact_from_stream": StreamUploadMixin}
    owners["log_artifact_from_async_stream"] = StreamUploadMixin
    for name, parameters in mlflow_adapter.REPOSITORY_PARAMETERS.items():
        signature = list(inspect.signature(getattr(owners.get(name, ArtifactRepository), name)).parameters)[
            1:
        ]
        assert tuple(signature[: len(parameters)]) == parameters, name
    # every upload handler writes through one of them
    assert "artifact_repo.log_artifact_from_async_stream(" in inspect.getsource(native.upload_artifact)
    assert "artifact_repo.log_artifact, tmp_path" in inspect.getsource(native.upload_artifact)
    flask_upload = inspect.getsource(handlers._upload_artifact)
    assert (
        "log_artifact_from_stream(request.stream" in flask_upload and ".log_artifact(tmp_path" in flask_upload
    )
    for handler in (
        handlers.get_artifact_handler,
        handlers.get_model_version_artifact_handler,
        handlers.get_logged_model_artifact_handler,
    ):
        source = inspect.getsource(handler)
        assert "_get_artifact_repo_mlflow_artifacts()" in source and "_send_artifact(" in source
    sent = inspect.getsource(handlers._send_artifact)
    assert "get_local_path(path)" in sent and "download_artifacts(path" in sent
    routed = inspect.getsource(native.download_artifact)
    assert "get_local_path(artifact_path)" in routed and "download_artifacts, artifact_path" in routed
    # the model-version routes read the download URI from the registry store (registry_store.py guards it)
    assert "get_model_version_download_uri(name, version)" in inspect.getsource(
        handlers.get_model_version_artifact_handler
    )


def test_a_runs_uri_resolves_through_the_handlers_tracking_store() -> None:
    assert callable(handlers._get_tracking_store)
    assert "_get_tracking_store()" in inspect.getsource(mlflow_adapter.run_artifact_location)


# --- 11. one file's download error, folded by download_artifacts --------------------------------------------


def test_a_translated_file_download_error_keeps_its_code_through_mlflows_fold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from botocore.exceptions import EndpointConnectionError
    from mlflow.entities import FileInfo
    from mlflow.exceptions import MlflowException
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    from hokusai_registry.server import outages

    class Unreachable(ArtifactRepository):  # S3 answering the listing, then gone for the file itself
        def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None: ...
        def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None: ...
        def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
            return [FileInfo(path, False, 1)] if path == "dir" else []

        def _download_file(self, remote_file_path: str, local_path: str) -> None:
            raise EndpointConnectionError(endpoint_url="http://s3.invalid/bucket/key")

    # S3's repository downloads through the base class's fold, one _download_file per file.
    assert S3ArtifactRepository.download_artifacts is ArtifactRepository.download_artifacts
    assert "self._download_file" in inspect.getsource(ArtifactRepository.download_artifacts)
    repository = Unreachable("s3://bucket/prefix")
    with pytest.raises(MlflowException) as folded:
        repository.download_artifacts("model.bin", str(tmp_path))
    assert folded.value.error_code == "INTERNAL_ERROR"  # the fold: a 500 that no longer names botocore

    monkeypatch.setenv(ARTIFACTS_DESTINATION_ENV_VAR, "s3://bucket/prefix")
    monkeypatch.setattr(handlers, "_artifact_repo", repository)
    assert mlflow_adapter.translate_download_errors(outages.as_unavailable) is repository
    assert mlflow_adapter.translate_download_errors(outages.as_unavailable) is repository  # wraps once
    with pytest.raises(MlflowException) as translated:
        repository.download_artifacts("model.bin", str(tmp_path))
    assert translated.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert translated.value.get_http_status_code() == 503
    assert "artifact store" in translated.value.message
    monkeypatch.delenv(ARTIFACTS_DESTINATION_ENV_VAR)
    assert mlflow_adapter.translate_download_errors(outages.as_unavailable) is None


def test_one_file_downloads_by_its_path_with_the_repositorys_download_file(tmp_path: Path) -> None:
    """What the scan reads a remote file with: the keyword arguments every repository takes."""
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    for cls in (ArtifactRepository, S3ArtifactRepository, LocalArtifactRepository):
        parameters = list(inspect.signature(cls._download_file).parameters)
        assert parameters == ["self", "remote_file_path", "local_path"], cls
    (tmp_path / "store" / "dir").mkdir(parents=True)
    (tmp_path / "store" / "dir" / "weights.bin").write_bytes(b"\0" * 3)
    repository = LocalArtifactRepository(str(tmp_path / "store"))
    mlflow_adapter.download_one_file(repository, "dir/weights.bin", str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == b"\0" * 3


# --- 12. the auth app's reads of runs, logged models and registered models ----------------------------------

# Where MLflow's auth app reads these entities, and what it reads of them: each was checked by hand to
# use ``experiment_id`` (run: ``info.experiment_id``), ``_is_prompt()`` or ``workspace`` and nothing else.
# A new call site has to be checked the same way before it is added here.
AUTH_ENTITY_READS = {
    "get_run": {
        "_graphql_get_permission_for_run",
        "_run_requirement",
        "validate_can_read_metric_history_bulk",
    },
    "get_logged_model": {"_authorize_logged_model_id", "_validate_can_update_run_and_models"},
    "get_registered_model": {
        "<module>",  # the workspace fetchers' table: reads .workspace
        "_get_permission_from_model_version",
        "_get_permission_from_prompt_name",
        "_get_registered_model_or_prompt_permission",
        "_get_registered_model_permission",
        "_graphql_get_permission_for_model",
        "_registered_model_or_prompt_target",
        "_request_targets_prompt",
    },
}


def entity_reads(tree: ast.Module) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else where
            if isinstance(child, ast.Attribute) and child.attr in AUTH_ENTITY_READS:
                found.setdefault(child.attr, set()).add(where)
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_the_auth_app_reads_entities_only_where_it_was_audited() -> None:
    tree = ast.parse(Path(auth.__file__).read_text())
    assert entity_reads(tree) == AUTH_ENTITY_READS
    imported = {
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "mlflow.server.handlers"
        for alias in node.names
    }
    assert {"_get_tracking_store", "_get_model_registry_store"} <= imported


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_cluster() as cluster:
        if not cluster.controllable:
            pytest.skip("makes databases in, and restarts, a PostgreSQL of its own")
        yield cluster


def fresh_database(cluster: Postgres) -> str:
    name = f"t{os.urandom(6).hex()}"
    engine = sa.create_engine(cluster.uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{cluster.uri.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """MLflow's SQL tracking and registry stores; on PostgreSQL the row lookups read from the
    single-statement pool (database.py), on SQLite through MLflow's own session."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistrySqlStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingSqlStore

    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        uri = fresh_database(request.getfixturevalue("postgres"))
    tracking = TrackingSqlStore(uri, str(tmp_path / "artifacts"))
    registry = RegistrySqlStore(uri)
    yield tracking, registry
    tracking.engine.dispose()
    registry.engine.dispose()


def error_code(read: Any, *args: Any) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        read(*args)
    except MlflowException as e:
        return e.error_code
    return None


def test_row_lookups_find_what_mlflows_full_reads_find(stores: tuple[Any, Any]) -> None:
    """Differential: the same experiment, artifact location, prompt flag and workspace as MLflow's own
    ``get_run``, ``get_logged_model`` and ``get_registered_model``, and the same error where those fail."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.entities.model_registry import ModelVersionTag, RegisteredModelTag

    tracking, registry = stores
    experiments = [tracking.create_experiment(f"e{i}") for i in range(2)]
    runs = []
    for i, experiment in enumerate(experiments * 2):
        run = tracking.create_run(experiment, "u", 0, [RunTag("mlflow.runName", f"r{i}")], None)
        tracking.log_batch(run.info.run_id, [Metric("m", 1.0, 0, 0)], [Param("p", "v")], [RunTag("t", "v")])
        runs.append(run.info.run_id)
    tracking.delete_run(runs[-1])
    models = [tracking.create_logged_model(e, name=f"lm{e}").model_id for e in experiments]
    tracking.set_logged_model_tags(models[0], [])
    tracking.delete_logged_model(models[-1])
    registry.create_registered_model("plain", [RegisteredModelTag("k", "v")])
    registry.create_registered_model("prompt", [RegisteredModelTag("mlflow.prompt.is_prompt", "true")])
    registry.create_registered_model("versions")
    for _ in range(3):
        registry.create_model_version("versions", "mlflow-artifacts:/x", tags=[ModelVersionTag("a", "b")])

    for run_id in [*runs, "0" * 32, ""]:
        full = error_code(tracking.get_run, run_id)
        assert error_code(mlflow_adapter.run_row, tracking, run_id) == full
        if full is None:
            row, run = mlflow_adapter.run_row(tracking, run_id), tracking.get_run(run_id)
            assert (row.info.experiment_id, row.info.artifact_uri) == (
                run.info.experiment_id,
                run.info.artifact_uri,
            )
    for model_id in [*models, "m-missing"]:
        for allow_deleted in (False, True):
            full = error_code(tracking.get_logged_model, model_id, allow_deleted)
            assert error_code(mlflow_adapter.logged_model_row, tracking, model_id, allow_deleted) == full
            if full is None:
                row = mlflow_adapter.logged_model_row(tracking, model_id, allow_deleted)
                assert row.experiment_id == tracking.get_logged_model(model_id, allow_deleted).experiment_id
    for name in ["plain", "prompt", "versions", "missing", ""]:
        full = error_code(registry.get_registered_model, name)
        assert error_code(mlflow_adapter.registered_model_row, registry, name) == full
        if full is None:
            row, model = (
                mlflow_adapter.registered_model_row(registry, name),
                registry.get_registered_model(name),
            )
            assert (row.name, row._is_prompt(), row.workspace) == (
                model.name,
                model._is_prompt(),
                model.workspace,
            )


def test_row_lookups_survive_a_database_restart_between_requests(postgres: Postgres, tmp_path: Path) -> None:
    """The single-statement pool does not ping: a lookup on a connection the restart ended is
    tried once more on a new one, so no request fails for it (PostgreSQL answers 57P01 first).
    Pins ``_get_managed_session_maker`` too: the session it makes of ours translates errors as MLflow's."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistrySqlStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingSqlStore

    uri = fresh_database(postgres)
    tracking, registry = TrackingSqlStore(uri, str(tmp_path / "artifacts")), RegistrySqlStore(uri)
    run_id = tracking.create_run(tracking.create_experiment("e"), "u", 0, [], None).info.run_id
    registry.create_registered_model("m")
    rows = database.single_statement_engine(tracking.engine, "rows")
    for _ in range(2):
        assert mlflow_adapter.run_row(tracking, run_id).info.run_id == run_id
        assert mlflow_adapter.registered_model_row(registry, "m").name == "m"
        assert rows.pool.checkedin() == 1  # type: ignore[attr-defined]  # read through the rows pool
        postgres.stop()
        postgres.start()
    assert mlflow_adapter.run_row(tracking, run_id).info.run_id == run_id
    assert mlflow_adapter.registered_model_row(registry, "m").name == "m"
    postgres.stop()
    try:  # down: MLflow's own answer for it (its managed session's translation), a 503
        assert error_code(mlflow_adapter.run_row, tracking, run_id) == "TEMPORARILY_UNAVAILABLE"
    finally:
        postgres.start()
    tracking.engine.dispose()
    registry.engine.dispose()


def test_a_row_lookup_with_no_free_connection_is_the_databases_503(
    postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's session makes a pool timeout a 400 BAD_REQUEST, which no client retries; ours is the
    503 TEMPORARILY_UNAVAILABLE (with Retry-After) every other database outage is."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingSqlStore

    monkeypatch.setattr(database, "POOL_TIMEOUT_SECONDS", 0.2)
    tracking = TrackingSqlStore(fresh_database(postgres), str(tmp_path / "artifacts"))
    run_id = tracking.create_run(tracking.create_experiment("e"), "u", 0, [], None).info.run_id
    rows = database.single_statement_engine(tracking.engine, "rows")
    kept, overflow = database.POOL_SIZES["rows"]
    held = [rows.connect() for _ in range(kept + overflow)]
    try:
        assert error_code(mlflow_adapter.run_row, tracking, run_id) == "TEMPORARILY_UNAVAILABLE"
    finally:
        for conn in held:
            conn.close()
    assert mlflow_adapter.run_row(tracking, run_id).info.run_id == run_id
    tracking.engine.dispose()


def test_runs_get_and_logged_models_get_read_through_the_sql_store_classs_methods() -> None:
    """What shared_reads.py hands over: the handlers call exactly these, with these arguments."""
    assert "_get_tracking_store().get_run(run_id)" in inspect.getsource(handlers.get_run_impl)
    assert "_get_tracking_store().get_logged_model(model_id, allow_deleted=allow_deleted)" in (
        inspect.getsource(handlers._get_logged_model)
    )
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def parameters(name: str) -> list[str]:
        method = getattr(SqlAlchemyStore, name)
        return list(inspect.signature(getattr(method, "__wrapped__", method)).parameters)  # MLflow's own

    assert parameters("get_run") == ["self", "run_id"]
    assert parameters("get_logged_model") == ["self", "model_id", "allow_deleted"]


def test_the_auth_app_gets_the_row_lookups_and_the_rest_of_each_store(
    monkeypatch: pytest.MonkeyPatch, stores: tuple[Any, Any]
) -> None:
    tracking, registry = stores
    monkeypatch.setattr(auth, "_get_tracking_store", auth._get_tracking_store)
    monkeypatch.setattr(auth, "_get_model_registry_store", auth._get_model_registry_store)
    monkeypatch.setattr(handlers, "_tracking_store", tracking)
    monkeypatch.setattr(handlers, "_model_registry_store", registry)
    share = [False]
    mlflow_adapter.install_auth_row_lookups(lambda: share[0])
    registry.create_registered_model("m")
    registry.create_model_version("m", "mlflow-artifacts:/x")

    experiment = tracking.create_experiment("e")
    run_id = tracking.create_run(experiment, "u", 0, [], None).info.run_id
    from mlflow.entities import Param

    tracking.log_batch(run_id, [], [Param("p", "v")], [])
    assert auth._get_tracking_store().get_run(run_id).data.params == {}  # the row: data never read
    assert auth._get_tracking_store().get_experiment(experiment).name == "e"  # the rest: the store's
    assert not auth._get_model_registry_store().get_registered_model("m").latest_versions  # row and tags
    share[0] = True  # a read-only request: the full read, which the handler then reuses
    assert len(auth._get_model_registry_store().get_registered_model("m").latest_versions) == 1
    assert auth._get_tracking_store().get_run(run_id).data.params == {"p": "v"}
    assert auth._get_model_registry_store().search_registered_models().to_list()[0].name == "m"


def test_a_checked_row_answers_the_next_checks_until_its_interval_ends(
    monkeypatch: pytest.MonkeyPatch, stores: tuple[Any, Any]
) -> None:
    """No statement for a run or logged model checked a moment ago; a model deleted meanwhile is
    found until the interval ends (recent_rows.py), a missing one never."""
    from mlflow.exceptions import MlflowException

    tracking, _registry = stores
    monkeypatch.setattr(auth, "_get_tracking_store", auth._get_tracking_store)
    monkeypatch.setattr(handlers, "_tracking_store", tracking)
    now = [0.0]
    mlflow_adapter.install_auth_row_lookups(lambda: False, RecentRows(1.0, clock=lambda: now[0]))
    experiment = tracking.create_experiment("e")
    run_id = tracking.create_run(experiment, "u", 0, [], None).info.run_id
    model_id = tracking.create_logged_model(experiment, name="lm").model_id
    sent: list[str] = []

    def capture(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    engines = {tracking.engine, database.single_statement_engine(tracking.engine, "rows")}
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        store = auth._get_tracking_store()
        assert store.get_run(run_id).info.experiment_id == experiment
        assert store.get_logged_model(model_id).experiment_id == experiment
        first = len(sent)
        assert first > 0
        now[0] = 0.9
        assert store.get_run(run_id).info.experiment_id == experiment
        assert store.get_logged_model(model_id).experiment_id == experiment
        assert len(sent) == first  # answered from the rows read 0.9 s ago
        tracking.delete_logged_model(model_id)
        assert store.get_logged_model(model_id).experiment_id == experiment  # within the interval
        now[0] = 1.0
        with pytest.raises(MlflowException, match="not found"):  # read anew: MLflow's own answer
            store.get_logged_model(model_id)
        for _ in range(2):  # a missing row is read every time
            before = len(sent)
            with pytest.raises(MlflowException):
                store.get_run("0" * 32)
            assert len(sent) > before
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", capture)


ROW_READS = {"get_run", "get_logged_model"}
EXPERIMENT_ONLY = (("experiment_id",), ("info", "experiment_id"))


def attribute_chain(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[str, ...]:
    """The attribute names read off ``node``: ``x.info.experiment_id`` -> (info, experiment_id)."""
    chain: list[str] = []
    while isinstance(parent := parents.get(node), ast.Attribute) and parent.value is node:
        chain.append(parent.attr)
        node = parent
    return tuple(chain)


def test_the_auth_app_reads_only_the_experiment_of_a_run_or_logged_model() -> None:
    """recent_rows.py keeps a checked row for a second: sound only while the auth app uses nothing of a
    run or logged model but its experiment (which never changes) and whether it exists. Every read of
    one in MLflow's auth module must be used as ``row.experiment_id``, ``row.info.experiment_id`` or
    ``row is None``, directly or through the one name it is assigned to."""
    tree = ast.parse(inspect.getsource(auth))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    reads = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in ROW_READS]
    assert len(reads) >= 5  # the run and logged-model checks, get-history, GraphQL
    for read in reads:
        call = parents[read]
        if isinstance(call, ast.Call) and call.func is read:  # store.get_run(x)...
            used: ast.AST = call
        else:  # _fetch_or_none(store.get_run, x)
            used = parents[read]
            assert isinstance(used, ast.Call) and getattr(used.func, "id", None) == "_fetch_or_none"
        chain = attribute_chain(used, parents)
        if chain:
            assert chain in EXPERIMENT_ONLY, (read.lineno, chain)
            continue
        assign = parents[used]
        assert isinstance(assign, ast.Assign) and len(assign.targets) == 1, read.lineno
        target = assign.targets[0]
        assert isinstance(target, ast.Name), read.lineno
        function = assign
        while not isinstance(function, ast.FunctionDef):
            function = parents[function]
        for name in ast.walk(function):
            if isinstance(name, ast.Name) and name.id == target.id and isinstance(name.ctx, ast.Load):
                compare = parents[name]
                is_none = isinstance(compare, ast.Compare) and isinstance(compare.ops[0], ast.Is | ast.IsNot)
                assert is_none or attribute_chain(name, parents) in EXPERIMENT_ONLY, (name.lineno, target.id)


# --- 13. the Flask before-request hook, its validators and after-request handlers ------------------------


def test_the_auth_app_decides_flask_requests_in_one_before_request_hook() -> None:
    source = inspect.getsource(auth.create_app)
    assert "app.before_request(_before_request)" in source
    assert "app.after_request(_after_request)" in source


def test_the_before_request_hook_is_wrapped_in_place_and_rewrapped_not_nested() -> None:
    from flask import Flask

    flask = Flask("stand-in")
    first, last = (lambda: None), (lambda: None)
    for hook in (first, auth._before_request, last):
        flask.before_request(hook)
    seen: list[str] = []

    def wrap(label: str) -> Any:
        def wrapping(before: Any) -> Any:
            @functools.wraps(before)
            def wrapped() -> Any:
                seen.append(label)
                return before()

            return wrapped

        return wrapping

    mlflow_adapter.wrap_before_request(flask, wrap("first build"))
    mlflow_adapter.wrap_before_request(flask, wrap("second build"))
    hooks = flask.before_request_funcs[None]
    assert hooks[0] is first and hooks[2] is last and hooks[1].__wrapped__ is auth._before_request
    with pytest.raises(RuntimeError, match="before-request hook"):
        mlflow_adapter.wrap_before_request(Flask("no-auth"), wrap("none"))


def test_the_deciding_validators_and_redactions_are_mlflows() -> None:
    from hokusai_registry.server.decisions import DECIDING_VALIDATORS, REDACTIONS

    handlers = {handler.__name__ for handler in auth.AFTER_REQUEST_HANDLERS.values()}
    for name in DECIDING_VALIDATORS | REDACTIONS:
        assert inspect.isfunction(getattr(auth, name, None)), name
    assert handlers >= REDACTIONS
    with auth.app.test_request_context():
        assert auth.make_forbidden_response().status_code == 403


def flask_requests() -> Iterator[tuple[str, str]]:
    """(path, method) of every rule of MLflow's Flask app, with its variables filled in."""
    import re

    from mlflow.server import app

    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"\1-1", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield path, method


def test_the_after_request_handler_named_is_the_one_mlflows_hook_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask import Response

    ran: list[str] = []

    def recording(name: str) -> Any:
        def handler(_response: Any) -> None:
            ran.append(name)

        handler.__name__ = name
        return handler

    exact = {key: recording(handler.__name__) for key, handler in auth.AFTER_REQUEST_HANDLERS.items()}
    parameterized = {
        key: recording(handler.__name__) for key, handler in auth.PARAMETERIZED_AFTER_REQUEST_HANDLERS.items()
    }
    monkeypatch.setattr(auth, "AFTER_REQUEST_HANDLERS", exact)
    monkeypatch.setattr(auth, "PARAMETERIZED_AFTER_REQUEST_HANDLERS", parameterized)
    named = 0
    for path, method in flask_requests():
        ran.clear()
        with auth.app.test_request_context(path, method=method):
            auth._after_request(Response(status=200))
        name = mlflow_adapter.after_request_handler_name(path, method)
        assert ran == ([name] if name else []), (method, path)
        named += name is not None
    assert named > 50


SEARCH_FILTERS = {
    ("/api/2.0/mlflow/registered-models/search", "GET"): "filter_search_registered_models",
    ("/api/2.0/mlflow/experiments/search", "POST"): "filter_search_experiments",
}


@pytest.mark.parametrize(("route", "name"), SEARCH_FILTERS.items())
def test_the_search_filters_keep_of_a_re_query_only_the_rows_missing(
    route: tuple[str, str], name: str
) -> None:
    """scoped_search.py reads a filter's re-queries in steps: sound only while the filter keeps the
    first ``max_results - len(page)`` rows of each and moves the token by the rows it kept."""
    assert mlflow_adapter.after_request_handler_name(*route) == name
    tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(auth, name))))
    kept = [
        node.value.slice
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and [ast.unparse(target) for target in node.targets] == ["refetched"]
        and isinstance(node.value, ast.Subscript)
        and ast.unparse(node.value.value) == "refetched"
    ]
    assert len(kept) == 1 and isinstance(kept[0], ast.Slice) and kept[0].lower is None
    missing = kept[0].upper
    assert isinstance(missing, ast.BinOp) and isinstance(missing.op, ast.Sub)
    assert ast.unparse(missing.left) == "request_message.max_results"
    assert ast.unparse(missing.right).startswith("len(response_message.")
    sums = {ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.BinOp)}
    assert "start_offset + len(refetched)" in sums
    stops = [ast.unparse(node.test) for node in ast.walk(tree) if isinstance(node, ast.If)]
    assert "len(refetched) == 0" in stops
    # One store search, the re-query, from the page's own token; nothing else in the filter is clamped.
    searches = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("search_")
    ]
    assert len(searches) == 1
    given = {keyword.arg: ast.unparse(keyword.value) for keyword in searches[0].keywords}
    assert given["page_token"] == "response_message.next_page_token"
    assert given["max_results"] == "request_message.max_results"


def test_a_wrapped_search_filter_is_what_mlflows_hook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Response

    monkeypatch.setattr(auth, "AFTER_REQUEST_HANDLERS", dict(auth.AFTER_REQUEST_HANDLERS))
    parameterized = dict(auth.PARAMETERIZED_AFTER_REQUEST_HANDLERS)
    monkeypatch.setattr(auth, "PARAMETERIZED_AFTER_REQUEST_HANDLERS", parameterized)
    authorizing = auth._SELF_AUTHORIZING_AFTER_REQUEST_HANDLERS
    monkeypatch.setattr(auth, "_SELF_AUTHORIZING_AFTER_REQUEST_HANDLERS", authorizing)
    ran: list[str] = []

    def wrap(label: str) -> Any:
        def wrapping(handler: Any) -> Any:
            def wrapped(_response: Any) -> None:
                ran.append(f"{label}:{handler.__name__}")

            return wrapped

        return wrapping

    mlflow_adapter.wrap_after_request_handlers({"filter_search_experiments": wrap("first")})
    mlflow_adapter.wrap_after_request_handlers({"filter_search_experiments": wrap("second")})
    with auth.app.test_request_context("/api/2.0/mlflow/experiments/search", method="POST") as context:
        assert auth._find_validator(context.request) is None  # the filter alone authorizes it
        assert auth._authorized_outside_before_request(context.request)  # and still does, wrapped
        auth._after_request(Response(status=200))
    assert ran == ["second:filter_search_experiments"]  # the original, wrapped once
    assert auth.AFTER_REQUEST_HANDLERS[("/api/2.0/mlflow/registered-models/search", "GET")] is (
        auth.filter_search_registered_models
    )
