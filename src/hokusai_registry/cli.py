"""The ``hokusai-registry`` command: parse, call, print."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table

from hokusai_registry.settings import ConfigError, Settings

if TYPE_CHECKING:
    from hokusai_registry.key_client import CreatedKey, KeyClient, KeyInfo
    from hokusai_registry.register import RegistrationError

HELP = """An authenticated MLflow model registry: third parties register models with the stock MLflow
client and an API key, and the server stores the artifacts itself.

up runs the registry, keys manages API keys, register uploads a model with its token metadata,
scan shows and releases what the model scan quarantined, verify checks a deployment end to end,
deploy ecs ships a new image to AWS ECS.
"""

app = typer.Typer(no_args_is_help=True, add_completion=False, help=HELP, rich_markup_mode=None)


def show_version(value: bool) -> None:
    if value:
        from hokusai_registry import __version__

        print(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


keys_app = typer.Typer(
    no_args_is_help=True,
    help="Create, list, rotate and revoke API keys (on the database, or with --url through the server); "
    "whoami shows which key you run with.",
    rich_markup_mode=None,
)
app.add_typer(keys_app, name="keys")
deploy_app = typer.Typer(no_args_is_help=True, help="Deploy a new registry image.", rich_markup_mode=None)
app.add_typer(deploy_app, name="deploy")
scan_app = typer.Typer(
    no_args_is_help=True, help="Inspect, release and re-scan model versions' scans.", rich_markup_mode=None
)
app.add_typer(scan_app, name="scan")
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
    import sqlalchemy as sa

    from hokusai_registry.server.keys import KeyLimits, KeyStore

    try:
        settings = load_settings(data_dir=data_dir, auth_db_uri=db_uri).with_data_dir_secrets(create=False)
        if not settings.auth_db_uri:
            settings.auth_db_uri = settings.recorded_auth_db_uri()
        uri = settings.auth_database_uri
        # A plain engine: a command that makes no MLflow user (list, revoke, rotate) imports no MLflow.
        return KeyStore(uri, settings.hash_secret(), KeyLimits.of(settings), engine=sa.create_engine(uri))
    except ConfigError as exc:
        raise fail(str(exc)) from None


class DatabaseKeys:
    """The key operations on the server's database, answering as the key API does (``key_client``'s
    types), so each ``keys`` command prints one way whichever it talked to."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def create(
        self, name: str | None, *, user: str | None, scope: str, expires_in_days: float | None
    ) -> CreatedKey:
        from hokusai_registry.key_client import CreatedKey

        assert user is not None  # the command requires --user without --url
        new = self.store.create(user, scope=scope, expires_in_days=expires_in_days, name=name)
        return CreatedKey.from_json(new.to_json())

    def list(self, user: str | None) -> list[KeyInfo]:
        from hokusai_registry.key_client import KeyInfo

        return [KeyInfo.from_json(key.to_json()) for key in self.store.list(user)]

    def revoke(self, key_id: str) -> KeyInfo:
        from hokusai_registry.key_client import KeyInfo

        return KeyInfo.from_json(self.store.revoke(key_id).to_json())

    def rotate(self, key_id: str, grace_seconds: int | None) -> CreatedKey:
        from hokusai_registry.key_client import CreatedKey

        rotated = (
            self.store.rotate(key_id) if grace_seconds is None else self.store.rotate(key_id, grace_seconds)
        )
        return CreatedKey.from_json(rotated.to_json())


def key_api(url: str) -> KeyClient:
    """The key API at ``url``, called with the key from the environment (never from the command line)."""
    from hokusai_registry.client import resolve_key
    from hokusai_registry.key_client import MISSING_ENV_KEY, KeyClient

    key = resolve_key(None)
    if not key:
        raise fail(MISSING_ENV_KEY)
    return KeyClient(url, key)


def mlflow_errors() -> tuple[type[Exception], ...]:
    """MLflow's exception class once MLflow is imported; a key command that made no user never
    imports it (a second and a half), and then nothing MLflow raised can need catching."""
    module = sys.modules.get("mlflow.exceptions")
    return (module.MlflowException,) if module is not None else ()


