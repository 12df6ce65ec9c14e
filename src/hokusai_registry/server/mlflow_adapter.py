"""The one module that touches MLflow's private names, module globals and private environment variables.

MLflow's auth app has no plugin interface for what the registry adds, so a few of its internals are used
directly. Each assumption is listed here and pinned by ``tests/server/test_mlflow_contract.py``; an MLflow
upgrade that breaks one fails that test, and the fix is made in this file. Nothing else under ``src/``
imports a private MLflow name (the same test greps for it).

What we rely on (MLflow 3.17):

1. ``mlflow.server.auth.store`` is the auth store every permission check reads at call time, so replacing
   the module global reroutes them all (:func:`install_auth_store`). Its write methods are listed in
   :data:`AUTH_STORE_WRITES`, its reads in :data:`AUTH_STORE_READS`; a method in neither counts as a write.
2. ``mlflow.server.auth.auth_config`` is a namedtuple read when the auth app is built; its
   ``authorization_function`` names the hook MLflow calls to learn who a request is
   (:func:`use_authorization_function`). On the FastAPI side MLflow calls that hook through the module
   global ``_authenticate_custom_for_fastapi(request)``, which builds a whole Flask request context to
   run it and then answers ``store.get_user(username)`` (None when that fails); a principal our ASGI
   layer found skips the context (:func:`authenticate_fastapi_by_principal`).
3. ``mlflow.server.handlers._model_registry_store`` is the registry store MLflow's handlers and its auth
   app share, created lazily by ``_get_model_registry_store()`` (:func:`install_registry_store`).
4. The auth app adds its FastAPI permission check as a ``BaseHTTPMiddleware`` whose dispatch function is
   named ``fastapi_permission_middleware``; its private helpers decide which requests it judges
   (:func:`find_permission_middleware` and the helpers below it).
5. ``_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED=true`` tells MLflow's workers that the admin user already exists,
   which ``mlflow server --app-name basic-auth`` sets after creating it (:data:`ADMIN_BOOTSTRAPPED_ENV`).
6. MLflow's search filters (``filter_search_*``) decide each row with ``_role_based_read_predicate`` over
   the grants ``store.list_grants`` returns for the request's workspace, a grant pattern is ``*`` or one
   resource's exact id, and the searches are ``search_*`` methods of ``handlers._tracking_store`` and
   the SQL registry store, which the handlers and the filters' re-queries both call (:func:`read_predicate`,
   :func:`grant_patterns`, :func:`intercept_store_method`).
7. ``retention_gate`` builds the module global ``RetentionGate``, whose ``_fold(key)`` folds every grant
   the caller holds (``fold_grants_for_key``), once per row of a listing; a grant can only match a key
   of its own type with its own id or ``*`` (``permissions.matches``), so folding just those grants,
   in their original order, gives the same answer. The auth app reads a caller's grants in three module
   functions called through their globals (``resolve_permissions``, ``retention_gate``,
   ``_role_grant_for_resource``), each of which also scans every grant for a workspace-admin one;
   ours are the same code with both scans indexed, their MLflow source pinned (:func:`index_grant_folds`).
8. A model version is one row of the ORM class ``SqlModelVersion`` (table ``model_versions``), inserted
   only by the SQL registry store's ``create_model_version`` (``copy_model_version`` calls it), with its
   ``status`` (default ``READY``), ``status_message`` (500 characters) and ``storage_location`` set on
   the instance before the flush; the version MLflow returns is built from that instance, so a status
   set in a ``before_insert`` listener is what the creating client sees (:func:`on_model_version_insert`).
   Its tags are rows of ``model_version_tags`` keyed by (workspace, name, version, key); MLflow has no
   API that sets a version's status, so the scan verdict writes both tables directly
   (:func:`set_model_version_outcome`; on PostgreSQL :func:`model_version_outcome_after`, which also
   needs that key to be the tags' primary key); the entity keeps them in ``_status``, ``_status_message`` and
   ``_tags``, so the version created can be answered with its verdict without reading it back
   (:func:`with_outcome`).
9. Every proxied file read (the native ``mlflow-artifacts`` download, ``get-artifact``,
   ``model-versions/get-artifact``, a logged model's files) and write gets the artifact destination's
   repository from ``handlers._get_artifact_repo_mlflow_artifacts()`` (one object per worker), reads a
   file with ``get_local_path`` or ``download_artifacts`` and writes with ``log_artifact(s)``,
   ``create_multipart_upload``, ``delete_artifacts`` or, where it is a ``StreamUploadMixin`` (the local
   repository), ``log_artifact_from_stream`` and the coroutine ``log_artifact_from_async_stream``
   (:func:`guard_artifact_repository`).
10. The FastAPI app serves MLflow's Flask app as a ``Mount`` at the root, which matches every path, so
    an app of ours is reached only if its mount comes before that one (:func:`mount_before_flask`).
11. ``ArtifactRepository.download_artifacts`` downloads each file with ``self._download_file`` in its
    thread pool and folds the failures into one ``MlflowException`` that keeps only their messages, and
    an error code only when every failure was an ``MlflowException`` with one code (else
    ``INTERNAL_ERROR``, a 500): a botocore connection error there loses its type
    (:func:`translate_download_errors`). ``_download_file(remote_file_path, local_path)`` downloads one
    path known to be a file, without the listing ``download_artifacts`` makes first to learn whether it
    is a directory (:func:`download_one_file`).
12. MLflow's auth app gets the tracking store through its own module global ``_get_tracking_store``
    (imported from the handlers), and reads a run or logged model fetched through it for nothing but
    ``experiment_id`` (a run's ``info.experiment_id``) and whether it exists: the call sites are listed
    in the contract test, which also walks every use of what they return. So a row one check read a
    moment ago may answer the next (recent_rows.py).
    ``SqlAlchemyStore._get_run(session, run_id)`` and ``_get_query(session, SqlLoggedModel)`` find the row
    as ``get_run`` and ``get_logged_model`` do (workspace scoping included) before those load the row's
    tags, params, metrics, inputs and outputs. Likewise its ``_get_model_registry_store`` global, whose
    registered models it reads for ``_is_prompt()`` (the tags) and ``workspace`` only;
    ``_get_registered_model(session, name)`` finds the row as ``get_registered_model`` does before that
    loads every version of the model (:func:`install_auth_row_lookups`). On PostgreSQL those rows are read
    in ``mlflow.store.db.utils._get_managed_session_maker(sessionmaker, db_type)``'s session (MLflow's
    commit and error translation) bound to our single-statement pool. The handlers of ``runs/get``
    and ``logged-models/<id>`` read through the SQL tracking store class's ``get_run`` and
    ``get_logged_model``, so a full read the auth app made in the same request can be handed to them
    (:func:`intercept_store_method`, shared_reads.py).
13. The auth app decides a Flask request in one before-request hook, ``_before_request``, registered on
    the Flask app by ``create_app``; it answers a refusal with a 403 response and may be called again
    (it writes nothing). Which validator it runs is ``_find_validator(request)``, each a module
    function named for its decision; whether the response is filtered or redacted afterwards by
    grants is ``AFTER_REQUEST_HANDLERS`` (exact path), else ``PARAMETERIZED_AFTER_REQUEST_HANDLERS``
    (regex), as ``_after_request`` looks them up (:func:`wrap_before_request`,
    :func:`flask_validator_name`, :func:`after_request_handler_name`, decisions.py).
14. ``filter_search_registered_models`` and ``filter_search_experiments``, the after-request handlers
    of those searches, fill a page whose unreadable rows they dropped by querying the store again
    from the page's token; of each re-query they keep only as many rows as the page is missing
    (``refetched[: max_results - len(page)]``), and move the token by the rows they kept
    (:func:`wrap_after_request_handlers`, scoped_search.py). Those searches have no validator: a
    route is let through by its handler's membership in ``_SELF_AUTHORIZING_AFTER_REQUEST_HANDLERS``
    (``_authorized_outside_before_request``), so a wrapped handler joins that set.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm

from hokusai_registry.server import database
from hokusai_registry.server.recent_rows import RecentRows

__all__ = [
    "ADMIN_BOOTSTRAPPED_ENV",
    "AUTH_STORE_READS",
    "AUTH_STORE_WRITES",
    "GRANT_READERS",
    "USER_SCOPED_WRITES",
    "Delegating",
    "GrantList",
    "NewModelVersion",
    "PermissionMiddleware",
    "affected_user",
    "after_request_handler_name",
    "auth_database_uri",
    "authenticate_fastapi_by_principal",
    "download_one_file",
    "find_after_request_handler",
    "find_permission_middleware",
    "find_validator",
    "flask_validator_name",
    "fold_indexed",
    "grant_patterns",
    "guard_artifact_repository",
    "has_workspace_admin",
    "index_grant_folds",
    "index_grants",
    "indexed_retention_gate",
    "install_auth_row_lookups",
    "install_auth_store",
    "install_registry_store",
    "intercept_store_method",
    "is_artifact_transfer",
    "is_auth_store_write",
    "logged_model_row",
    "matches_native_route",
    "model_version_outcome_after",
    "model_version_outcome_params",
    "mount_before_flask",
    "native_routes",
    "on_model_version_insert",
    "read_predicate",
    "registered_model_row",
    "registry_engine",
    "run_artifact_location",
    "run_row",
    "set_model_version_outcome",
    "translate_download_errors",
    "use_authorization_function",
    "with_outcome",
    "wrap_after_request_handlers",
]

ADMIN_BOOTSTRAPPED_ENV = "_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED"
# Public and on by default in 3.17; set so that an upgrade flipping the default lets nothing through.
FAIL_CLOSED_ENV = "MLFLOW_BASIC_AUTH_FAIL_CLOSED"
PERMISSION_MIDDLEWARE = "fastapi_permission_middleware"

# MLflow's auth store (mlflow.server.auth.sqlalchemy_store.SqlAlchemyStore), every public method sorted
# into reads and writes by reading its source. A write must empty every worker's auth cache (it moves the
# auth epoch), so the test fails when MLflow adds a method that is in neither set.
AUTH_STORE_WRITES = frozenset({
    "add_role_permission", "assign_role_to_user", "create_experiment_permission",
    "create_gateway_endpoint_permission", "create_gateway_model_definition_permission",
    "create_gateway_secret_permission", "create_mcp_server_permission", "create_registered_model_permission",
    "create_role", "create_scorer_permission", "create_user", "delete_experiment_permission",
    "delete_gateway_endpoint_permission", "delete_gateway_model_definition_permission",
    "delete_gateway_secret_permission", "delete_grants_for_resource", "delete_mcp_server_permission",
    "delete_registered_model_permission", "delete_role", "delete_roles_for_workspace",
    "delete_scorer_permission", "delete_user", "delete_workspace_permission",
    "delete_workspace_permissions_for_workspace", "grant_user_permission", "grant_user_resource_permission",
    "remove_role_permission", "rename_grants_for_resource", "revoke_user_resource_permission",
    "set_workspace_permission", "unassign_role_from_user", "update_experiment_permission",
    "update_gateway_endpoint_permission", "update_gateway_model_definition_permission",
    "update_gateway_secret_permission", "update_mcp_server_permission", "update_registered_model_permission",
    "update_role", "update_role_permission", "update_scorer_permission", "update_user",
})  # fmt: skip
AUTH_STORE_READS = frozenset({
    "authenticate_user", "get_experiment_permission", "get_gateway_endpoint_permission",
    "get_gateway_model_definition_permission", "get_gateway_secret_permission", "get_mcp_server_permission",
    "get_registered_model_permission", "get_role", "get_role_by_name", "get_role_permission",
    "get_role_permission_for_resource", "get_role_workspace_permission", "get_scorer_permission",
    "get_user", "get_workspace_permission", "has_user", "init_db", "is_workspace_admin",
    "is_workspace_admin_of_any_of_users_workspaces", "list_accessible_workspace_names",
    "list_all_registered_model_permissions", "list_experiment_permissions",
    "list_gateway_endpoint_permissions", "list_gateway_model_definition_permissions",
    "list_gateway_secret_permissions", "list_grants", "list_mcp_server_permissions",
    "list_registered_model_permissions", "list_role_grants_for_user_in_workspace", "list_role_permissions",
    "list_role_users", "list_roles", "list_scorer_permissions", "list_user_present_workspaces",
    "list_user_roles", "list_user_roles_for_workspace", "list_user_workspace_permissions", "list_users",
    "list_users_with_roles", "list_workspace_admin_workspaces", "list_workspace_permissions",
    "user_has_any_role_in_workspace",
})  # fmt: skip


# The writes that change one user's access only: each takes that user's name as ``username``. Every
# other write (roles, a resource's grants renamed or deleted, deleting a user, whose id may come back)
# may change anyone's access.
USER_SCOPED_WRITES = frozenset({
    "create_experiment_permission", "create_gateway_endpoint_permission",
    "create_gateway_model_definition_permission", "create_gateway_secret_permission",
    "create_mcp_server_permission", "create_registered_model_permission", "create_scorer_permission",
    "create_user", "delete_experiment_permission", "delete_gateway_endpoint_permission",
    "delete_gateway_model_definition_permission", "delete_gateway_secret_permission",
    "delete_mcp_server_permission", "delete_registered_model_permission", "delete_scorer_permission",
    "delete_workspace_permission", "grant_user_permission", "grant_user_resource_permission",
    "revoke_user_resource_permission", "set_workspace_permission", "update_experiment_permission",
    "update_gateway_endpoint_permission", "update_gateway_model_definition_permission",
    "update_gateway_secret_permission", "update_mcp_server_permission", "update_registered_model_permission",
    "update_scorer_permission", "update_user",
})  # fmt: skip


@functools.cache
def _auth_store_signature(name: str) -> inspect.Signature:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    return inspect.signature(getattr(SqlAlchemyStore, name))


def affected_user(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The one user whose access the auth store's write ``name`` changed, or None for anyone's."""
    if name not in USER_SCOPED_WRITES:
        return None
    try:
        bound = _auth_store_signature(name).bind(None, *args, **kwargs)
    except TypeError:  # not a call MLflow's own signature accepts: the write will say so itself
        return None
    username = bound.arguments.get("username")
    return username if isinstance(username, str) else None


