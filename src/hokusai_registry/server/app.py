"""``create_app``: the ``mlflow.app`` entry point ``hokusai`` (``mlflow server --app-name hokusai``).

It builds MLflow's own basic-auth app, so MLflow's per-resource permissions guard every route,
serves our key API beside it (key_api.py), and puts six things of ours around it: the API-key
ASGI layer (middleware.py), a short cache in front of MLflow's auth store (auth_store.py), one full
read per read-only request shared by the auth app and the handler (shared_reads.py), searches scoped
in the store query (scoped_search.py), a cheaper seat for MLflow's FastAPI permission middleware
(permission_gate.py), and no auth-epoch read for a request that only decides allow or deny when
its caller's epochs were read a moment ago (decisions.py); a scoped search's SQL connections have
PostgreSQL plan each statement with its values (database.py). MLflow's Basic password check is replaced by our
``authorization_function`` (flask_hook.py), whatever the auth config file says.
Every MLflow internal this needs is reached through mlflow_adapter.py, which also indexes MLflow's
grant folds and has its auth checks read one row, not a whole run or model. Building the app twice
in one process wraps nothing twice.
"""

from __future__ import annotations

import gc
from typing import Any
from urllib.parse import urlsplit

from hokusai_registry.server import (
    database,
    decisions,
    flask_hook,
    logs,
    mlflow_adapter,
    outages,
    permission_gate,
    registry_store,
    scan_store,
    scoped_search,
    shared_reads,
)
from hokusai_registry.server.auth_store import EPOCH_INTERVAL, CachedAuthStore
from hokusai_registry.server.authenticator import Authenticator
from hokusai_registry.server.context import current_principal
from hokusai_registry.server.external import ExternalKeyService
from hokusai_registry.server.key_api import PREFIX, ServerFacts, create_key_api
from hokusai_registry.server.keys import KeyLimits, KeyStore
from hokusai_registry.server.metrics import RequestMetrics, RouteNames
from hokusai_registry.server.middleware import ApiKeyMiddleware
from hokusai_registry.server.quarantine import Quarantine
from hokusai_registry.server.scan_service import ScanService
from hokusai_registry.settings import ConfigError, Settings


def create_app(app: Any = None) -> ApiKeyMiddleware:
    from fastapi import FastAPI
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server import auth as mlflow_auth

    settings = Settings()
    database.install(prepared_statements=settings.prepared_statements)
    logs.configure(settings.log_format)
    mlflow_adapter.use_authorization_function(flask_hook.AUTHORIZATION_FUNCTION)

    external = None
    if settings.auth_url:
        external = ExternalKeyService(
            settings.auth_url,
            settings.auth_service_id,
            settings.auth_cache_ttl_seconds,
            settings.auth_timeout_seconds,
        )
    keys = KeyStore(mlflow_adapter.auth_database_uri(), settings.hash_secret(), KeyLimits.of(settings))
    auth_store = mlflow_adapter.install_auth_store(
        lambda store: CachedAuthStore(store, settings.cache_ttl_seconds, on_user_deleted=keys.revoke_all)
    )
    authenticator = Authenticator(keys, settings.cache_ttl_seconds, external)
    flask_hook.install(authenticator)
    mlflow_adapter.authenticate_fastapi_by_principal(current_principal)

    flask_app = app or mlflow_flask_app
    asgi_app = mlflow_auth.create_app(flask_app)
    decisions.install(flask_app, auth_store.refresh_epochs)
    scans, quarantine = install_scanning(settings)
    registry_store.install(scans, quarantine)
    shared_reads.install(recent_rows_interval=min(EPOCH_INTERVAL, settings.cache_ttl_seconds))
    scoped_search.install()
    mlflow_adapter.index_grant_folds()
    if not isinstance(asgi_app, FastAPI):
        raise ConfigError(
            "hokusai-registry runs under uvicorn, mlflow server's default; drop --gunicorn-opts"
        )
    permission_gate.install(asgi_app, auth_store.refresh_epochs)
    facts = ServerFacts(
        backend=urlsplit(settings.tracking_uri).scheme.partition("+")[0],
        scan_policy=settings.scan_policy,
        replica=settings.replica_id,
    )
    mlflow_adapter.mount_before_flask(asgi_app, PREFIX, create_key_api(keys, facts))
    outages.install(asgi_app, mlflow_flask_app)  # a database or S3 outage: 503, not 500
    request_metrics = RequestMetrics(RouteNames(mlflow_flask_app.url_map)) if settings.metrics else None
    app_with_keys = ApiKeyMiddleware(asgi_app, authenticator, request_metrics, settings.replica_id)
    if settings.gc_freeze:
        freeze_startup_objects()
    return app_with_keys


def install_scanning(settings: Settings) -> tuple[ScanService | None, Quarantine | None]:
    """Scan every new model version; under ``block``, guard both doors its files could leave by."""
    if settings.scan_policy == "off":
        mlflow_adapter.on_model_version_insert(lambda _conn, _row: None)
        return None, None
    engine = mlflow_adapter.registry_engine()
    scan_store.create_tables(engine)
    scans = ScanService(
        engine,
        settings.artifacts_uri,
        settings.scan_policy,
        settings.scan_inline_max_bytes,
        settings.scan_concurrency,
        resolve_run_location=mlflow_adapter.run_artifact_location,
    )
    mlflow_adapter.on_model_version_insert(scans.on_insert)
    scans.start_sweeping()
    quarantine = None
    if settings.scan_policy == "block":
        quarantine = Quarantine(engine)
        mlflow_adapter.guard_artifact_repository(
            quarantine.check_path, quarantine.check_write, settings.artifacts_uri
        )
    return scans, quarantine


def freeze_startup_objects() -> None:
    """Keep the ~340,000 objects MLflow creates at start-up out of every later garbage collection.

    A full collection otherwise walks all of them, pausing the worker for 150-250 ms, which under
    load sets the p99 (docs/benchmarks.md, run 8). Collect first, so no garbage is kept forever.
    """
    gc.collect()
    gc.freeze()
