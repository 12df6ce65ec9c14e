"""The quarantine's lookup (every upload, download and download URI asks it): exactly "a version's files
hold this path or lie under it", and one indexed search however many versions the server holds."""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hokusai_registry.server import database, scan_store
from hokusai_registry.server.quarantine import ancestors, normalized
from tests.services import postgres_cluster

# Path segments near '/' in byte order ('-', '.', '0'), LIKE's wildcards and escape, and non-ASCII.
SEGMENT = st.text(alphabet="ab-.0_%\\é", min_size=1, max_size=3)
PATH = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        made = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('scans') / 'registry.db'}")
        scan_store.create_tables(made)
        yield made
        return
    with postgres_cluster() as cluster:
        made = sa.create_engine(cluster.uri)
        with made.begin() as conn:  # a table from before the byte-ordered index: start-up adds it
            scan_store.metadata.create_all(conn)
            conn.execute(sa.text("DROP INDEX IF EXISTS hokusai_scans_prefix_bytes"))
        scan_store.create_tables(made)
        yield made
        made.dispose()


def store(engine: sa.Engine, prefixes: list[str]) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "workspace": "default",
            "name": f"m{i}",
            "version": 1,
            "storage_location": "x",
            "artifact_prefix": prefix,
            "state": scan_store.DONE,
            "blocked": True,
            "attempts": 1,
            "created_at": now,
        }
        for i, prefix in enumerate(prefixes)
    ]
    with engine.begin() as conn:
        conn.execute(scan_store.scans.delete())
        if rows:
            conn.execute(scan_store.scans.insert(), rows)


def expected(prefixes: list[str], path: str) -> bool:
    return any(prefix in ancestors(path) or prefix.startswith(path + "/") for prefix in prefixes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefixes=st.lists(PATH, max_size=6), path=PATH)
def test_the_lookup_finds_exactly_the_versions_at_or_under_a_path(
    engine: sa.Engine, prefixes: list[str], path: str
) -> None:
    path = normalized(path)
    # with neighbours of the path in byte order: what a range off by one character would take in
    neighbours = [path + "0", path + ".x", path + "-", posixpath.dirname(path) + "0"]
    prefixes = [*prefixes, *neighbours[: len(prefixes) % 5]]
    store(engine, prefixes)
    found = scan_store.blocked_at_or_around(engine, path, ancestors(path))
    assert (found is not None) == expected(prefixes, path), (prefixes, path)
    if found is not None:
        prefix = found.artifact_prefix or ""
        assert prefix in ancestors(path) or prefix.startswith(path + "/")


def test_the_lookup_is_an_index_search_not_a_scan_of_every_version(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(engine, [f"{i % 50}/models/m-{i}/artifacts" for i in range(2000)])
    path = "1/models/m-new/artifacts/MLmodel"
    sent: list[tuple[str, tuple[object, ...]]] = []
    fetch_one = database.fetch_one

    def capture(on: sa.Engine, statement: str, parameters: tuple[object, ...]) -> object:
        sent.append((statement, parameters))
        return fetch_one(on, statement, parameters)

    monkeypatch.setattr(database, "fetch_one", capture)
    assert scan_store.blocked_at_or_around(engine, path, ancestors(path)) is None
    [(statement, parameters)] = sent
    with engine.begin() as conn:  # the statement as it was sent, explained with its values
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)  # type: ignore[arg-type]
            plan = " ".join(row[-1] for row in rows)
            assert "SCAN hokusai_scans" not in plan and "USING INDEX" in plan, plan
        else:
            conn.execute(sa.text("ANALYZE hokusai_scans"))
            conn.execute(sa.text("SET LOCAL enable_seqscan = off"))  # what it can use, at any size
            rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)  # type: ignore[arg-type]
            plan = " ".join(row[0] for row in rows)
            assert "hokusai_scans_prefix_bytes" in plan and "Seq Scan" not in plan, plan
    assert scan_store.blocked_at_or_around(engine, "1/models", ancestors("1/models")) is not None


@pytest.mark.parametrize("engine", ["postgresql"], indirect=True)  # SQLite prepares nothing on a server
def test_the_lookup_is_planned_with_its_values(engine: sa.Engine) -> None:
    """Prepared, PostgreSQL would switch it to a generic plan after five runs, and that plan reads
    every version's row (32 ms at 100,000 versions against 0.3 ms; database.py)."""
    database.install()  # every other statement of a worker's connection is prepared
    store(engine, [f"{i % 50}/models/m-{i}/artifacts" for i in range(200)])
    rows = database.single_statement_engine(engine, "rows")  # what the quarantine reads from
    path = "1/models/m-new/artifacts/MLmodel"
    for _ in range(database.PREPARE_AFTER_RUNS + 3):
        assert scan_store.blocked_at_or_around(rows, path, ancestors(path)) is None
        assert scan_store.scanned_at_or_around(rows, path, ancestors(path)) is None
    with rows.connect() as conn:  # its one kept connection: the session the lookups ran on
        assert conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar_one() == 0
        for _ in range(database.PREPARE_AFTER_RUNS + 1):  # the control: the same session prepares others
            conn.execute(sa.text("SELECT count(*) FROM hokusai_scans")).scalar_one()
        assert conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar_one() == 1