def is_auth_store_write(name: str) -> bool:
    """Whether calling the auth store's method ``name`` may change users or permissions.

    Fails safe: a public method not known to read counts as a write (it costs cache misses, not
    correctness). Private methods are MLflow's helpers (``_scorer_pattern``, a pure function, is the
    only one its auth app calls on the store); callable instance attributes such as
    ``ManagedSessionMaker`` are no methods of the store's class, and the cache leaves them alone.
    """
    return not name.startswith("_") and name not in AUTH_STORE_READS


class Delegating:
    """A store in front of one of MLflow's: what it does not define comes from the wrapped store.

    Installing a wrapper where a wrapper already is replaces it (it wraps the original store again), so
    building the app twice never stacks two caches.
    """

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (a copy being built): never recurse
            raise AttributeError(name)
        return getattr(self.wrapped, name)


W = TypeVar("W", bound=Delegating)
T = TypeVar("T")


def _original(store: Any) -> Any:
    while isinstance(store, Delegating):
        store = store.wrapped
    return store


# --- the auth app's globals ------------------------------------------------------------------------------


def use_authorization_function(dotted: str) -> None:
    """Make MLflow's auth app ask ``module:function`` who a request is, whatever its config file says.

    Also makes the auth app deny any route it has no authorization rule for, unless the operator set
    ``MLFLOW_BASIC_AUTH_FAIL_CLOSED`` themselves. Call before the auth app is built.
    """
    os.environ.setdefault(FAIL_CLOSED_ENV, "true")
    from mlflow.server import auth

    auth.auth_config = auth.auth_config._replace(authorization_function=dotted)