@contextmanager
def open_keys(
    url: str | None, data_dir: Path | None, db_uri: str | None
) -> Iterator[KeyClient | DatabaseKeys]:
    """The server's key API with ``--url``, else its database; either one's refusal becomes ``error: ...``
    and exit 1 (2 for a request the database finds invalid, as before there was an API)."""
    from rich.markup import escape

    if url is None:
        from hokusai_registry.server.keys import InvalidKeyRequest, KeyStoreError

        try:
            yield DatabaseKeys(open_key_store(data_dir, db_uri))
        except InvalidKeyRequest as exc:
            raise fail(escape(getattr(exc, "message", str(exc)))) from None
        except KeyStoreError as exc:
            raise fail(escape(str(exc)), 1) from None
        except Exception as exc:
            if not isinstance(exc, mlflow_errors()):
                raise
            raise fail(escape(getattr(exc, "message", str(exc)))) from None
        return
    from hokusai_registry.key_client import KeyApiError

    if data_dir is not None or db_uri is not None:
        raise typer.BadParameter(
            "--url uses the server's key API, --data-dir and --db-uri its database: pass one",
            param_hint="--url",
        )
    try:
        with key_api(url) as api:
            yield api
    except KeyApiError as exc:
        raise fail(escape(str(exc)), 1) from None


KeysUrl = Annotated[
    str | None,
    typer.Option(
        help="Registry URL: use its key API, with the key in HOKUSAI_API_KEY or MLFLOW_TRACKING_TOKEN "
        "[default: act on the database]"
    ),
]


def print_created(created: CreatedKey, as_json: bool) -> None:
    """A new key once: alone on stdout (or the created-key object as JSON), what it is on stderr."""
    print(json.dumps(created.to_json()) if as_json else created.key)
    record = created.record
    what = f"key {record.id} for user {record.user!r} with scope {record.scope!r}"
    if created.replaces is None:
        err.print(f"created {what}; it is not shown again", highlight=False)
        return
    from hokusai_registry.key_client import utc_text

    ends = created.old_key_expires_at
    until = f"until {utc_text(ends)}" if ends else "for its grace period"
    err.print(
        f"rotated key {created.replaces} to {what}; it is not shown again. The old key keeps working {until}",
        highlight=False,
    )


@keys_app.command("create")
def keys_create(
    user: Annotated[
        str | None,
        typer.Option(
            help="MLflow user the key acts as (created if new) [required without --url; with it: yours]"
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Name of the key, unique per user [required with --url; default: its id]"),
    ] = None,
    scope: Annotated[str, typer.Option(help="read, write, admin or metrics (GET /metrics only)")] = "write",
    expires_in_days: Annotated[float | None, typer.Option(help="Expire after N days")] = None,
    url: KeysUrl = None,
    data_dir: DataDir = None,
    db_uri: DbUri = None,
    as_json: AsJson = False,
) -> None:
    """Create a key and print it once (alone on stdout, or as JSON)."""
    if url is None and user is None:
        raise typer.BadParameter("required without --url", param_hint="--user")
    if url is not None and name is None:
        raise typer.BadParameter("required with --url", param_hint="--name")
    with open_keys(url, data_dir, db_uri) as keys:
        created = keys.create(name, user=user, scope=scope, expires_in_days=expires_in_days)
    print_created(created, as_json)


@keys_app.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option(help="Only this user's keys")] = None,
    url: KeysUrl = None,
    data_dir: DataDir = None,
    db_uri: DbUri = None,
    as_json: AsJson = False,
) -> None:
    """List keys (never the keys themselves); tab-separated lines when stdout is not a terminal.

    With --url, a non-admin key sees only its own user's keys.
    """
    with open_keys(url, data_dir, db_uri) as keys:
        records = [key.to_json() for key in keys.list(user)]
    if as_json:
        print(json.dumps(records, indent=2))
        return
    header = ["id", "user", "scope", "created", "expires", "revoked", "last used", "name"]
    times = ("created_at", "expires_at", "revoked_at", "last_used_at")
    out = Console()
    if not out.is_terminal:  # piped: one tab-separated line per key, times in full ISO 8601 (UTC)
        print("\t".join(header))
        for r in records:
            print(
                "\t".join([r["id"], r["user"], r["scope"], *(r[t] or "-" for t in times), r["name"] or "-"])
            )
        return
    # Ids stay whole at any width, so they can be pasted into `keys revoke`; the other columns fold.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, caption="times in UTC", caption_justify="left")
    table.add_column("id", no_wrap=True, min_width=max((len(r["id"]) for r in records), default=2))
    for column in header[1:]:
        table.add_column(column, overflow="fold")
    for r in records:  # times to the minute, "2026-12-01 09:32", which wraps at the space
        stamps = (r[t][:16].replace("T", " ") if r[t] else "-" for t in times)
        table.add_row(r["id"], r["user"], r["scope"], *stamps, r["name"] or "-")
    out.print(table)


