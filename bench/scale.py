"""How a search's cost grows with other tenants' data: stock MLflow vs ours as tenant, owner and admin.

Foreign rows are seeded straight into the databases (SQL inserts, thousands a second): N registered
models or experiments, all owned by the user ``owner`` (one MANAGE grant per row, as creating them
through the server would give), of which the user ``tenant`` may read 10 (READ grants). Then one
client asks each target for the first page, the targets interleaved request by request, and pages
the tenant's search to the end. Stock MLflow (no auth) holds the same rows.

    .venv/bin/python bench/run.py scale [--sizes 1000,10000,100000] [--scale-requests 40] [--postgres]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa
from servers import BIN, Server, bearer

GRANTED = 10  # rows the tenant may read
API = "/api/2.0/mlflow"


@dataclass(frozen=True)
class Kind:
    """One searchable kind: its table, how a row is inserted, and its search request."""

    name: str
    resource_type: str
    search: Callable[[httpx.Client, int, str | None], httpx.Response]
    rows: str

    def insert(self, conn: sa.Connection, start: int, stop: int) -> list[str]:
        """Insert rows start..stop-1; their grant ids (model names, experiment ids)."""
        now = int(time.time() * 1000)
        if self.name == "models":
            names = [f"foreign-{i:06d}" for i in range(start, stop)]
            conn.execute(
                sa.text(
                    "INSERT INTO registered_models (workspace, name, creation_time, last_updated_time) "
                    "VALUES ('default', :name, :t, :t)"
                ),
                [{"name": name, "t": now + i} for i, name in enumerate(names)],
            )
            return names
        conn.execute(
            sa.text(
                "INSERT INTO experiments (name, workspace, artifact_location, lifecycle_stage, "
                "creation_time, last_update_time) VALUES (:name, 'default', 'mlflow-artifacts:/x', "
                "'active', :t, :t)"
            ),
            [{"name": f"foreign-{i:06d}", "t": now + i} for i in range(start, stop)],
        )
        found = conn.execute(
            sa.text(
                "SELECT experiment_id FROM experiments WHERE name LIKE 'foreign-%' ORDER BY experiment_id"
            )
        )
        return [str(row[0]) for row in found][start:stop]


def search_models(http: httpx.Client, size: int, token: str | None) -> httpx.Response:
    params: dict[str, str | int] = {"max_results": size} | ({"page_token": token} if token else {})
    return http.get(f"{API}/registered-models/search", params=params)


def search_experiments(http: httpx.Client, size: int, token: str | None) -> httpx.Response:
    body: dict[str, str | int] = {"max_results": size} | ({"page_token": token} if token else {})
    return http.post(f"{API}/experiments/search", json=body)


KINDS = {
    "models": Kind("models", "registered_model", search_models, "registered_models"),
    "experiments": Kind("experiments", "experiment", search_experiments, "experiments"),
}


def key(server: Server, user: str, scope: str = "write") -> str:
    create = [str(BIN / "hokusai-registry"), "keys", "create", "--user", user, "--scope", scope]
    done = subprocess.run(
        [*create, "--data-dir", str(server.data)], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def auth_uri(server: Server) -> str:
    return f"sqlite:///{server.data}/auth.db" if server.backend.startswith("sqlite") else server.backend


def role_of(conn: sa.Connection, username: str) -> int:
    """The id of the user's own (synthetic) role, where MLflow keeps the user's grants."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    user_id = conn.execute(sa.text("SELECT id FROM users WHERE username = :u"), {"u": username}).scalar_one()
    name = SqlAlchemyStore._synthetic_user_role_name(user_id)
    return int(conn.execute(sa.text("SELECT id FROM roles WHERE name = :n"), {"n": name}).scalar_one())


@dataclass
class Seeded:
    """Where the data stands: how many foreign rows, and the credentials of each target."""

    stock: Server
    ours: Server
    clients: dict[str, httpx.Client]
    count: int = 0