def authenticate_fastapi_by_principal(principal: Callable[[], Any]) -> None:
    """MLflow's FastAPI permission middleware learns who a request is by building a Flask request
    context (about 0.4 ms) to call the authorization function, which only reads ``principal()``. When
    there is one, ask the auth store for its user directly, as MLflow does with the function's answer;
    without one, MLflow's own bridge runs."""
    from mlflow.server import auth

    installed = auth._authenticate_custom_for_fastapi
    bridge = getattr(installed, "__wrapped__", installed)  # building the app twice wraps MLflow's once

    @functools.wraps(bridge)
    def authenticate(request: Any) -> Any:
        found = principal()
        if found is None:
            return bridge(request)
        try:
            return auth.store.get_user(found.username)
        except Exception:  # as MLflow's bridge: an unknown user is not authenticated
            return None

    auth._authenticate_custom_for_fastapi = authenticate


def auth_database_uri() -> str:
    """Where MLflow's auth app keeps users and permissions (its config file's ``database_uri``)."""
    from mlflow.server import auth

    return str(auth.auth_config.database_uri)


def install_auth_store(wrap: Callable[[Any], W]) -> W:
    """Put ``wrap(MLflow's auth store)`` where every permission check and auth handler looks it up."""
    from mlflow.server import auth

    auth.store = wrapped = wrap(_original(auth.store))
    return wrapped


def install_registry_store(wrap: Callable[[Any], W]) -> W:
    """Put ``wrap(the registry store)`` where MLflow's handlers and its auth app both get it."""
    from mlflow.server import handlers

    handlers._model_registry_store = wrapped = wrap(_original(handlers._get_model_registry_store()))
    return wrapped


class _TrackingRows:
    """The tracking store as MLflow's auth app sees it: a run or logged model is one row, without the tags,
    params, metrics, inputs and outputs the auth app never reads (a run's full read is about seven
    queries, and the handler then reads it again), unless ``share_full`` says the handler will reuse
    the full read."""

    def __init__(self, share_full: Callable[[], bool], recent: RecentRows) -> None:
        self.share_full = share_full
        self.recent = recent

    def __getattr__(self, name: str) -> Any:
        from mlflow.server import handlers

        return getattr(handlers._get_tracking_store(), name)

    def get_run(self, run_id: str) -> Any:
        from mlflow.server import handlers

        store = handlers._get_tracking_store()
        if self.share_full():
            return store.get_run(run_id)
        return self.recent.read(("run", run_id), lambda: run_row(store, run_id))

    def get_logged_model(self, model_id: str, allow_deleted: bool = False) -> Any:
        from mlflow.server import handlers

        store = handlers._get_tracking_store()
        if self.share_full():
            return store.get_logged_model(model_id, allow_deleted)
        key = ("logged_model", model_id, bool(allow_deleted))
        return self.recent.read(key, lambda: logged_model_row(store, model_id, allow_deleted))


