"""Recording a verdict (``scan_store.finish``): the same end state on SQLite (one transaction) and on
PostgreSQL (one statement), against MLflow's real SQL registry store."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from hokusai_registry.scanning.report import Finding, ScannedFile, ScanReport, Verdict
from hokusai_registry.server import database, scan_store
from hokusai_registry.server.scan_store import Outcome, VersionKey
from tests.services import postgres_cluster

UNSAFE = ScanReport(
    "test scanner",
    [ScannedFile("model.pkl", 12, "ab" * 32, "pickle", Verdict.UNSAFE)],
    [Finding("model.pkl", Verdict.UNSAFE, "calls os.system")],
)
REFUSED = Outcome("FAILED_REGISTRATION", "model.pkl: calls os.system", blocked=True)
names = (f"model-{i}" for i in itertools.count())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SqlAlchemyStore]:
    if request.param == "sqlite":
        made = SqlAlchemyStore(f"sqlite:///{tmp_path_factory.mktemp('finish') / 'mlflow.db'}")
        scan_store.create_tables(made.engine)
        yield made
        made.engine.dispose()
        return
    with postgres_cluster() as cluster:
        made = SqlAlchemyStore(cluster.uri)
        scan_store.create_tables(made.engine)
        yield made
        made.engine.dispose()


def pending_version(store: SqlAlchemyStore, owner: str = "worker-1") -> VersionKey:
    """A version with a pending scan leased to ``owner``, a stale verdict tag and a tag of its own."""
    name = next(names)
    store.create_registered_model(name)
    store.create_model_version(name, "mlflow-artifacts:/1/models/m-1/artifacts")
    store.set_model_version_tag(name, "1", _tag("hokusai_scan_verdict", "stale"))
    store.set_model_version_tag(name, "1", _tag("team", "search"))
    key = VersionKey("default", name, 1)
    with store.engine.begin() as conn:
        lease = (owner, dt.timedelta(seconds=30))
        scan_store.insert_pending(conn, key, "x", "1/models/m-1/artifacts", blocked=True, leased_to=lease)
    return key


def _tag(key: str, value: str) -> object:
    from mlflow.entities.model_registry import ModelVersionTag

    return ModelVersionTag(key, value)


def state(store: SqlAlchemyStore, key: VersionKey) -> tuple[object, ...]:
    version = store.get_model_version(key.name, str(key.version))
    record = scan_store.get(store.engine, key)
    assert record is not None
    return version.status, version.status_message, version.tags, record.state, record.blocked, record.verdict


def test_the_leaseholder_records_status_message_tags_and_verdict_at_once(store: SqlAlchemyStore) -> None:
    key = pending_version(store)
    assert scan_store.finish(store.engine, key, "worker-1", UNSAFE, REFUSED)
    tags = {"team": "search", **scan_store.verdict_tags(UNSAFE)}  # the stale verdict tag replaced
    assert state(store, key) == (
        "FAILED_REGISTRATION", "model.pkl: calls os.system", tags, scan_store.DONE, True, Verdict.UNSAFE
    )  # fmt: skip
    record = scan_store.get(store.engine, key)
    assert record is not None and record.report == UNSAFE and record.finished_at is not None


def test_another_worker_records_nothing(store: SqlAlchemyStore) -> None:
    key = pending_version(store)
    before = state(store, key)
    assert not scan_store.finish(store.engine, key, "worker-2", UNSAFE, REFUSED)
    assert state(store, key) == before
    assert scan_store.finish(store.engine, key, "worker-1", UNSAFE, REFUSED)  # the holder still can
    assert not scan_store.finish(store.engine, key, "worker-1", UNSAFE, REFUSED)  # once only


def test_a_version_deleted_meanwhile_gets_its_verdict_recorded_and_no_tags(store: SqlAlchemyStore) -> None:
    key = pending_version(store)
    store.delete_registered_model(key.name)  # its versions' rows go with it (a version's delete is soft)
    assert scan_store.finish(store.engine, key, "worker-1", UNSAFE, REFUSED)
    record = scan_store.get(store.engine, key)
    assert record is not None and record.state == scan_store.DONE
    with store.engine.connect() as conn:
        tags = sa.text("SELECT count(*) FROM model_version_tags WHERE name = :name")
        assert conn.execute(tags, {"name": key.name}).scalar_one() == 0


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)  # SQLite has no round trips to save
def test_on_postgresql_it_is_one_statement(store: SqlAlchemyStore) -> None:
    key = pending_version(store)
    sent: list[str] = []

    def capture(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    rows = database.single_statement_engine(store.engine, "rows")
    sa.event.listen(rows, "before_cursor_execute", capture)
    sa.event.listen(store.engine, "before_cursor_execute", capture)
    try:
        assert scan_store.finish(store.engine, key, "worker-1", UNSAFE, REFUSED)
    finally:
        sa.event.remove(rows, "before_cursor_execute", capture)
        sa.event.remove(store.engine, "before_cursor_execute", capture)
    assert len(sent) == 1, sent
    assert state(store, key)[0] == "FAILED_REGISTRATION"