KeyId = Annotated[
    str,
    typer.Argument(
        help="The key's id (k_...), as `keys list` shows it", metavar="KEY_ID", show_default=False
    ),
]


def check_key_id(key_id: str | None) -> None:
    """Refuse a key where its id belongs: a key in argv is readable in `ps` and shell history."""
    if key_id is not None and key_id.startswith("hk_"):  # keys are hk_live_..., ids k_...
        raise typer.BadParameter(
            "that is a key, not a key id (k_...); never put a key on the command line. It is now in your "
            "shell history: rotate it",
            param_hint="KEY_ID",
        )


@keys_app.command("revoke")
def keys_revoke(key_id: KeyId, url: KeysUrl = None, data_dir: DataDir = None, db_uri: DbUri = None) -> None:
    """Revoke a key by id; every server worker refuses it within 5 seconds."""
    check_key_id(key_id)
    with open_keys(url, data_dir, db_uri) as keys:
        record = keys.revoke(key_id)
    err.print(f"revoked key {record.id} of user {record.user!r}", highlight=False)


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[
        str | None,
        typer.Argument(
            help="The key's id (k_...) [required without --url; with it: the key you run with]",
            metavar="KEY_ID",
            show_default=False,
        ),
    ] = None,
    grace_seconds: Annotated[
        int | None,
        typer.Option(help="Seconds the old key keeps working, 0 to 604800 [default: 86400]"),
    ] = None,
    url: KeysUrl = None,
    data_dir: DataDir = None,
    db_uri: DbUri = None,
    as_json: AsJson = False,
) -> None:
    """Replace a key with a new one (same user, scope and name) and print it once; the old key keeps
    working for the grace period, then expires."""
    check_key_id(key_id)
    if key_id is None and url is None:
        raise typer.BadParameter("required without --url", param_hint="KEY_ID")
    with open_keys(url, data_dir, db_uri) as keys:
        if key_id is None:
            assert not isinstance(keys, DatabaseKeys)
            key_id = keys.whoami().id
        created = keys.rotate(key_id, grace_seconds)
    print_created(created, as_json)


@keys_app.command("whoami")
def keys_whoami(
    url: Annotated[str | None, typer.Option(help="Registry URL [env: MLFLOW_TRACKING_URI]")] = None,
    as_json: AsJson = False,
) -> None:
    """Which key HOKUSAI_API_KEY (or MLFLOW_TRACKING_TOKEN) is: id, name, user, scope, expiry (asks the
    server); warns when it stops working within 7 days."""
    from datetime import UTC, datetime

    from rich.markup import escape

    from hokusai_registry.client import MISSING_URL, resolve_url
    from hokusai_registry.key_client import utc_text

    url = resolve_url(url)
    if not url:
        raise fail(MISSING_URL)
    with open_keys(url, None, None) as keys:
        assert not isinstance(keys, DatabaseKeys)
        who = keys.whoami()
    if as_json:
        print(json.dumps(who.to_json(), indent=2))
    else:  # one "label  value" line each, for eyes and for `awk '$1 == "id" {print $2}'`
        expires = utc_text(who.expires_at) if who.expires_at else "never"
        for label, value in [
            ("id", who.id), ("name", who.name or who.id), ("user", who.user), ("scope", who.scope),
            ("expires", expires), ("source", who.source),
        ]:  # fmt: skip
            print(f"{label:<9}{value}")
    if warning := who.warning(datetime.now(UTC)):
        err.print(f"[yellow]warning:[/yellow] {escape(warning.text)}", highlight=False)


BackendUri = Annotated[
    str | None,
    typer.Option(
        help="Registry database URI [env: HOKUSAI_REGISTRY_BACKEND_STORE_URI; default: the data dir's]"
    ),
]


def open_scans(data_dir: Path | None, backend_store_uri: str | None) -> Any:
    """The scan table of the server with this data dir (or of the database --backend-store-uri names)."""
    import sqlalchemy as sa

    from hokusai_registry.server import scan_store

    settings = load_settings(data_dir=data_dir, backend_store_uri=backend_store_uri)
    missing = not settings.backend_store_uri and not (settings.data_dir / "mlflow.db").exists()
    if missing:
        raise fail(
            f"no registry database in {settings.data_dir.resolve()}: pass --data-dir or --backend-store-uri"
        )
    engine = sa.create_engine(settings.tracking_uri)
    scan_store.create_tables(engine)
    return engine, settings