class _RegistryRows:
    """The registry store as MLflow's auth app sees it: a registered model is its row and tags (whether
    it is a prompt, its workspace), not every version MLflow's full read loads, unless ``share_full``
    says the handler will reuse the full read (the registry store's request memo)."""

    def __init__(self, share_full: Callable[[], bool]) -> None:
        self.share_full = share_full

    def __getattr__(self, name: str) -> Any:
        from mlflow.server import handlers

        return getattr(handlers._get_model_registry_store(), name)

    def get_registered_model(self, name: str) -> Any:
        from mlflow.server import handlers

        store = handlers._get_model_registry_store()
        return store.get_registered_model(name) if self.share_full() else registered_model_row(store, name)


def run_row(store: Any, run_id: str) -> Any:
    """``store.get_run(run_id)`` with its info only (empty data); the same error for a missing run."""
    from mlflow.entities import Run, RunData, RunInfo
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = _original(store)
    if not isinstance(store, SqlAlchemyStore):
        return store.get_run(run_id)

    def read(session: Any) -> Any:
        row = store._get_run(session, run_id)
        info = RunInfo(
            run_id=row.run_uuid,
            run_name=row.name,
            experiment_id=str(row.experiment_id),
            user_id=row.user_id,
            status=row.status,
            start_time=row.start_time,
            end_time=row.end_time,
            lifecycle_stage=row.lifecycle_stage,
            artifact_uri=row.artifact_uri,
        )
        return Run(run_info=info, run_data=RunData())

    return _read_row(store, read)


def logged_model_row(store: Any, model_id: str, allow_deleted: bool = False) -> Any:
    """``store.get_logged_model(model_id)`` without its tags, params and metrics; the same errors."""
    from mlflow.entities import LifecycleStage, LoggedModel, LoggedModelStatus
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = _original(store)
    if not isinstance(store, SqlAlchemyStore):
        return store.get_logged_model(model_id, allow_deleted)

    def read(session: Any) -> Any:
        query = store._get_query(session, SqlLoggedModel).filter(SqlLoggedModel.model_id == model_id)
        if not allow_deleted:
            query = query.filter(SqlLoggedModel.lifecycle_stage != LifecycleStage.DELETED)
        row = query.first()
        if row is None:
            store._raise_model_not_found(model_id)
        return LoggedModel(
            model_id=row.model_id,
            experiment_id=str(row.experiment_id),
            name=row.name,
            artifact_location=row.artifact_location,
            creation_timestamp=row.creation_timestamp_ms,
            last_updated_timestamp=row.last_updated_timestamp_ms,
            status=LoggedModelStatus.from_int(row.status),
            model_type=row.model_type,
            source_run_id=row.source_run_id,
            status_message=row.status_message,
        )

    return _read_row(store, read)


def registered_model_row(store: Any, name: str) -> Any:
    """``store.get_registered_model(name)`` with its tags only (no versions, no aliases); the same errors."""
    from mlflow.entities.model_registry import RegisteredModel
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    store = _original(store)
    if not isinstance(store, SqlAlchemyStore):
        return store.get_registered_model(name)

    def read(session: Any) -> Any:
        row = store._get_registered_model(session, name)
        return RegisteredModel(
            row.name,
            row.creation_time,
            row.last_updated_time,
            row.description,
            tags=[tag.to_mlflow_entity() for tag in row.registered_model_tags],
            workspace=row.workspace,
        )

    return _read_row(store, read)


def _read_row(store: Any, read: Callable[[Any], T]) -> T:
    """``read`` in MLflow's managed session (its commit and its error translation): on PostgreSQL one
    of the single-statement pool for rows (database.py; it reads the primary, also where MLflow would
    send the read to a replica), tried once more on a new connection if the pooled one was found dead.
    No free connection in time is the database's 503, not the 400 MLflow's session makes of it."""
    return database.once_more_if_dropped(lambda: _read_row_once(store, read))


def _read_row_once(store: Any, read: Callable[[Any], T]) -> T:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    sessions = _row_sessions(store.engine) or store.ManagedSessionMaker
    try:
        with sessions() as session:
            return read(session)
    except MlflowException as error:
        busy = error.__cause__
        if isinstance(busy, sa.exc.TimeoutError):  # every connection of the pool stayed in use
            raise MlflowException(str(busy), error_code=TEMPORARILY_UNAVAILABLE) from busy
        raise


@functools.cache
def _row_sessions(engine: sa.Engine) -> Any:
    """MLflow's managed session maker bound to the rows pool of ``engine``'s database, or None where
    MLflow's own sessions are as cheap (SQLite)."""
    from mlflow.store.db.utils import _get_managed_session_maker

    rows = database.single_statement_engine(engine, "rows")
    if rows is engine:
        return None
    return _get_managed_session_maker(sa.orm.sessionmaker(bind=rows), rows.dialect.name)


def install_auth_row_lookups(share_full_read: Callable[[], bool], recent: RecentRows | None = None) -> None:
    """Make MLflow's auth app read the one row it decides on: a run's or logged model's experiment, a
    registered model's tags and workspace. ``share_full_read()`` True: the full read instead, which the
    handler of the same request reuses (shared_reads.py). A run's or logged model's row read less than
    ``recent.interval`` ago answers again (recent_rows.py); none kept by default."""
    from mlflow.server import auth

    tracking = _TrackingRows(share_full_read, recent or RecentRows(0))
    registry = _RegistryRows(share_full_read)
    auth._get_tracking_store = lambda: tracking
    auth._get_model_registry_store = lambda: registry


