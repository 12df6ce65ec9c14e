"""`up`: prepare the data dir, the auth database and the first key, then become ``mlflow server``.

The preparation runs once, before any worker exists, so workers never race on migrations or on
creating the admin user. Then the process execs ``mlflow server --app-name hokusai``: SIGINT and
SIGTERM go straight to MLflow's server process, which stops uvicorn and its workers.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hokusai_registry.server import database, logs
from hokusai_registry.server.flask_hook import AUTHORIZATION_FUNCTION
from hokusai_registry.server.keys import KeyLimits, KeyStore, NewKey
from hokusai_registry.server.metrics import MULTIPROC_ENV
from hokusai_registry.server.mlflow_adapter import ADMIN_BOOTSTRAPPED_ENV
from hokusai_registry.settings import AUTH_INI_NAME, SERVED_ARTIFACT_ROOT, ConfigError, Settings

UVICORN_OPTS_ENV = "MLFLOW_UVICORN_OPTS"  # what `mlflow server` passes to uvicorn (--uvicorn-opts)
GUNICORN_OPTS_ENV = "MLFLOW_GUNICORN_OPTS"  # would make `mlflow server` run gunicorn instead
AUTH_INI = """\
[mlflow]
default_permission = {default_permission}
database_uri = {database_uri}
admin_username = {admin_username}
# Enforced in code as well (server/app.py); the admin password comes from the environment.
authorization_function = {authorization_function}
"""


@dataclass(frozen=True)
class Launch:
    command: list[str]
    env: dict[str, str]
    first_key: NewKey | None


def mlflow_command(settings: Settings) -> list[str]:
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--app-name", "hokusai",
        "--backend-store-uri", settings.tracking_uri,
        "--serve-artifacts",
        "--artifacts-destination", settings.artifacts_uri,
        "--default-artifact-root", SERVED_ARTIFACT_ROOT,
        "--host", settings.host,
        "--port", str(settings.port),
        "--workers", str(settings.workers),
    ]  # fmt: skip
    if settings.allowed_hosts:
        command += ["--allowed-hosts", settings.allowed_hosts]
    return command


def uvicorn_opts(settings: Settings, operator_opts: str | None) -> str:
    """uvicorn's options: the keep-alive first, so the operator's ``MLFLOW_UVICORN_OPTS`` can override
    it, and with json logs our log config last, since that format is what the setting asks for.

    The keep-alive outlasts the load balancer's idle timeout (``Settings.keep_alive_seconds``); the
    log config makes uvicorn's own lines JSON too, in all its processes, from their start (logs.py).
    """
    return shlex.join(
        [
            "--timeout-keep-alive", str(settings.keep_alive_seconds),
            *shlex.split(operator_opts or ""),
            *logs.log_config_opts(settings.log_format, settings.data_dir.resolve()),
        ]
    )  # fmt: skip


def prepare(settings: Settings) -> Launch:
    """Create secrets, the auth config, the admin user and (on first start) an admin key."""
    if os.environ.get(GUNICORN_OPTS_ENV):  # before anything is written
        raise ConfigError(
            f"hokusai-registry runs under uvicorn, mlflow server's default; unset {GUNICORN_OPTS_ENV} "
            f"(uvicorn's options go in {UVICORN_OPTS_ENV})"
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings = settings.with_data_dir_secrets(create=True)
    assert settings.admin_password is not None and settings.flask_secret_key is not None
    if not settings.artifacts_destination:
        Path(settings.artifacts_uri).mkdir(parents=True, exist_ok=True)

    auth_ini = settings.data_dir.resolve() / AUTH_INI_NAME
    fd = os.open(auth_ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the URI may hold a password
    with os.fdopen(fd, "w") as file:
        file.write(
            AUTH_INI.format(
                default_permission=settings.default_permission,
                database_uri=settings.auth_database_uri.replace("%", "%%"),
                admin_username=settings.admin_username,
                authorization_function=AUTHORIZATION_FUNCTION,
            )
        )

    for uri in {settings.tracking_uri, settings.auth_database_uri}:  # before any connection of MLflow's
        database.use_write_ahead_log(uri)
    keys = KeyStore(settings.auth_database_uri, settings.hash_secret(), KeyLimits.of(settings))
    if not keys.users.has_user(settings.admin_username):
        keys.users.create_user(
            settings.admin_username, settings.admin_password.get_secret_value(), is_admin=True
        )
    first_key = None
    if settings.first_admin_key and keys.count() == 0:
        first_key = keys.create(settings.admin_username, scope="admin", name="first-admin")

    metrics_dir = settings.data_dir.resolve() / "metrics"  # this start's samples only (metrics.py)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(mode=0o700)
    env = {
        # MLflow's job runner (GenAI jobs, about a dozen huey processes) is no part of a model
        # registry; it stays off unless the operator turns it on.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **os.environ,
        **settings.to_env(),
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": settings.flask_secret_key.get_secret_value(),
        "MLFLOW_AUTH_ADMIN_PASSWORD": settings.admin_password.get_secret_value(),
        # We created the admin user above, as `mlflow server --app-name basic-auth` does itself.
        ADMIN_BOOTSTRAPPED_ENV: "true",
        MULTIPROC_ENV: str(metrics_dir),
        "HOKUSAI_REGISTRY_REPLICA_ID": settings.replica_id or secrets.token_hex(4),  # one per start
        UVICORN_OPTS_ENV: uvicorn_opts(settings, os.environ.get(UVICORN_OPTS_ENV)),
    }
    return Launch(command=mlflow_command(settings), env=env, first_key=first_key)


def connection_help(settings: Settings, first_key: NewKey | None) -> str:
    lines = [f"hokusai-registry: serving {settings.public_url} (data in {settings.data_dir.resolve()})"]
    if first_key is not None:
        lines += [
            f"First admin key {first_key.record.id} (shown once; only its hash is stored):",
            "",
            f"  export MLFLOW_TRACKING_URI={settings.public_url}",
            f"  export MLFLOW_TRACKING_TOKEN={first_key.key}",
            "",
        ]
    else:
        lines.append(
            "Create a key with `hokusai-registry keys create --user NAME [--scope admin]`, run where "
            "this server's HOKUSAI_REGISTRY_* settings are (here, or in the container via ECS Exec)"
        )
    return "\n".join(lines)


def exec_server(launch: Launch) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(launch.command[0], launch.command, launch.env)  # noqa: S606 - become the server
