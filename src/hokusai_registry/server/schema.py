"""Our tables in the auth database: API keys, and the auth epochs.

A key's ``name`` is unique per user among its live keys (not revoked, not replaced by a rotation);
a rotated key keeps its name with ``replaced_by`` set, so during its grace period the old and the
new key share it. Keys made before names existed have none (NULL) and are shown by id.

The epochs are counters bumped by writes through MLflow's auth store (users, permissions): one
per user for a write that changes only that user's access (the MANAGE grant on a model they just
created), and one global counter for any other write (roles, a resource's grants renamed or
deleted). Each worker reads the global epoch and the caller's own once per request (a request that
only allows or denies trusts a read of the last second, decisions.py) and drops what
it cached for that user (or everything) when one moved, so a grant created on one worker is seen
by the next request on any other (the stock client creates a model and at once adds a version,
often on another worker), while other users' cached data stays.
"""

from __future__ import annotations

import sqlalchemy as sa

from hokusai_registry.server.database import fetch_one, once_more_if_dropped

metadata = sa.MetaData()

api_keys = sa.Table(
    "hokusai_api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("username", sa.String(255), nullable=False, index=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.Column("name", sa.String(64)),
    sa.Column("replaced_by", sa.String(32)),
)
_LIVE = sa.and_(api_keys.c.revoked_at.is_(None), api_keys.c.replaced_by.is_(None))
sa.Index(
    "uq_hokusai_api_keys_live_name",
    api_keys.c.username,
    api_keys.c.name,
    unique=True,
    sqlite_where=_LIVE,
    postgresql_where=_LIVE,
)
# Columns added after the first release, added to an existing table at start-up.
ADDED_COLUMNS = (api_keys.c.name, api_keys.c.replaced_by)

auth_epoch = sa.Table(
    "hokusai_auth_epoch",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
)


user_epochs = sa.Table(
    "hokusai_auth_user_epoch",
    metadata,
    sa.Column("username", sa.String(255), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)
    _add_columns(engine)
    with engine.begin() as conn:
        if conn.execute(sa.select(auth_epoch.c.id)).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(auth_epoch.insert().values(id=1, epoch=0))
            except sa.exc.IntegrityError:
                pass  # another process inserted it first


def _add_columns(engine: sa.Engine) -> None:
    """Bring a key table from an earlier release up to date; every worker may race to do it."""
    present = {column["name"] for column in sa.inspect(engine).get_columns(api_keys.name)}
    missing = [column for column in ADDED_COLUMNS if column.name not in present]
    for column in missing:
        ddl = f"ALTER TABLE {api_keys.name} ADD COLUMN {column.name} {column.type.compile(engine.dialect)}"
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(ddl))
        except sa.exc.DBAPIError:
            present = {c["name"] for c in sa.inspect(engine).get_columns(api_keys.name)}
            if column.name not in present:
                raise  # not another worker's doing
    for index in api_keys.indexes:  # also when an earlier start added the columns, then died
        try:
            index.create(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            names = {i["name"] for i in sa.inspect(engine).get_indexes(api_keys.name)}
            if index.name not in names:
                raise  # not another worker's doing


READ_EPOCHS_QMARK = (  # SQLite's placeholder
    "SELECT (SELECT epoch FROM hokusai_auth_epoch WHERE id = 1), "
    "(SELECT epoch FROM hokusai_auth_user_epoch WHERE username = ?)"
)
READ_EPOCHS_FORMAT = READ_EPOCHS_QMARK.replace("?", "%s")  # psycopg's


def read_epochs(engine: sa.Engine, username: str | None) -> tuple[int, int]:
    """(global epoch, ``username``'s epoch), in one query. Runs on most requests, so it skips
    SQLAlchemy's statement layer (``database.fetch_one``: 20 µs instead of 270 µs) and is read from a
    pool that does not ping (``database.single_statement_engine``). A connection the database ended
    since it was pooled is dropped and the query tried once more on a new one; only if that fails too
    is the error raised (SQLAlchemy's wrapper of the driver's)."""
    return once_more_if_dropped(lambda: _read_epochs(engine, username))


def _read_epochs(engine: sa.Engine, username: str | None) -> tuple[int, int]:
    query = READ_EPOCHS_QMARK if engine.dialect.paramstyle == "qmark" else READ_EPOCHS_FORMAT
    row = fetch_one(engine, query, (username or "",))
    return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def bump_epoch(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(auth_epoch.update().where(auth_epoch.c.id == 1).values(epoch=auth_epoch.c.epoch + 1))


def bump_user_epoch(engine: sa.Engine, username: str) -> None:
    """Move one user's epoch: every worker drops what it cached for that user at their next request."""
    for _ in range(2):  # another writer may insert the row between our update and our insert
        with engine.begin() as conn:
            changed = conn.execute(
                user_epochs.update()
                .where(user_epochs.c.username == username)
                .values(epoch=user_epochs.c.epoch + 1)
            ).rowcount
            if changed:
                return
            try:
                with conn.begin_nested():
                    conn.execute(user_epochs.insert().values(username=username, epoch=1))
                return
            except sa.exc.IntegrityError:
                pass