def version_key(name: str, version: int) -> Any:
    from hokusai_registry.server.scan_store import VersionKey

    return VersionKey("default", name, version)


@scan_app.command("show")
def scan_show(
    name: str,
    version: int,
    data_dir: DataDir = None,
    backend_store_uri: BackendUri = None,
    as_json: AsJson = False,
) -> None:
    """A version's scan: state, verdict, findings, and the SHA-256 of every file scanned."""
    from hokusai_registry.server import scan_store

    engine, _ = open_scans(data_dir, backend_store_uri)
    record = scan_store.get(engine, version_key(name, version))
    if record is None:
        raise fail(
            f"{name} version {version} has no scan (it does not exist, or was made with scanning off)", 1
        )
    data = record.to_json()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out = Console()
    grid = Table.grid(padding=(0, 2))
    for label in ("state", "verdict", "blocked", "summary", "scanner", "released_by", "released_reason"):
        if data.get(label) not in (None, ""):
            grid.add_row(f"[bold]{label.replace('_', ' ')}[/bold]", str(data[label]))
    out.print(f"[bold]{name}[/bold] version {version}", grid, highlight=False)
    if record.report is not None:
        findings = Table("verdict", "file", "finding", box=box.SIMPLE_HEAD, pad_edge=False, title="findings")
        for finding in record.report.findings:
            findings.add_row(finding.verdict.value, finding.path, finding.detail)
        files = Table("file", "bytes", "kind", "verdict", "sha256", box=box.SIMPLE_HEAD, pad_edge=False)
        files.title = "manifest"
        for stored in record.report.files:
            files.add_row(stored.path, f"{stored.size:,}", stored.kind, stored.verdict.value, stored.sha256)
        out.print(findings if record.report.findings else "no findings", files)


@scan_app.command("release")
def scan_release(
    name: str,
    version: int,
    reason: Annotated[str, typer.Option(help="Why this version is safe to serve (kept with it, audited)")],
    data_dir: DataDir = None,
    backend_store_uri: BackendUri = None,
) -> None:
    """Serve a quarantined version as READY, after you have read its findings."""
    import getpass

    from hokusai_registry.server import audit, scan_store

    if not reason.strip():
        raise typer.BadParameter("say why the version is safe to serve", param_hint="--reason")
    engine, _ = open_scans(data_dir, backend_store_uri)
    by = f"cli:{getpass.getuser()}"
    try:
        record = scan_store.release(engine, version_key(name, version), by, reason.strip())
    except LookupError as exc:
        raise fail(str(exc), 1) from None
    audit.configure()
    audit.event(
        "scan_release", actor=by, model=name, version=version, verdict=str(record.verdict), reason=reason
    )
    err.print(f"released {name} version {version} (verdict was {record.verdict}); it is served as READY")


@scan_app.command("rescan")
def scan_rescan(
    name: str,
    version: Annotated[
        int | None, typer.Argument(help="One version [default: every version of NAME]")
    ] = None,
    data_dir: DataDir = None,
    backend_store_uri: BackendUri = None,
) -> None:
    """Scan again (after a scanner update): a running server picks the versions up within seconds."""
    import getpass

    from hokusai_registry.server import audit, scan_store

    engine, settings = open_scans(data_dir, backend_store_uri)
    keys = scan_store.versions_of(engine, name) if version is None else [version_key(name, version)]
    known = [key for key in keys if scan_store.get(engine, key) is not None]
    if not known:
        raise fail(f"no scanned version of {name!r} matches", 1)
    scan_store.rescan(engine, known, blocked=settings.scan_policy == "block")
    audit.configure()
    for key in known:
        audit.event("scan_rescan", actor=f"cli:{getpass.getuser()}", model=key.name, version=key.version)
    err.print(f"{len(known)} version(s) of {name!r} queued for a new scan")


