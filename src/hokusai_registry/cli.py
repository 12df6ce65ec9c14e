"""The ``hokusai-registry`` command: parse, call, print."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from hokusai_registry.settings import ConfigError, Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
app.add_typer(keys_app, name="keys")
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None, typer.Option(help="Data directory of the embedded default [env: HOKUSAI_REGISTRY_DATA_DIR]")
]
DbUri = Annotated[
    str | None,
    typer.Option(help="Auth database URI, e.g. postgresql://... [env: HOKUSAI_REGISTRY_AUTH_DB_URI]"),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    try:
        return Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as exc:
        messages = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(messages) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def up(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind [env: HOKUSAI_REGISTRY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env: HOKUSAI_REGISTRY_PORT]")] = None,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn workers [env: HOKUSAI_REGISTRY_WORKERS]")
    ] = None,
    backend_store_uri: Annotated[
        str | None,
        typer.Option(help="Tracking/registry DB, e.g. postgresql://... [default: SQLite in data dir]"),
    ] = None,
    artifacts_destination: Annotated[
        str | None, typer.Option(help="Where the server stores artifacts, e.g. s3://bucket/prefix")
    ] = None,
    default_artifact_root: Annotated[
        str | None, typer.Option(help="Must stay mlflow-artifacts:/ (served by this server)")
    ] = None,
    allowed_hosts: Annotated[
        str | None, typer.Option(help="Comma-separated Host headers to accept (with port variants)")
    ] = None,
) -> None:
    """Run the registry in the foreground (SQLite + local artifacts unless told otherwise)."""
    from hokusai_registry.server import launch

    try:
        settings = load_settings(
            data_dir=data_dir,
            host=host,
            port=port,
            workers=workers,
            backend_store_uri=backend_store_uri,
            artifacts_destination=artifacts_destination,
            default_artifact_root=default_artifact_root,
            allowed_hosts=allowed_hosts,
        )
        plan = launch.prepare(settings)
    except ConfigError as exc:
        raise fail(f"refusing to start: {exc}") from None
    print(launch.connection_help(settings, plan.first_key), flush=True)
    launch.exec_server(plan)


def open_key_store(data_dir: Path | None, db_uri: str | None) -> Any:
    """The key store the server with this data dir uses (or the database named by --db-uri)."""
    from hokusai_registry.server.keys import KeyStore
    from hokusai_registry.server.launch import recorded_auth_db_uri

    try:
        settings = load_settings(data_dir=data_dir, auth_db_uri=db_uri).with_data_dir_secrets(create=False)
        if not settings.auth_db_uri:
            settings.auth_db_uri = recorded_auth_db_uri(settings.data_dir)
        return KeyStore(settings.auth_database_uri, settings.hash_secret())
    except ConfigError as exc:
        raise fail(str(exc)) from None


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="MLflow user the key acts as (created if new)")],
    scope: Annotated[str, typer.Option(help="read, write or admin")] = "write",
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after N days")] = None,
    data_dir: DataDir = None,
    db_uri: DbUri = None,
    as_json: AsJson = False,
) -> None:
    """Create a key and print it once (alone on stdout, or as JSON)."""
    from mlflow.exceptions import MlflowException

    store = open_key_store(data_dir, db_uri)
    try:
        new = store.create(user, scope=scope, expires_in_days=expires_in_days)
    except (ValueError, MlflowException) as exc:
        raise fail(getattr(exc, "message", str(exc))) from None
    if as_json:
        record = new.record.to_json()
        print(
            json.dumps(
                {name: record[name] for name in ("id", "user", "scope", "expires_at")} | {"key": new.key}
            )
        )
    else:
        print(new.key)
    err.print(f"created key {new.record.id} for user {user!r} with scope {scope!r}; it is not shown again")


@keys_app.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option(help="Only this user's keys")] = None,
    data_dir: DataDir = None,
    db_uri: DbUri = None,
    as_json: AsJson = False,
) -> None:
    """List keys (never the keys themselves)."""
    records = [key.to_json() for key in open_key_store(data_dir, db_uri).list(user)]
    if as_json:
        print(json.dumps(records, indent=2))
        return
    table = Table("id", "user", "scope", "created", "expires", "revoked", "last used")
    for r in records:
        table.add_row(
            r["id"], r["user"], r["scope"], r["created_at"], r["expires_at"] or "-",
            r["revoked_at"] or "-", r["last_used_at"] or "-",
        )  # fmt: skip
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, db_uri: DbUri = None) -> None:
    """Revoke a key by id; every server worker refuses it within seconds."""
    from hokusai_registry.server.keys import KeyNotFound

    try:
        record = open_key_store(data_dir, db_uri).revoke(key_id)
    except KeyNotFound as exc:
        raise fail(str(exc), code=1) from None
    err.print(f"revoked key {record.id} of user {record.username!r}")


def main() -> None:
    # MLflow imports Starlette's deprecated WSGI module; the warning is noise for our users.
    warnings.filterwarnings("ignore", message=".*starlette.middleware.wsgi is deprecated")
    app()