# The parameters of the repository methods guarded, in order (the contract test pins them).
REPOSITORY_PARAMETERS = {
    "get_local_path": ("artifact_path",),
    "download_artifacts": ("artifact_path", "dst_path"),
    "log_artifact": ("local_file", "artifact_path"),
    "log_artifacts": ("local_dir", "artifact_path"),
    "create_multipart_upload": ("local_file", "num_parts", "artifact_path"),
    "delete_artifacts": ("artifact_path",),
    # StreamUploadMixin (the local repository): the Flask and the native upload handlers' way in
    "log_artifact_from_stream": ("stream", "artifact_file_name", "artifact_path"),
    "log_artifact_from_async_stream": ("chunks", "artifact_file_name", "artifact_path"),
}
READ_METHODS = ("get_local_path", "download_artifacts")
FILE_METHODS = {  # the parameter naming the file a write puts into artifact_path
    "log_artifact": "local_file",
    "create_multipart_upload": "local_file",
    "log_artifact_from_stream": "artifact_file_name",
    "log_artifact_from_async_stream": "artifact_file_name",
}


def guard_artifact_repository(
    before_read: Callable[[str], None], before_write: Callable[[str], None], destination: str
) -> Any:
    """Make the artifact destination's repository call ``before_read(path)`` before it reads a file
    out and ``before_write(path)`` before it writes or deletes one; either may raise to refuse.

    The repository object keeps its class (MLflow enables multipart and streamed uploads by
    ``isinstance`` on it), so its methods are wrapped on the instance, once. ``mlflow server
    --serve-artifacts`` puts the destination in its workers' environment; an app built outside it (a
    test, a route dump) gets ``destination``, the same value ``up`` passes MLflow.
    """
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, handlers

    os.environ.setdefault(ARTIFACTS_DESTINATION_ENV_VAR, destination)
    repository = handlers._get_artifact_repo_mlflow_artifacts()
    for name in REPOSITORY_PARAMETERS:
        method = getattr(type(repository), name, None)
        if method is None:
            continue
        check = before_read if name in READ_METHODS else before_write

        def guarded(
            *args: Any, _method: Any = method, _check: Any = check, _name: str = name, **kw: Any
        ) -> Any:
            _check(_target_path(_name, args, kw))
            return _method(repository, *args, **kw)

        async def guarded_async(
            *args: Any, _method: Any = method, _check: Any = check, _name: str = name, **kw: Any
        ) -> Any:
            await asyncio.to_thread(_check, _target_path(_name, args, kw))  # a query: off the loop
            return await _method(repository, *args, **kw)

        # on the instance: replaces an earlier guard, never stacks
        setattr(repository, name, guarded_async if inspect.iscoroutinefunction(method) else guarded)
    return repository


DOWNLOAD_FILE = "_download_file"  # what download_artifacts runs for each file


def download_one_file(repository: Any, path: str, local_path: str) -> None:
    """The file ``path`` of ``repository`` to ``local_path``: one download, where ``download_artifacts``
    first lists ``path`` to learn whether it is a directory (a round trip to S3 per file)."""
    getattr(repository, DOWNLOAD_FILE)(remote_file_path=path, local_path=local_path)


