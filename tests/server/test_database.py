"""Every connection of a worker has PostgreSQL plan statements with their values (database.py)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from hokusai_registry.server import database
from tests.services import run_postgres

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


def test_no_connection_prepares_once_installed_even_one_pooled_before(uri: str) -> None:
    engine = sa.create_engine(uri)
    with engine.connect() as conn:  # pooled before install: fixed at its next checkout
        conn.execute(sa.text("SELECT 1"))
    database.install()
    database.install()  # twice: still one listener
    with engine.connect() as conn:
        assert prepared_after_runs(conn) == 0
    fresh = sa.create_engine(uri)
    with fresh.connect() as conn:
        assert prepared_after_runs(conn) == 0
    engine.dispose()
    fresh.dispose()