@contextmanager
def targets(stock: Server, ours: Server) -> Iterator[Seeded]:
    """Clients for stock (no key), and for ours as tenant, owner and admin."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    tenant, owner = key(ours, "tenant"), key(ours, "owner")
    store = SqlAlchemyStore()
    store.init_db(auth_uri(ours))
    # One real grant each, so MLflow creates the users' own roles the seeded grants go into.
    for user in ("tenant", "owner"):
        store.grant_user_permission(user, "registered_model", f"{user}-own", "MANAGE")
    store.engine.dispose()
    clients = {
        "stock": httpx.Client(base_url=stock.url, timeout=600),
        "tenant": httpx.Client(base_url=ours.url, headers=bearer(tenant), timeout=600),
        "owner": httpx.Client(base_url=ours.url, headers=bearer(owner), timeout=600),
        "admin": httpx.Client(base_url=ours.url, headers=ours.extra["admin key"], timeout=600),
    }
    try:
        yield Seeded(stock, ours, clients)
    finally:
        for client in clients.values():
            client.close()


def grow(seeded: Seeded, kind: Kind, count: int) -> None:
    """Add foreign rows (to both servers' data) and the grants until there are ``count``."""
    from hokusai_registry.server.schema import bump_epoch

    start = seeded.count
    for server in (seeded.stock, seeded.ours):
        engine = sa.create_engine(server.backend)
        with engine.begin() as conn:
            ids = kind.insert(conn, start, count)
        if engine.dialect.name == "postgresql":  # fresh statistics, as a server in use has them
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))
        engine.dispose()
    engine = sa.create_engine(auth_uri(seeded.ours))
    with engine.begin() as conn:
        owner, tenant = role_of(conn, "owner"), role_of(conn, "tenant")
        grants = [{"role": owner, "id": i, "p": "MANAGE"} for i in ids]
        if start == 0:
            grants += [
                {"role": tenant, "id": i, "p": "READ"} for i in ids[:: max(1, len(ids) // GRANTED)][:GRANTED]
            ]
        conn.execute(
            sa.text(
                "INSERT INTO role_permissions (role_id, resource_type, resource_pattern, permission) "
                "VALUES (:role, :type, :id, :p)"
            ),
            [g | {"type": kind.resource_type} for g in grants],
        )
    bump_epoch(engine)
    engine.dispose()
    seeded.count = count


def first_pages(seeded: Seeded, kind: Kind, size: int, requests: int) -> dict[str, float]:
    """Median ms of the first page per target, interleaved request by request (order rotated)."""
    labels = list(seeded.clients)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for label in labels:  # warm connections and caches
        for _ in range(3):
            kind.search(seeded.clients[label], size, None).raise_for_status()
    for index in range(requests):
        for label in labels[index % len(labels) :] + labels[: index % len(labels)]:
            started = time.perf_counter()
            response = kind.search(seeded.clients[label], size, None)
            times[label].append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return {label: statistics.median(ms) for label, ms in times.items()}


def page_through(client: httpx.Client, kind: Kind, size: int) -> tuple[float, int, int]:
    """(ms, pages, rows) to read the whole search."""
    started, token, pages, rows = time.perf_counter(), None, 0, 0
    while True:
        response = kind.search(client, size, token)
        response.raise_for_status()
        pages, rows = pages + 1, rows + len(response.json().get(kind.rows, []))
        token = response.json().get("next_page_token")
        if not token:
            return (time.perf_counter() - started) * 1000, pages, rows


def bench_scale(stock: Server, ours: Server, kind_name: str, sizes: list[int], requests: int) -> str:
    kind = KINDS[kind_name]
    lines = [
        f"| {kind.name} N | page | stock ms | tenant ms | tenant/stock | owner ms | owner/stock | admin ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    through = ["| N | tenant page-through (100 a page) | pages | rows |", "|---|---|---|---|"]
    with targets(stock, ours) as seeded:
        for size in sizes:
            grow(seeded, kind, size)
            time.sleep(2.5)  # past the cache TTL, so no answer from before the seeding is served
            for page in (10, 100):
                ms = first_pages(seeded, kind, page, requests)
                stock = ms["stock"]
                lines.append(
                    f"| {size:,} | {page} | {stock:.1f} | {ms['tenant']:.1f} | {ms['tenant'] / stock:.2f} | "
                    f"{ms['owner']:.1f} | {ms['owner'] / stock:.2f} | {ms['admin']:.1f} |"
                )
                print(lines[-1], flush=True)
            total, pages, rows = page_through(seeded.clients["tenant"], kind, 100)
            through.append(f"| {size:,} | {total:.0f} ms | {pages} | {rows} |")
    return "\n".join(lines) + "\n\n" + "\n".join(through)


def pg_databases(root: Path, kinds: tuple[str, ...] = ("stock", "ours")) -> Iterator[dict[str, str]]:
    """A throw-away PostgreSQL with one database per server kind."""
    from tests.services import run_postgres

    names = {kind: kind.replace("-", "_") for kind in kinds}
    with run_postgres() as uri:
        engine = sa.create_engine(uri, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        base = uri.rsplit("/", 1)[0]
        yield {kind: f"{base}/{name}" for kind, name in names.items()}


def seed_keys(server: Server, keys: int, users: int) -> None:
    """``keys`` API keys spread over ``users`` users, inserted straight into the auth database."""
    import secrets as random_secrets
    from datetime import UTC, datetime

    engine = sa.create_engine(auth_uri(server))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO users (username, password_hash, is_admin) VALUES (:u, 'x', false)"),
            [{"u": f"seeded-{i:05d}"} for i in range(users)],
        )
        conn.execute(
            sa.text(
                "INSERT INTO hokusai_api_keys (id, key_hash, username, scope, created_at) "
                "VALUES (:id, :hash, :u, 'write', :t)"
            ),
            [
                {
                    "id": f"k_s{i:08d}",
                    "hash": random_secrets.token_hex(32),
                    "u": f"seeded-{i % users:05d}",
                    "t": now,
                }
                for i in range(keys)
            ],
        )
    engine.dispose()


def bench_keys(small: Server, large: Server, requests: int) -> str:
    """Authentication with 10 keys vs 100,000 keys and 10,000 users, the key cache off (TTL 0), so
    every request looks its key and user up in the database; interleaved request by request."""
    from hokusai_registry.server.keys import KeyStore

    seed_keys(large, 100_000, 10_000)
    path = "/api/2.0/mlflow/registered-models/get?name=bench-model"
    clients = {
        label: httpx.Client(base_url=s.url, headers=s.headers)
        for label, s in (("10 keys", small), ("100,000 keys", large))
    }
    times: dict[str, list[float]] = {label: [] for label in clients}
    for index in range(requests + 20):
        for label in list(clients) if index % 2 == 0 else list(reversed(clients)):
            started = time.perf_counter()
            clients[label].get(path).raise_for_status()
            if index >= 20:
                times[label].append((time.perf_counter() - started) * 1000)
    lines = [
        "| key table | p50 ms | p90 ms | `keys list --user` ms (in-process) "
        "| `GET /api/hokusai/v1/keys?user=` ms (HTTP, median of 20) |",
        "|---|---|---|---|---|",
    ]
    for label, server in (("10 keys", small), ("100,000 keys", large)):
        api_times = []
        with httpx.Client(base_url=server.url, headers=server.extra["admin key"]) as admin:
            for _ in range(21):
                started = time.perf_counter()
                admin.get("/api/hokusai/v1/keys", params={"user": "bench"}).raise_for_status()
                api_times.append((time.perf_counter() - started) * 1000)
        secret = json.loads((server.data / "secrets.json").read_text())  # type: ignore[operator]
        store = KeyStore(auth_uri(server), secret["key_hash_secret"].encode())
        started = time.perf_counter()
        store.list("bench")
        listed = (time.perf_counter() - started) * 1000
        q = statistics.quantiles(times[label], n=10)
        lines.append(
            f"| {label} | {statistics.median(times[label]):.2f} | {q[8]:.2f} | {listed:.1f} | "
            f"{statistics.median(api_times[1:]):.1f} |"
        )
    for client in clients.values():
        client.close()
    return "\n".join(lines)


def ui_load_ms(url: str, password: str | None, loads: int) -> float:
    """Median ms from opening the Registered Models page to its first model row, in Debian's Chromium."""
    from playwright.sync_api import sync_playwright

    from tests.processes import CHROMIUM, CHROMIUM_FLAGS

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            for _ in range(loads + 1):  # the first load fills the browser's cache of the UI's files
                credentials = {"username": "tenant", "password": password} if password else None
                context = browser.new_context(http_credentials=credentials)  # type: ignore[arg-type]
                page = context.new_page()
                started = time.perf_counter()
                page.goto(f"{url}/#/models", wait_until="domcontentloaded", timeout=120_000)
                page.get_by_text("foreign-").first.wait_for(timeout=120_000)
                times.append((time.perf_counter() - started) * 1000)
                context.close()
        finally:
            browser.close()
    return statistics.median(times[1:])


def bench_ui(stock: Server, ours: Server, size: int, loads: int) -> str:
    """The Registered Models page for a tenant who may read 10 of ``size`` models, beside stock."""
    kind = KINDS["models"]
    with targets(stock, ours) as seeded:
        grow(seeded, kind, size)
        time.sleep(2.5)
        tenant_key = str(seeded.clients["tenant"].headers["Authorization"]).split(" ", 1)[1]
        rows = [("stock (no auth, all rows)", ui_load_ms(stock.url, None, loads))]
        rows.append(("ours, tenant (10 readable)", ui_load_ms(ours.url, tenant_key, loads)))
    lines = [f"| N = {size:,} | page load to first row, ms (median of {loads}) |", "|---|---|"]
    return "\n".join(lines + [f"| {label} | {ms:.0f} |" for label, ms in rows])