def translate_download_errors(translate: Callable[[Exception], Exception | None]) -> Any:
    """Make the artifact destination's repository raise ``translate(error)`` in place of an error one
    file's download raised, when ``translate`` gives one: the folded ``MlflowException`` then keeps that
    error's code (a ``TEMPORARILY_UNAVAILABLE`` for S3 unreachable is a 503, not the fold's 500).

    Wrapped on the instance, once (like the guard above); returns the repository, or None when no
    artifact destination is configured (an app built outside ``mlflow server --serve-artifacts``).
    """
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, handlers

    if ARTIFACTS_DESTINATION_ENV_VAR not in os.environ:
        return None
    repository = handlers._get_artifact_repo_mlflow_artifacts()
    method = getattr(type(repository), DOWNLOAD_FILE, None)
    if method is None:
        return None

    def download_file(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(repository, *args, **kwargs)
        except Exception as error:
            translated = translate(error)
            if translated is None:
                raise
            raise translated from error

    setattr(repository, DOWNLOAD_FILE, download_file)  # on the instance: replaces an earlier one
    return repository


def _target_path(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The path under the destination a repository call reads, writes or deletes."""
    bound = dict(zip(REPOSITORY_PARAMETERS[name], args, strict=False)) | kwargs
    path = str(bound.get("artifact_path") or "").strip("/")
    if name in FILE_METHODS:  # a file lands in artifact_path under its base name
        path = "/".join(part for part in (path, os.path.basename(str(bound[FILE_METHODS[name]]))) if part)
    return path


# --- the FastAPI permission middleware --------------------------------------------------------------------


@dataclass(frozen=True)
class PermissionMiddleware:
    """MLflow's permission middleware as found in a FastAPI app's ``user_middleware`` list."""

    index: int
    dispatch: Callable[..., Any]


def find_permission_middleware(fastapi_app: Any) -> PermissionMiddleware | None:
    """MLflow's FastAPI permission middleware in the app, or None when the auth app did not add it."""
    from starlette.middleware.base import BaseHTTPMiddleware

    for index, middleware in enumerate(fastapi_app.user_middleware):
        dispatch = middleware.kwargs.get("dispatch")
        if (
            middleware.cls is BaseHTTPMiddleware
            and getattr(dispatch, "__name__", "") == PERMISSION_MIDDLEWARE
        ):
            return PermissionMiddleware(index, dispatch)
    return None


def mount_before_flask(fastapi_app: Any, path: str, app: Any) -> None:
    """Serve ``app`` under ``path``, ahead of MLflow's catch-all Flask mount (not a native route:
    MLflow's permission middleware leaves it to us, as it leaves Flask's routes to Flask)."""
    from starlette.routing import Mount

    routes = fastapi_app.router.routes
    flask = next(i for i, route in enumerate(routes) if isinstance(route, Mount) and route.path == "")
    routes.insert(flask, Mount(path, app=app))


def native_routes(fastapi_app: Any) -> list[Any]:
    """The routes FastAPI serves itself (artifacts, gateway, OTel, jobs), which the middleware judges."""
    from mlflow.server.auth import _native_fastapi_routes

    return list(_native_fastapi_routes(fastapi_app))


def matches_native_route(routes: list[Any], scope: Any) -> bool:
    from mlflow.server.auth import _scope_matches_native_route

    return bool(_scope_matches_native_route(routes, scope))


def find_validator(path: str, method: str) -> Any:
    """MLflow's FastAPI permission validator for the route, or None."""
    from mlflow.server.auth import _find_fastapi_validator

    return _find_fastapi_validator(path, method)


def find_after_request_handler(path: str, method: str) -> Any:
    """What MLflow's middleware does to the response after the route ran, or None."""
    from mlflow.server.auth import _find_fastapi_after_request_handler

    return _find_fastapi_after_request_handler(path, method)


def wrap_before_request(flask_app: Any, wrap: Callable[[Callable[[], Any]], Callable[[], Any]]) -> None:
    """Put ``wrap(MLflow's auth before-request hook)`` in the hook's place on ``flask_app``; called
    again (the app built twice), the new wrapper replaces the old one instead of wrapping it."""
    from mlflow.server import auth

    before_request: Callable[[], Any] = auth._before_request
    hooks = flask_app.before_request_funcs.get(None, [])
    for index, hook in enumerate(hooks):
        if hook is before_request or getattr(hook, "__wrapped__", None) is before_request:
            hooks[index] = wrap(before_request)
            return
    raise RuntimeError("MLflow's auth before-request hook is not on the Flask app")


def flask_validator_name(request: Any) -> str | None:
    """The name of the validator MLflow's Flask hook decides ``request`` with, or None."""
    from mlflow.server.auth import _find_validator

    validator = _find_validator(request)
    return getattr(validator, "__name__", None) if validator is not None else None


def wrap_after_request_handlers(wraps: Mapping[str, Callable[[Any], Any]]) -> None:
    """Replace each after-request handler of MLflow's auth app named in ``wraps`` with
    ``wraps[name](handler)``, where ``_after_request`` finds it. Installing twice wraps the original.

    A route without a validator is refused unless its handler is one MLflow counts as authorizing
    it by filtering the response (``_SELF_AUTHORIZING_AFTER_REQUEST_HANDLERS``, by identity): a
    replacement of such a handler is counted as it was."""
    from mlflow.server import auth

    authorizing = set(auth._SELF_AUTHORIZING_AFTER_REQUEST_HANDLERS)
    for table in (auth.AFTER_REQUEST_HANDLERS, auth.PARAMETERIZED_AFTER_REQUEST_HANDLERS):
        for key, handler in list(table.items()):
            original = getattr(handler, "__wrapped__", handler)
            wrap = wraps.get(getattr(original, "__name__", ""))
            if wrap is not None:
                table[key] = replacement = wrap(original)
                replacement.__wrapped__ = original
                if original in authorizing:
                    authorizing.add(replacement)
    auth._SELF_AUTHORIZING_AFTER_REQUEST_HANDLERS = frozenset(authorizing)


def after_request_handler_name(path: str, method: str) -> str | None:
    """The name of what MLflow's auth app does to a Flask response afterwards, or None."""
    from mlflow.server.auth import AFTER_REQUEST_HANDLERS, PARAMETERIZED_AFTER_REQUEST_HANDLERS

    handler = AFTER_REQUEST_HANDLERS.get((path, method))
    if handler is None:
        handler = next(
            (
                candidate
                for (pattern, handler_method), candidate in PARAMETERIZED_AFTER_REQUEST_HANDLERS.items()
                if method == handler_method and pattern.fullmatch(path)
            ),
            None,
        )
    return getattr(handler, "__name__", "?") if handler is not None else None


def is_artifact_transfer(path: str, method: str) -> bool:
    """A native ``GET``/``PUT`` of a proxied artifact (``mlflow-artifacts/artifacts/...``)."""
    from mlflow.server.auth import _is_native_fastapi_proxy_artifact_path

    return bool(_is_native_fastapi_proxy_artifact_path(path, method))


def intercept_store_method(
    store_kind: str, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace the method ``name`` of MLflow's SQL ``"tracking"`` or ``"registry"`` store class with
    ``wrap(original function)`` (called with the store first).

    The class, not an instance: MLflow creates its stores lazily, and checks
    ``isinstance(store, SqlAlchemyStore)`` (server-info's store type, the gateway), so neither an
    instance wrapper nor an early store works. Installing twice wraps the original again.
    """
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    cls = {"tracking": TrackingStore, "registry": RegistryStore}[store_kind]
    current = getattr(cls, name)
    original = getattr(current, "__wrapped__", current)
    replacement = wrap(original)
    replacement.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(cls, name, replacement)


# --- how MLflow's search filters decide a row --------------------------------------------------------------


def read_predicate(
    username: str, resource_type: str, also_not_denied: str | None = None
) -> Callable[[str], bool]:
    """MLflow's own ``can_read(resource_id)`` for ``username``, as its search filters build it.

    ``also_not_denied`` is the sub-resource tier a listing also requires not to be denied (model versions
    require ``registered_model_version``, logged models ``logged_model``), exactly as MLflow passes it.
    """
    from mlflow.server.auth import _role_based_read_predicate
    from mlflow.server.auth.requirements import ACTION_NOT_DENIED, Requirement

    also = [Requirement(also_not_denied, "*", ACTION_NOT_DENIED)] if also_not_denied else []
    predicate: Callable[[str], bool] = _role_based_read_predicate(username, resource_type, also_require=also)
    return predicate


def grant_patterns(username: str, resource_types: frozenset[str]) -> Iterator[tuple[str, str]]:
    """(resource type, pattern) of every grant MLflow would load for ``username`` in this request's
    workspace: the rows its read predicate folds over (lazily: a caller may stop early)."""
    from mlflow.server import auth
    from mlflow.server.auth.permissions import RESOURCE_TYPE_WORKSPACE

    workspace = auth.get_anchor_workspace(RESOURCE_TYPE_WORKSPACE, "*")
    if workspace is None:
        return iter(())
    user_id = auth.store.get_user(username).id
    grants = auth.store.list_grants(user_id, workspace, resource_types | {RESOURCE_TYPE_WORKSPACE})
    return ((grant.resource_type, grant.resource_pattern) for grant in grants)


class GrantList(list[Any]):
    """What the cached auth store's ``list_grants`` returns: its cache entry itself, read-only (a change
    raises ``TypeError``: MLflow 3.17 changes none), indexed once per entry instead of once per check."""

    grant_index: dict[tuple[str, str], list[tuple[int, Any]]] | None = None
    workspace_admin = False  # a workspace-admin grant is among them (MLflow: MANAGE on everything)

    @classmethod
    def indexed(cls, grants: list[Any]) -> GrantList:
        from mlflow.server.auth.requirements import is_workspace_admin_grant

        made = cls(grants)
        made.grant_index = index_grants(made)
        made.workspace_admin = any(is_workspace_admin_grant(grant) for grant in made)
        return made

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a cached grant list is shared by every check of its user: copy it to change it")

    append = extend = insert = pop = remove = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only


def index_grants(grants: list[Any]) -> dict[tuple[str, str], list[tuple[int, Any]]]:
    """(resource type, pattern) -> [(position, grant)] in the order MLflow would fold them."""
    index: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    for position, grant in enumerate(grants):
        index.setdefault((grant.resource_type, grant.resource_pattern), []).append((position, grant))
    return index


def _index_of(grants: Any) -> dict[tuple[str, str], list[tuple[int, Any]]]:
    index = getattr(grants, "grant_index", None)
    return index if index is not None else index_grants(list(grants))  # not from the cache


def fold_indexed(index: dict[tuple[str, str], list[tuple[int, Any]]], key: Any) -> Any:
    """MLflow's ``fold_grants_for_key(grants, key)``, reading only the grants that can match ``key``: its
    exact ones and its type's ``*`` ones, in the order MLflow would meet them."""
    from mlflow.server.auth.requirements import fold_grants_for_key

    if not isinstance(key.resource_id, str):  # a list or object from a request body: MLflow's fold
        every = sorted((pair for pairs in index.values() for pair in pairs), key=lambda pair: pair[0])
        return fold_grants_for_key([grant for _, grant in every], key)  # compares, never hashes
    relevant = index.get((key.resource_type, key.resource_id), [])
    if key.resource_id != "*":
        relevant = sorted(relevant + index.get((key.resource_type, "*"), []), key=lambda pair: pair[0])
    return fold_grants_for_key([grant for _, grant in relevant], key)


def has_workspace_admin(grants: Any) -> bool:
    """``any(is_workspace_admin_grant(g) for g in grants)``, decided once per cache entry."""
    from mlflow.server.auth.requirements import is_workspace_admin_grant

    if isinstance(grants, GrantList):
        return grants.workspace_admin
    return any(is_workspace_admin_grant(grant) for grant in grants)


@functools.cache
def indexed_retention_gate() -> type:
    """MLflow's ``RetentionGate`` whose fold reads only the grants that can match the key.

    MLflow folds all of a caller's grants for each key, so a search filter costs rows x grants: an
    owner of 10,000 models waits 0.4 s for a page of 100. This gate uses the grants' index (built once
    per cache entry), so a key's fold reads its exact grants and its type's ``*`` grants, in the order
    MLflow would have met them (the order only matters between equal permissions).
    """
    from mlflow.server.auth import RetentionGate

    class IndexedRetentionGate(RetentionGate):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._index = _index_of(self._grants)

        def _fold(self, key: Any) -> Any:
            if key not in self._folded:
                self._folded[key] = fold_indexed(self._index, key)
            return self._folded[key]

    return IndexedRetentionGate


# MLflow's three readers of a caller's grants (assumption 7), as MLflow 3.17 writes them but with
# ``has_workspace_admin`` and ``fold_indexed`` for its two scans of every grant: for an owner of 100,000
# models each scan is 4-30 ms, several times a request. The contract test pins MLflow's source of each
# and compares them on generated grants.


def _resolve_permissions(username: str, workspace_name: str, keys: Any) -> list[Any]:
    from mlflow.server import auth

    grants = auth.store.list_grants(
        auth.store.get_user(username).id, workspace_name, {key.resource_type for key in keys}
    )
    if has_workspace_admin(grants):
        return [auth.MANAGE] * len(keys)
    index = _index_of(grants)
    return [fold_indexed(index, key) for key in keys]


def _retention_gate(username: str, anchor: tuple[str, str], templates: Any) -> Any:
    from mlflow.server import auth

    by_type: dict[str, Any] = {}
    for template in templates:
        if template.resource_type in by_type:
            raise ValueError(
                f"Two requirement templates for {template.resource_type!r}; retains() could not "
                f"tell them apart"
            )
        by_type[template.resource_type] = template
    default = auth.auth_config.default_permission
    workspace_name = auth.get_anchor_workspace(*anchor)
    if workspace_name is None:
        return auth.RetentionGate(by_type, (), default, auth.NO_PERMISSIONS, False)
    grants = auth.store.list_grants(
        auth.store.get_user(username).id,
        workspace_name,
        {key.resource_type for key in auth.requirements_to_grant_load_keys(templates)},
    )
    if has_workspace_admin(grants):
        return auth.RetentionGate(by_type, grants, default, auth.NO_PERMISSIONS, True)
    return auth.RetentionGate(by_type, grants, default, auth._absent_permission(workspace_name))


def _role_grant_for_resource(user_id: int, resource_type: str, resource_key: str, workspace_name: str) -> Any:
    from mlflow.server import auth
    from mlflow.server.auth.permissions import GrantLoadKey

    grants = auth.store.list_grants(user_id, workspace_name, {resource_type})
    if has_workspace_admin(grants):
        return auth.MANAGE
    return fold_indexed(_index_of(grants), GrantLoadKey(resource_type, resource_key))


GRANT_READERS = {
    "resolve_permissions": _resolve_permissions,
    "retention_gate": _retention_gate,
    "_role_grant_for_resource": _role_grant_for_resource,
}


def index_grant_folds() -> None:
    """Make MLflow's permission checks and search filters fold only the grants that can match, and
    learn once per cached grant list whether it holds a workspace-admin grant."""
    from mlflow.server import auth

    auth.RetentionGate = indexed_retention_gate()
    for name, ours in GRANT_READERS.items():
        current = getattr(auth, name)
        ours.__wrapped__ = getattr(current, "__wrapped__", current)  # type: ignore[attr-defined]
        setattr(auth, name, ours)


# --- model versions: the scan verdict in MLflow's own status ----------------------------------------------


@dataclass(frozen=True)
class NewModelVersion:
    """A model version row about to be inserted, as :func:`on_model_version_insert` hands it over."""

    workspace: str
    name: str
    version: int
    storage_location: str
    tags: dict[str, str]


def on_model_version_insert(decide: Callable[[sa.Connection, NewModelVersion], str | None]) -> None:
    """Call ``decide`` in the inserting transaction of every new model version; a status it returns
    (``PENDING_REGISTRATION``) is the one the row is written, and returned to its creator, with."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

    def before_insert(_mapper: Any, connection: sa.Connection, target: Any) -> None:
        row = NewModelVersion(
            workspace=target.workspace or "default",
            name=target.name,
            version=int(target.version),
            storage_location=target.storage_location or target.source or "",
            tags={tag.key: tag.value for tag in target.model_version_tags or []},
        )
        status = decide(connection, row)
        if status is not None:
            target.status = status

    previous = _listeners.get("model_version")
    if previous is not None and sa.event.contains(SqlModelVersion, "before_insert", previous):
        sa.event.remove(SqlModelVersion, "before_insert", previous)  # building the app twice
    _listeners["model_version"] = before_insert
    sa.event.listen(SqlModelVersion, "before_insert", before_insert)


_listeners: dict[str, Callable[..., None]] = {}


def registry_engine() -> sa.Engine:
    """The SQL registry store's engine (its database holds the model versions and our scan table)."""
    from mlflow.server import handlers

    engine: sa.Engine = _original(handlers._get_model_registry_store()).engine
    return engine


def set_model_version_outcome(
    conn: sa.Connection,
    workspace: str,
    name: str,
    version: int,
    status: str,
    message: str | None,
    tags: dict[str, str],
) -> None:
    """Set a version's status and message and replace its tags named in ``tags``, in ``conn``'s
    transaction (the same one that records the verdict, so the two never disagree)."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag

    versions, version_tags = SqlModelVersion.__table__, SqlModelVersionTag.__table__
    where = (versions.c.workspace == workspace) & (versions.c.name == name) & (versions.c.version == version)
    updated = conn.execute(
        versions.update().where(where).values(status=status, status_message=stored_status_message(message))
    ).rowcount
    if not updated:  # deleted meanwhile: its tags went with it
        return
    tag_where = (
        (version_tags.c.workspace == workspace)
        & (version_tags.c.name == name)
        & (version_tags.c.version == version)
    )
    if tags:
        conn.execute(version_tags.delete().where(tag_where & version_tags.c.key.in_(list(tags))))
        conn.execute(
            version_tags.insert(),
            [
                {"workspace": workspace, "name": name, "version": version, "key": key, "value": value}
                for key, value in tags.items()
            ],
        )


def model_version_outcome_after(done: Any) -> Any:
    """PostgreSQL: :func:`set_model_version_outcome` as data-modifying CTEs after ``done``, a CTE that
    returns the (workspace, name, version) whose outcome is recorded (none: nothing is written), with
    the values of :func:`model_version_outcome_params`. With ``done`` they make one statement, so
    recording a verdict is one round trip, not seven (ping, BEGIN, four statements, COMMIT). A tag
    already set is replaced (ON CONFLICT), as the delete-then-insert does; a version deleted
    meanwhile gets no tags, as there. Build it once (scan_store does): compiling costs more than running."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag
    from sqlalchemy.dialects import postgresql

    versions, version_tags = SqlModelVersion.__table__, SqlModelVersionTag.__table__
    updated = (
        versions.update()
        .where(
            (versions.c.workspace == done.c.workspace)
            & (versions.c.name == done.c.name)
            & (versions.c.version == done.c.version)
        )
        .values(status=sa.bindparam("outcome_status"), status_message=sa.bindparam("outcome_message"))
        .returning(versions.c.workspace, versions.c.name, versions.c.version)
        .cte("updated")
    )
    text_array = postgresql.ARRAY(sa.Text)
    keys = sa.bindparam("outcome_tag_keys", type_=text_array)
    values = sa.bindparam("outcome_tag_values", type_=text_array)
    pairs = sa.func.unnest(keys, values).table_valued("key", "value").render_derived(name="verdict_tags")
    columns = ["workspace", "name", "version", "key", "value"]
    rows = sa.select(updated.c.workspace, updated.c.name, updated.c.version, pairs.c.key, pairs.c.value)
    insert = postgresql.insert(version_tags).from_select(columns, rows)
    return insert.on_conflict_do_update(
        constraint=version_tags.primary_key, set_={"value": insert.excluded.value}
    ).cte("tagged")


def model_version_outcome_params(status: str, message: str | None, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "outcome_status": status,
        "outcome_message": stored_status_message(message),
        "outcome_tag_keys": list(tags),
        "outcome_tag_values": list(tags.values()),
    }


def stored_status_message(message: str | None) -> str:
    """A version's status message as its column holds it (500 characters, empty for none)."""
    return (message or "")[:500]


def with_outcome(version: Any, status: str, message: str | None, tags: dict[str, str]) -> Any:
    """The ModelVersion MLflow returned from create, as reading it back after
    :func:`set_model_version_outcome` with these values would return it (no second read: about 3 ms,
    since MLflow's read loads the version's tags, aliases and model links)."""
    changed = copy.copy(version)
    changed._status = status
    changed._status_message = stored_status_message(message)
    changed._tags = {**version.tags, **tags}
    return changed


def run_artifact_location(runs_uri: str) -> str | None:
    """Where ``runs:/RUN_ID/path`` is stored (the run's artifact URI joined with the path), from the
    tracking store MLflow's handlers use; None if the run is gone."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    run_id, path = RunsArtifactRepository.parse_runs_uri(runs_uri)
    try:
        run = run_row(handlers._get_tracking_store(), run_id)
    except MlflowException:
        return None
    root = str(run.info.artifact_uri).rstrip("/")
    return f"{root}/{path.strip('/')}" if path else root