@app.command()
def register(
    model_dir: Annotated[Path, typer.Argument(help="MLflow model directory (with an MLmodel file)")],
    name: Annotated[str, typer.Option(help="Registered model name")],
    token_id: Annotated[str, typer.Option(help="Token id: 1-64 of A-Z 0-9 -")],
    metric: Annotated[str, typer.Option(help="Benchmark metric name")],
    baseline: Annotated[str, typer.Option(help="Benchmark baseline value (a finite number)")],
    tag: Annotated[list[str] | None, typer.Option(help="Extra version tag KEY=VALUE (repeatable)")] = None,
    experiment: Annotated[str | None, typer.Option(help="Experiment [default: one per user]")] = None,
    url: Annotated[str | None, typer.Option(help="Registry URL [env: MLFLOW_TRACKING_URI]")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key [env: HOKUSAI_API_KEY, else MLFLOW_TRACKING_TOKEN]")
    ] = None,
    scan_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the registry's model scan of a large model")
    ] = 600.0,
    as_json: AsJson = False,
) -> None:
    """Register a model version with its token metadata and check its files came back intact.

    Exit 0 on success, 1 when the server refused, its model scan rejected the model, or the round trip
    did not match; 2 on invalid input.
    """
    from rich.markup import escape

    from hokusai_registry.register import InvalidInput, ModelRejected, RegistrationError, register_model
    from hokusai_registry.register.metadata import parse_tags
    from hokusai_registry.register.progress import Bars

    try:
        done = register_model(
            model_dir, name, token_id=token_id, metric=metric, baseline=baseline,
            tags=parse_tags(tag or []), experiment=experiment, url=url, api_key=api_key,
            progress=Bars(err), on_step=lambda step: err.print(f"[dim]{step}…[/dim]", highlight=False),
            scan_timeout=scan_timeout,
        )  # fmt: skip
    except RegistrationError as exc:
        code = 2 if isinstance(exc, InvalidInput) else 1
        if as_json:
            print(json.dumps(registration_error_json(exc)))
        refused = fail(escape(str(exc)), code)
        if isinstance(exc, ModelRejected):
            print_findings(exc.findings)
        raise refused from None
    if as_json:
        print(json.dumps(done.to_json(), indent=2))
    if done.scan_verdict not in (None, "clean"):  # served under the registry's warn policy
        err.print(
            f"[yellow]warning:[/yellow] the registry's model scan graded {escape(done.model_uri)} "
            f"{escape(str(done.scan_verdict))}; it is served only because the registry's scan policy is warn",
            highlight=False,
        )
        print_findings(done.scan_findings)
    if as_json:
        return
    summary = Table.grid(padding=(0, 2))
    for label, value in [
        ("name", done.name), ("version", done.version), ("model URI", done.model_uri),
        ("run", done.run_id), ("files", f"{len(done.files)}, {done.total_bytes:,} bytes"),
        ("scan", scan_cell(done.scan_verdict, len(done.scan_findings))),
        ("checksums", "[green]all SHA-256 match after download[/green]"),
        ("timings", ", ".join(f"{step} {seconds:.2f}s" for step, seconds in done.timings.items())),
    ]:  # fmt: skip
        summary.add_row(f"[bold]{label}[/bold]", value)
    Console().print(f"[green]registered[/green] {done.model_uri}", summary, highlight=False)


def registration_error_json(exc: RegistrationError) -> dict[str, Any]:
    """What ``register --json`` prints for a failure; a rejection also carries the scan's verdict."""
    from hokusai_registry.register import ModelRejected

    out: dict[str, Any] = {"error": str(exc), "step": exc.step, "kind": type(exc).__name__}
    if isinstance(exc, ModelRejected):
        out |= {"name": exc.name, "version": exc.version, "verdict": exc.verdict, "findings": exc.findings}
    return out


def print_findings(findings: list[str]) -> None:
    """The model scan's findings on stderr, one ``path: detail`` per line (markup escaped: they quote
    the model's own file names and globals)."""
    from rich.markup import escape

    if not findings:
        err.print("  (the scan recorded no findings; an admin sees why with `hokusai-registry scan show`)")
    for line in findings:
        err.print(f"  finding: {escape(line)}", highlight=False)


def scan_cell(verdict: str | None, findings: int) -> str:
    """The summary's scan row: clean in green, a warn-policy verdict in yellow, no scan dim."""
    if verdict is None:
        return "[dim]not scanned (the registry does not scan models)[/dim]"
    if verdict == "clean":
        return "[green]clean[/green]"
    from rich.markup import escape

    return f"[yellow]{escape(verdict)}[/yellow], {findings} finding(s), served under the warn policy"


