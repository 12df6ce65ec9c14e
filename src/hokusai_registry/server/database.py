"""How the databases are set up: PostgreSQL prepares repeated statements, except the two whose plan
depends on their values; SQLite logs ahead.

psycopg 3 prepares a statement on the server after its fifth run on a connection. PostgreSQL then
may switch it to a generic plan, made once without the parameters' values and reused: that saves
planning, 0.4 to 1.1 ms of a request's time on this project's test VM (docs/benchmarks.md, run 17),
and MLflow's own statements run so in stock MLflow on psycopg 3. For a statement whose best plan
depends on its values a generic plan is a trap. Two of ours are such, so their connections plan with
values (:func:`planned_with_values`, and at every checkout a scoped search makes):

- a scoped search (``name IN (...) ORDER BY name LIMIT n``, scoped_search.py): the generic plan walks
  the whole name index whenever fewer than ``n`` rows match; a tenant who can read 10 of 10,000
  models paid about 3 ms a statement, three statements a page, against 0.07 ms with the values;
- the quarantine lookup (scan_store.py): at 100,000 versions the generic plan reads every row,
  32 ms a lookup against 0.3 ms.

psycopg forgets what it counted and prepared at every rollback, which SQLAlchemy's pool sends when a
connection comes back without a commit: only connections that commit (MLflow's sessions) or run in
autocommit (the single-statement pools below) prepare at all.

``prepared_statements=False`` (``HOKUSAI_REGISTRY_PREPARED_STATEMENTS``) turns preparing off for every
connection, as psycopg2 does: behind a transaction-pooling proxy (PgBouncer, RDS Proxy) a prepared
statement is named on one database session, so the proxy must pin the client's connection to it
(RDS Proxy) or the statement fails on another session (PgBouncer before 1.21).

An SQLite database (``up``'s embedded default) is switched to write-ahead logging before any worker
starts; the mode is kept in the file. A commit then syncs the log once instead of a rollback journal
and the database (0.2 ms against 0.7 ms a commit on this project's test VM, a dozen commits a
registration), and a worker reading never waits for another one's write. Every commit is still
synced: ``synchronous`` stays at the library's default, FULL in the SQLite that Python and Debian
ship (a test pins it), so a committed write survives a power loss as before. The log needs the
workers on one host and a local disk, as SQLite itself does.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from hokusai_registry.server.context import current_request

__all__ = [
    "ended_by_server",
    "fetch_one",
    "install",
    "once_more_if_dropped",
    "planned_with_values",
    "single_statement_engine",
    "use_write_ahead_log",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


PREPARE_AFTER_RUNS = 5  # psycopg 3's default threshold
_prepares = True  # install()'s choice for this process
_with_values: ContextVar[bool] = ContextVar("hokusai_planned_with_values", default=False)


def _choose_plans(dbapi_connection: Any, _record: Any, _proxy: Any = None) -> None:
    """At each checkout: prepare repeated statements unless turned off or planned with values."""
    if hasattr(dbapi_connection, "prepare_threshold"):  # psycopg 3; psycopg2 and sqlite3 never prepare
        request = current_request.get()
        values = _with_values.get() or (request is not None and request.scoped_search)
        dbapi_connection.prepare_threshold = PREPARE_AFTER_RUNS if _prepares and not values else None


@contextlib.contextmanager
def planned_with_values() -> Iterator[None]:
    """Connections checked out in this block prepare nothing: PostgreSQL plans each statement with
    its values, for statements whose best plan depends on them."""
    token = _with_values.set(True)
    try:
        yield
    finally:
        _with_values.reset(token)


def install(*, prepared_statements: bool = True) -> None:
    """Apply to every connection pool of this process, those made before included (on checkout)."""
    global _prepares
    _prepares = prepared_statements
    if not sa.event.contains(sa.pool.Pool, "checkout", _choose_plans):
        sa.event.listen(sa.pool.Pool, "checkout", _choose_plans)


Purpose = Literal["epochs", "rows"]
# Connections per worker and purpose: the auth epochs, read by every request, and the rows permission
# checks decide on. Each purpose has its own pool, so reads stuck behind a lock on a table (a migration
# holding ``runs``) never hold up every other request's epoch read.
POOL_SIZES: dict[Purpose, tuple[int, int]] = {"epochs": (1, 0), "rows": (1, 1)}  # (kept, overflow)
POOL_TIMEOUT_SECONDS = 5  # then a 503 with Retry-After, not a request held for SQLAlchemy's 30 s


def single_statement_engine(engine: sa.Engine, purpose: Purpose) -> sa.Engine:
    """A small second pool to ``engine``'s PostgreSQL database, one per database, purpose and
    process, for statements read alone on every request: in autocommit, and without MLflow's ping at
    each checkout. A read from MLflow's pool is four round trips (ping, BEGIN, the statement, COMMIT or
    ROLLBACK), about 0.5 ms on loopback; here it is one per statement. Without the ping, a connection the
    database dropped fails at its next use, so callers retry once (:func:`once_more_if_dropped`).
    One connection for the epochs and two for rows: a statement takes a fraction of a
    millisecond, so another request waits for one rather than opening more (the connection budget in
    docs/operations.md). Any other database gets ``engine`` itself (SQLite has no round trips)."""
    if engine.dialect.name != "postgresql":
        return engine
    key = (purpose, engine.url.render_as_string(hide_password=False))
    with _lock:
        single = _single_statement_engines.get(key)
        if single is None:
            kept, overflow = POOL_SIZES[purpose]
            single = sa.create_engine(
                engine.url,
                isolation_level="AUTOCOMMIT",
                pool_pre_ping=False,
                pool_size=kept,
                max_overflow=overflow,
                pool_timeout=POOL_TIMEOUT_SECONDS,
            )
            sa.event.listen(single, "handle_error", _server_shutdown_is_a_disconnect)
            _single_statement_engines[key] = single
    return single


_lock = threading.Lock()
_single_statement_engines: dict[tuple[Purpose, str], sa.Engine] = {}


def once_more_if_dropped(read: Callable[[], T]) -> T:
    """``read()``, and once more if its pooled connection was found dead (the database restarted
    since: the dead connection was invalidated, so the second try gets a new one). The error is
    SQLAlchemy's, or one raised from it (MLflow's managed sessions wrap it in an MlflowException)."""
    try:
        return read()
    except Exception as error:
        lost = error if isinstance(error, sa.exc.DBAPIError) else error.__cause__
        if not (isinstance(lost, sa.exc.DBAPIError) and lost.connection_invalidated):
            raise
    return read()


def fetch_one(engine: sa.Engine, query: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The first row of ``query`` (in the driver's paramstyle), straight from a pooled DBAPI
    connection: for lookups every request makes, SQLAlchemy's statement layer costs more than the
    statement (about 250 µs a call). A driver error is raised as SQLAlchemy's wrapper of it
    (``OperationalError`` for a refused or broken connection), as that layer would; a connection the
    error says is dead is dropped, so :func:`once_more_if_dropped` gets a new one."""
    conn = engine.raw_connection()  # a refused connection raises sa.exc.OperationalError here
    dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(query, params)
            row: tuple[Any, ...] | None = cursor.fetchone()
        finally:
            cursor.close()
    except dbapi_error as exc:
        raw = conn.dbapi_connection
        dead = engine.dialect.is_disconnect(exc, raw, None) or ended_by_server(exc)  # type: ignore[arg-type]
        if dead:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            query,
            params,
            exc,
            dbapi_error,
            hide_parameters=True,
            connection_invalidated=dead,
            dialect=engine.dialect,
        ) from exc
    finally:
        conn.close()  # back to the pool (an invalidated one is discarded)
    return row


