"""Our tables in the auth database: API keys, and the auth epoch.

The epoch is one counter bumped by every write through MLflow's auth store (users, permissions).
Each worker reads it once per request and drops its auth caches when it moved, so a grant created
on one worker is seen by the next request on any other (the stock client creates a model and at
once adds a version, often on another worker), while unchanged data is served from memory.
"""

from __future__ import annotations

import sqlalchemy as sa

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
)

auth_epoch = sa.Table(
    "hokusai_auth_epoch",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.execute(sa.select(auth_epoch.c.id)).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(auth_epoch.insert().values(id=1, epoch=0))
            except sa.exc.IntegrityError:
                pass  # another process inserted it first


def read_epoch(engine: sa.Engine) -> int:
    """Runs on every request, so it skips SQLAlchemy's statement layer: 20 µs instead of 270 µs."""
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT epoch FROM hokusai_auth_epoch WHERE id = 1")
        row = cursor.fetchone()
        cursor.close()
    finally:
        conn.close()  # back to the pool
    return int(row[0]) if row else 0


def bump_epoch(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(auth_epoch.update().where(auth_epoch.c.id == 1).values(epoch=auth_epoch.c.epoch + 1))