@app.command()
def verify(
    url: Annotated[str | None, typer.Option(help="Registry URL [env: MLFLOW_TRACKING_URI]")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Write key [env: HOKUSAI_API_KEY, else MLFLOW_TRACKING_TOKEN]")
    ] = None,
    read_key: Annotated[
        str | None, typer.Option(help="A read-scope key; verify checks it cannot write")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the Markdown report here")] = None,
    large_mb: Annotated[int, typer.Option(help="Size of the large-artifact check in MiB (0 skips)")] = 16,
    skip_registration: Annotated[bool, typer.Option(help="Skip the model registration check")] = False,
    keep: Annotated[bool, typer.Option(help="Keep what verify created (experiment, run, model)")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per request")] = 60.0,
) -> None:
    """Prove a deployment works end to end and name the root cause when it does not.

    Exit 0 when no check fails, 1 when any fails, 2 on bad usage (no URL, no key).
    """

    from hokusai_registry.client import MISSING_KEY, MISSING_URL, resolve_key, resolve_url
    from hokusai_registry.verify import Context
    from hokusai_registry.verify import verify as run_verify

    url, key = resolve_url(url), resolve_key(api_key)
    if not url:
        raise fail(MISSING_URL)
    if not key:
        raise fail(MISSING_KEY)
    ctx = Context(url, key, read_key=read_key, timeout=timeout, large_mb=large_mb, keep=keep)
    report = run_verify(ctx, skip_registration=skip_registration, console=err)
    if json_path:
        json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if markdown:
        markdown.write_text(report.to_markdown())
    from rich.markup import escape

    for advice in report.recommendations:  # never failures: what production should not run with
        err.print(
            f"[yellow]recommended:[/yellow] {escape(advice.title)}: {escape(advice.fix)}", highlight=False
        )
    verdict = "[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]"
    err.print(f"verify {verdict} in {report.duration_ms / 1000:.1f} s", highlight=False)
    raise typer.Exit(0 if report.passed else 1)


@deploy_app.command("ecs")
def deploy_ecs(
    cluster: Annotated[str, typer.Option(help="ECS cluster name or ARN")],
    service: Annotated[str, typer.Option(help="ECS service name or ARN")],
    image: Annotated[
        str | None, typer.Option(help="Image URI to deploy (prefer an immutable tag or digest)")
    ] = None,
    build: Annotated[
        bool,
        typer.Option("--build", help="Build deploy/Dockerfile for linux/amd64, push it to ECR, deploy it"),
    ] = False,
    repository: Annotated[
        str | None,
        typer.Option(help="ECR repository for --build [default: the current image's, if in ECR]"),
    ] = None,
    region: Annotated[str | None, typer.Option(help="AWS region [env: AWS_REGION]")] = None,
    container: Annotated[
        str | None, typer.Option(help="Container to update [default: the essential one]")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Registry URL to verify after the rollout")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Write key for verify [env: HOKUSAI_API_KEY, else MLFLOW_TRACKING_TOKEN]"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each rollout")] = 600.0,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; build, push and change nothing")] = False,
) -> None:
    """Ship --image URI, or with --build the image built from this checkout and pushed to ECR: a new
    task-definition revision, rollout, verify; rolls back when the rollout or verify fails.

    Exit 0 when deployed; 2 on bad usage or when preflight or the plan refused (nothing changed); 1 when a
    later step failed (build, login, push, register, update service, rollout, verify; the message says
    whether the service was rolled back).
    """
    from rich.markup import escape

    from hokusai_registry.client import resolve_key
    from hokusai_registry.deploy import Deployer, DeployError, DeployRefused, ImageBuilder, deploy

    if (image is None) == (not build):
        raise typer.BadParameter("pass exactly one of the two", param_hint="--image / --build")
    if repository and not build:
        raise typer.BadParameter("only applies with --build", param_hint="--repository")
    try:
        deployer = Deployer(region, console=err)
        builder = ImageBuilder(deployer.ecr, repository=repository, console=err) if build else None
        deploy(
            deployer, cluster=cluster, service=service, image=image, builder=builder, container=container,
            url=url, api_key=resolve_key(api_key), timeout=timeout, dry_run=dry_run,
        )  # fmt: skip
    except DeployError as exc:
        refused = isinstance(exc, DeployRefused)
        suffix = " (nothing changed)" if refused else "" if exc.changed else " (the service was not changed)"
        raise fail(f"{exc.step}: {escape(str(exc))}{suffix}", 2 if refused else 1) from None


def main() -> None:
    # MLflow imports Starlette's deprecated WSGI module; the warning is noise for our users.
    warnings.filterwarnings("ignore", message=".*starlette.middleware.wsgi is deprecated")
    app()