def ended_by_server(error: BaseException) -> bool:
    """PostgreSQL ended the session (SQLSTATE class 57P: shut down, crashed, restarting): psycopg
    reports that on the connection's next statement without calling the connection broken."""
    return str(getattr(error, "sqlstate", None) or "").startswith("57P")


def _server_shutdown_is_a_disconnect(context: sa.engine.ExceptionContext) -> None:
    if ended_by_server(context.original_exception):
        context.is_disconnect = True  # SQLAlchemy then invalidates the pool and says so on the error


def use_write_ahead_log(uri: str, busy_timeout: float = 5.0) -> str | None:
    """Switch the SQLite database at ``uri`` to write-ahead logging (created if missing); its journal
    mode after, or None for any other database. A database another process is writing to for longer
    than ``busy_timeout`` keeps its mode (switching needs it alone) and says so in the log."""
    try:
        url = sa.make_url(uri)
    except sa.exc.ArgumentError:  # not a database URI: MLflow says what it makes of it
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    try:
        as_uri = url.query.get("uri") == "true"  # sqlite:///file:path?mode=rwc&uri=true
        with contextlib.closing(sqlite3.connect(url.database, timeout=busy_timeout, uri=as_uri)) as conn:
            mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    except sqlite3.Error as error:  # locked by a running server, or no database at all: MLflow says so
        log.warning("%s keeps its journal mode: %s", url.database, error)
        return None
    if mode != "wal":
        log.warning("%s keeps its journal mode %s: SQLite could not switch it to wal", url.database, mode)
    return mode
