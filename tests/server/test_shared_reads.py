"""One full read per read-only request (shared_reads.py), on MLflow's real SQL stores (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.server import auth, handlers
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingSqlStore

from hokusai_registry.server import registry_store, shared_reads
from hokusai_registry.server.context import Principal, RequestState, current_request


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A tracking store with the shared reads installed as the app installs them, undone after."""
    for name in ("get_run", "get_logged_model"):
        monkeypatch.setattr(TrackingSqlStore, name, getattr(TrackingSqlStore, name))
    for name in ("_get_tracking_store", "_get_model_registry_store"):
        monkeypatch.setattr(auth, name, getattr(auth, name))
    store = TrackingSqlStore(f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts"))
    monkeypatch.setattr(handlers, "_tracking_store", store)
    shared_reads.install()
    yield store
    store.engine.dispose()


@contextmanager
def request(shares_reads: bool, read_only: bool = True) -> Iterator[None]:
    """Within the block, a request as the ASGI layer describes it (``policy.shares_reads``)."""
    state = RequestState(Principal("k_1", "alice", "write"), read_only=read_only, shares_reads=shares_reads)
    token = current_request.set(state)
    try:
        yield
    finally:
        current_request.reset(token)


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements run on ``engine`` in the block."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


def make_run(store: Any) -> str:
    from mlflow.entities import Param

    experiment = store.create_experiment(f"e-{id(store)}")
    run_id: str = store.create_run(experiment, "alice", 0, [], None).info.run_id
    store.log_batch(run_id, [], [Param("p", "v")], [])
    return run_id


def test_in_a_read_by_id_the_handler_gets_the_auth_apps_full_read(tracking: Any) -> None:
    run_id = make_run(tracking)
    with request(shares_reads=True):
        checked = auth._get_tracking_store().get_run(run_id)  # what the auth app reads to decide
        with statements(tracking.engine) as sql:
            served = handlers._get_tracking_store().get_run(run_id)  # what runs/get then answers
    assert served is checked
    assert served.data.params == {"p": "v"}  # the full run, not the auth app's one-row read
    assert sql == []


def test_in_a_write_request_the_auth_app_reads_one_row_and_the_handler_its_own(tracking: Any) -> None:
    run_id = make_run(tracking)
    with request(shares_reads=False, read_only=False):
        checked = auth._get_tracking_store().get_run(run_id)
        with statements(tracking.engine) as sql:
            served = handlers._get_tracking_store().get_run(run_id)
    assert checked.data.params == {}  # the row: the auth app reads nothing but its experiment
    assert served.data.params == {"p": "v"} and sql


def test_another_read_only_request_reads_one_row_to_decide(tracking: Any) -> None:
    """``get-history`` checks its run and never reads it again: a full read there would be waste."""
    run_id = make_run(tracking)
    with request(shares_reads=False), statements(tracking.engine) as sql:
        checked = auth._get_tracking_store().get_run(run_id)
    queries = [statement for statement in sql if not statement.startswith("PRAGMA")]  # MLflow's session
    assert checked.data.params == {} and len(queries) == 1, queries  # the run's row, nothing else


def test_nothing_is_kept_past_the_request_or_outside_one(tracking: Any) -> None:
    run_id = make_run(tracking)
    with request(shares_reads=True):
        first = tracking.get_run(run_id)
    with request(shares_reads=True):
        assert tracking.get_run(run_id) is not first
    assert tracking.get_run(run_id) is not tracking.get_run(run_id)


def test_a_failed_read_is_not_kept(tracking: Any) -> None:
    with request(shares_reads=True):
        for _ in range(2):
            with statements(tracking.engine) as sql, pytest.raises(MlflowException) as raised:
                tracking.get_run("0" * 32)
            assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST" and sql


def test_logged_models_are_kept_per_id_and_allow_deleted(tracking: Any) -> None:
    experiment = tracking.create_experiment("models")
    model_id = tracking.create_logged_model(experiment, name="m").model_id
    with request(shares_reads=True):
        checked = auth._get_tracking_store().get_logged_model(model_id)
        assert tracking.get_logged_model(model_id, allow_deleted=False) is checked
        with statements(tracking.engine) as sql:
            deleted_too = tracking.get_logged_model(model_id, allow_deleted=True)
        assert deleted_too is not checked and sql
        assert deleted_too.model_id == checked.model_id == model_id


def test_a_registered_model_is_read_once_per_read_only_request(tmp_path: Path) -> None:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistrySqlStore

    sql_store = RegistrySqlStore(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        sql_store.create_registered_model("m")
        sql_store.create_model_version("m", "mlflow-artifacts:/x")
        store = registry_store.RegistryStore(sql_store)
        with request(shares_reads=True):
            first = store.get_registered_model("m")
            assert store.get_registered_model("m") is first and len(first.latest_versions) == 1
        with request(shares_reads=False, read_only=False):
            assert store.get_registered_model("m") is not store.get_registered_model("m")
    finally:
        sql_store.engine.dispose()
