"""PostgreSQL prepares repeated statements except a scoped search's (or none when told); SQLite logs ahead."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from hokusai_registry.server import database, outages, scan_store, schema
from hokusai_registry.server.context import Principal, RequestState, current_request
from hokusai_registry.server.quarantine import FilesImmutable, ModelQuarantined, Quarantine
from tests.services import Postgres, postgres_cluster, run_postgres

# The statement shape whose generic plan walks the whole index (a scoped search's first query).
SCOPED = sa.text("SELECT name FROM models WHERE name IN ('m1', 'm5', 'absent') ORDER BY name LIMIT 11")


@pytest.fixture(scope="module")
def uri() -> Iterator[str]:
    with run_postgres() as uri:
        engine = sa.create_engine(uri)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE models (name TEXT PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO models SELECT 'm' || i FROM generate_series(1, 1000) i"))
        engine.dispose()
        yield uri.replace("postgresql://", "postgresql+psycopg://")


def prepared_after_runs(conn: sa.Connection, runs: int = 8) -> int:
    for _ in range(runs):
        assert conn.execute(SCOPED).scalars().all() == ["m1", "m5"]
    return int(conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar_one())


def test_psycopg_prepares_a_repeated_statement_unless_told_not_to(uri: str) -> None:
    """The control: what every connection would do without database.install()."""
    with psycopg.connect(uri.replace("postgresql+psycopg://", "postgresql://")) as raw:
        for _ in range(8):
            raw.execute(SCOPED.text).fetchall()
        assert raw.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (1,)


@pytest.fixture
def installed() -> Iterator[None]:
    yield
    database.install()  # back to the default for the tests after


def test_no_connection_prepares_when_turned_off_even_one_pooled_before(uri: str, installed: None) -> None:
    engine = sa.create_engine(uri)
    with engine.connect() as conn:  # pooled before install: fixed at its next checkout
        conn.execute(sa.text("SELECT 1"))
    database.install(prepared_statements=False)
    database.install(prepared_statements=False)  # twice: still one listener
    assert sa.event.contains(sa.pool.Pool, "checkout", database._choose_plans)
    with engine.connect() as conn:
        assert prepared_after_runs(conn) == 0
    fresh = sa.create_engine(uri)
    with fresh.connect() as conn:
        assert prepared_after_runs(conn) == 0
    engine.dispose()
    fresh.dispose()


def test_a_scoped_search_plans_with_values_and_every_other_request_prepares(
    uri: str, installed: None
) -> None:
    database.install()
    engine = sa.create_engine(uri, pool_size=1, max_overflow=0)  # one connection, reused by both
    principal = Principal(username="tenant", key_id="k1", scope="read")
    scoped = current_request.set(RequestState(principal, read_only=True, scoped_search=True))
    try:
        with engine.connect() as conn:
            assert prepared_after_runs(conn) == 0
    finally:
        current_request.reset(scoped)
    other = current_request.set(RequestState(principal, read_only=True))
    try:
        with engine.connect() as conn:
            assert prepared_after_runs(conn) == 1
    finally:
        current_request.reset(other)
    engine.dispose()
    outside = sa.create_engine(uri)  # no request: start-up, background scans, the CLI
    with outside.connect() as conn:
        assert prepared_after_runs(conn) == 1
    outside.dispose()


def journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_an_sqlite_database_switches_to_write_ahead_logging_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE t (a TEXT)")
        conn.execute("INSERT INTO t VALUES ('kept')")
    assert journal_mode(path) == "delete"  # SQLite's default, what MLflow runs on unless told
    assert database.use_write_ahead_log(f"sqlite:///{path}") == "wal"
    assert journal_mode(path) == "wal"  # stored in the file: every later connection logs ahead
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT a FROM t").fetchall() == [("kept",)]
    assert database.use_write_ahead_log(f"sqlite:///{path}") == "wal"  # again: nothing changes


def test_commits_in_write_ahead_logging_are_synced_by_default(tmp_path: Path) -> None:
    """What the durability claim rests on: MLflow's connections set no ``synchronous``, so they run
    at the library's default for WAL, which must be FULL (2), not NORMAL (a power loss could then
    take the last commits)."""
    database.use_write_ahead_log(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with contextlib.closing(sqlite3.connect(tmp_path / "mlflow.db")) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)


def test_a_missing_sqlite_database_is_created_logging_ahead(tmp_path: Path) -> None:
    assert database.use_write_ahead_log(f"sqlite:///{tmp_path / 'new.db'}") == "wal"
    assert journal_mode(tmp_path / "new.db") == "wal"


def test_other_databases_are_left_alone(tmp_path: Path) -> None:
    assert database.use_write_ahead_log("sqlite:///:memory:") is None
    assert database.use_write_ahead_log("./mlruns") is None  # no URI: MLflow answers for it
    (tmp_path / "notes.db").write_text("not a database, " * 100)
    assert database.use_write_ahead_log(f"sqlite:///{tmp_path / 'notes.db'}") is None
    assert database.use_write_ahead_log("postgresql://user@127.0.0.1:1/nothing") is None  # never connects


def test_a_database_in_the_middle_of_a_write_keeps_its_mode(tmp_path: Path) -> None:
    """Another server still writing to it: switching would need it alone; `up` goes on, logging why."""
    path = tmp_path / "busy.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as writer:
        writer.execute("CREATE TABLE t (a TEXT)")
        writer.execute("BEGIN EXCLUSIVE")
        assert database.use_write_ahead_log(f"sqlite:///{path}", busy_timeout=0.1) is None
        writer.execute("COMMIT")
    assert journal_mode(path) == "delete"


OTHER_SESSIONS_LAST_STATEMENT = sa.text(
    "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[Postgres]:
    """A PostgreSQL cluster of its own (these tests restart it) with the auth epoch tables."""
    with postgres_cluster() as cluster:
        if not cluster.controllable:
            pytest.skip("restarts a PostgreSQL of its own; HOKUSAI_TEST_POSTGRES_URI names a shared one")
        engine = sa.create_engine(cluster.uri)
        schema.create_tables(engine)
        schema.bump_user_epoch(engine, "alice")
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE runs (id INTEGER PRIMARY KEY)"))
        engine.dispose()
        yield cluster


def test_the_epoch_read_is_its_statement_alone_on_postgresql(auth_cluster: Postgres) -> None:
    """No transaction around it (MLflow's pool would send BEGIN and ROLLBACK too) and its own pool."""
    mlflow_like = sa.create_engine(auth_cluster.uri, pool_pre_ping=True)
    engine = database.single_statement_engine(mlflow_like, "epochs")
    assert engine is not mlflow_like
    assert schema.read_epochs(engine, "alice") == (0, 1)
    with mlflow_like.connect() as conn:
        last = conn.execute(OTHER_SESSIONS_LAST_STATEMENT).scalars().all()
    # the pooled connection's last statement is the read (psycopg numbers the placeholder): no ROLLBACK
    assert last == [schema.READ_EPOCHS_FORMAT.replace("%s", "$1")]
    engine.dispose()
    mlflow_like.dispose()


def test_the_epoch_read_survives_a_database_restart_between_requests(auth_cluster: Postgres) -> None:
    """Its pool does not ping, so its connections die with the server: the read retries once anew."""
    engine = database.single_statement_engine(sa.create_engine(auth_cluster.uri), "epochs")
    for _ in range(3):
        assert schema.read_epochs(engine, "alice") == (0, 1)
        auth_cluster.stop()
        auth_cluster.start()
    assert schema.read_epochs(engine, "alice") == (0, 1)
    auth_cluster.stop()
    try:  # down: refused at once, as the database's outage (a 503 upstream)
        with pytest.raises(Exception) as raised:
            schema.read_epochs(engine, "alice")
        assert outages.dependency(raised.value) == "database"
    finally:
        auth_cluster.start()
    engine.dispose()


def test_quarantine_checks_are_one_statement_and_survive_a_database_restart(auth_cluster: Postgres) -> None:
    """Every download, upload and download URI asks the quarantine: one statement from the rows pool,
    no transaction around it, tried once more when the restarted database dropped its connection."""
    mlflow_like = sa.create_engine(auth_cluster.uri, pool_pre_ping=True)
    scan_store.create_tables(mlflow_like)
    key = scan_store.VersionKey("default", "quarantined", 1)
    with mlflow_like.begin() as conn:
        conn.execute(scan_store.scans.delete())
        scan_store.insert_pending(
            conn, key, "mlflow-artifacts:/1/r/artifacts/m", "1/r/artifacts/m", blocked=True
        )
    quarantine = Quarantine(mlflow_like)
    for _ in range(2):
        with pytest.raises(ModelQuarantined):
            quarantine.check_path("1/r/artifacts/m/model.pkl")
        with pytest.raises(FilesImmutable):
            quarantine.check_write("1/r/artifacts/m/added.txt")
        with pytest.raises(ModelQuarantined):
            quarantine.check_version("quarantined", 1)
        with mlflow_like.connect() as conn:
            last = conn.execute(OTHER_SESSIONS_LAST_STATEMENT).scalars().all()
        assert any(query.startswith("SELECT hokusai_scans.") for query in last), last  # not a ROLLBACK
        auth_cluster.stop()
        auth_cluster.start()
    quarantine.check_path("1/other-run/artifacts/notes.txt")  # outside it: served
    mlflow_like.dispose()


def test_reads_stuck_behind_a_lock_hold_up_no_epoch_read(auth_cluster: Postgres) -> None:
    """A migration holding a table: the permission checks reading it wait, every other request's
    epoch read goes on (the two have a pool each), and a check that finds no free connection in
    time fails as the database's outage instead of waiting SQLAlchemy's 30 s."""
    base = sa.create_engine(auth_cluster.uri)
    rows = database.single_statement_engine(base, "rows")
    epochs = database.single_statement_engine(base, "epochs")
    assert rows is not epochs
    kept, overflow = database.POOL_SIZES["rows"]
    with base.connect() as migration:
        migration.execute(sa.text("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE"))
        stuck = [
            threading.Thread(target=read_runs, args=(rows,), daemon=True) for _ in range(kept + overflow)
        ]
        for thread in stuck:
            thread.start()
        time.sleep(0.5)  # both rows connections now wait for the lock
        started = time.monotonic()
        assert schema.read_epochs(epochs, "alice") == (0, 1)
        assert time.monotonic() - started < 1
        migration.rollback()
    for thread in stuck:
        thread.join(10)
    base.dispose()


def read_runs(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()


def test_sqlite_reads_from_mlflows_own_pool(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    for purpose in ("epochs", "rows"):
        assert database.single_statement_engine(engine, purpose) is engine  # no round trips to save
