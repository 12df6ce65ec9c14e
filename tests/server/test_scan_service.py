"""A version's scan from insert to verdict, against MLflow's real SQL registry store and our real scanner.

Several ``ScanService`` objects on one database stand for several workers (or replicas): leases decide
who scans, and a verdict is recorded once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from hokusai_registry.server import mlflow_adapter, scan_service, scan_store
from hokusai_registry.server.quarantine import ModelQuarantined, Quarantine
from hokusai_registry.server.registry_store import RegistryStore
from hokusai_registry.server.scan_service import Policy, ScanService
from hokusai_registry.server.scan_store import VersionKey

OS_SYSTEM = b"\x80\x02cos\nsystem\nq\x00."  # references os.system, calls nothing; never loaded
MLMODEL = b"artifact_path: model\nflavors: {}\n"


class World:
    def __init__(self, root: Path) -> None:
        self.artifacts = root / "artifacts"
        self.store = SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}")
        self.engine: sa.Engine = self.store.engine
        scan_store.create_tables(self.engine)
        self.models = 0

    def service(self, policy: Policy = "block", inline_max_bytes: int = 1 << 20) -> ScanService:
        service = ScanService(self.engine, str(self.artifacts), policy, inline_max_bytes, 1)
        mlflow_adapter.on_model_version_insert(service.on_insert)
        return service

    def model(self, files: dict[str, bytes]) -> str:
        """Files stored as a logged model's artifacts are; returns the version source."""
        self.models += 1
        root = self.artifacts / "1" / "models" / f"m-{self.models}" / "artifacts"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return f"mlflow-artifacts:/1/models/m-{self.models}/artifacts"

    def create(self, service: ScanService, name: str, files: dict[str, bytes]) -> Any:
        store = RegistryStore(self.store, service, Quarantine(self.engine))
        if not self.store.search_registered_models(f"name='{name}'"):
            store.create_registered_model(name)
        return store.create_model_version(name=name, source=self.model(files))

    def status(self, name: str, version: int = 1) -> tuple[str, str | None]:
        got = self.store.get_model_version(name, str(version))
        return got.status, got.status_message


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    yield world
    mlflow_adapter.on_model_version_insert(lambda _conn, _row: None)
    world.engine.dispose()


def wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_small_clean_model_is_ready_in_its_create_response(world: World) -> None:
    created = world.create(world.service(), "clean", {"MLmodel": MLMODEL, "weights.bin": b"\0" * 1024})
    assert created.status == "READY"
    record = scan_store.get(world.engine, VersionKey("default", "clean", 1))
    assert record is not None and record.verdict is not None and record.verdict.value == "clean"
    assert not record.blocked and record.report is not None
    assert sorted(stored.path for stored in record.report.files) == ["MLmodel", "weights.bin"]
    read_back = world.store.get_model_version("clean", "1")
    assert read_back.tags["hokusai_scan_verdict"] == "clean"
    assert (created.status, created.status_message, created.tags) == (  # answered without a read-back
        read_back.status,
        read_back.status_message,
        read_back.tags,
    )


def test_an_unsafe_model_fails_registration_naming_the_file_and_the_call(world: World) -> None:
    created = world.create(world.service(), "bad", {"MLmodel": MLMODEL, "model/python_model.pkl": OS_SYSTEM})
    assert created.status == "FAILED_REGISTRATION"
    assert "model/python_model.pkl" in created.status_message and "os.system" in created.status_message
    tags = world.store.get_model_version("bad", "1").tags
    assert tags["hokusai_scan_verdict"] == "unsafe" and "os.system" in tags["hokusai_scan_findings"]
    with pytest.raises(ModelQuarantined, match=r"os\.system"):
        Quarantine(world.engine).check_version("bad", 1)


def test_under_warn_an_unsafe_model_is_served_with_its_verdict(world: World) -> None:
    created = world.create(world.service("warn"), "warned", {"model.pkl": OS_SYSTEM})
    assert created.status == "READY" and "os.system" in created.status_message
    Quarantine(world.engine).check_version("warned", 1)  # not blocked
    assert world.store.get_model_version("warned", "1").tags["hokusai_scan_verdict"] == "unsafe"


def test_under_off_versions_start_ready_and_nothing_is_recorded(world: World) -> None:
    created = world.create(world.service("off"), "plain", {"model.pkl": OS_SYSTEM})
    assert created.status == "READY"
    assert scan_store.get(world.engine, VersionKey("default", "plain", 1)) is None


def test_a_prompt_version_is_not_scanned(world: World) -> None:
    from mlflow.entities.model_registry import ModelVersionTag
    from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

    world.service()
    world.store.create_registered_model("prompt")
    created = world.store.create_model_version(
        "prompt", "dummy-source", tags=[ModelVersionTag(IS_PROMPT_TAG_KEY, "true")]
    )
    assert created.status == "READY"
    assert scan_store.get(world.engine, VersionKey("default", "prompt", 1)) is None


def test_a_large_model_is_scanned_in_the_background(world: World) -> None:
    service = world.service(inline_max_bytes=10)
    created = world.create(service, "large", {"model.pkl": OS_SYSTEM, "weights.bin": b"\0" * 4096})
    assert created.status == "PENDING_REGISTRATION"
    wait_for(lambda: world.status("large")[0] != "PENDING_REGISTRATION")
    assert world.status("large")[0] == "FAILED_REGISTRATION"
    service.stop()


def expire_lease(world: World, key: VersionKey) -> None:
    with world.engine.begin() as conn:
        conn.execute(
            scan_store.scans.update()
            .where(key.where())
            .values(lease_until=scan_store.now() - dt.timedelta(seconds=1))
        )


def test_a_scan_whose_worker_died_is_taken_over_and_gets_one_verdict(world: World) -> None:
    dead = world.service(inline_max_bytes=10)
    dead.stop()  # its pool takes no more work: the background scan never runs, as if the worker died
    world.create(dead, "orphan", {"model.pkl": OS_SYSTEM, "weights.bin": b"\0" * 4096})
    key = VersionKey("default", "orphan", 1)
    survivor = world.service()
    assert survivor.sweep_once() == 0  # the dead worker's lease is still live
    expire_lease(world, key)
    assert survivor.sweep_once() == 1
    wait_for(lambda: world.status("orphan")[0] == "FAILED_REGISTRATION")
    record = scan_store.get(world.engine, key)
    assert record is not None and record.attempts == 2
    # the dead worker, coming back with its old verdict, cannot overwrite the recorded one
    assert record.report is not None
    outcome = scan_store.Outcome("READY", None, blocked=False)
    assert not scan_store.finish(world.engine, key, dead.owner, record.report, outcome)
    assert world.status("orphan")[0] == "FAILED_REGISTRATION"
    survivor.stop()


def test_an_inline_scan_that_lost_its_lease_answers_the_verdict_recorded(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep took the scan over and recorded first: create answers that verdict, read back."""
    service = world.service()
    scan = service._report
    key = VersionKey("default", "overtaken", 1)

    def overtaken(record: Any, files: Any, background: bool) -> Any:
        report = scan(record, files, background)  # clean, by this worker
        expire_lease(world, key)
        assert scan_store.claim(world.engine, key, "another-worker", scan_store_lease())
        refused = scan_store.Outcome("FAILED_REGISTRATION", "another worker's verdict", blocked=True)
        assert scan_store.finish(world.engine, key, "another-worker", report, refused)
        return report

    monkeypatch.setattr(service, "_report", overtaken)
    created = world.create(service, "overtaken", {"MLmodel": MLMODEL})
    assert (created.status, created.status_message) == ("FAILED_REGISTRATION", "another worker's verdict")
    assert world.status("overtaken") == (created.status, created.status_message)


def test_only_the_leaseholder_records_a_verdict(world: World) -> None:
    first = world.service(inline_max_bytes=10)
    first.stop()
    world.create(first, "raced", {"model.pkl": b"not a pickle at all, just text\n"})
    key = VersionKey("default", "raced", 1)
    second = world.service()  # on the same database: another worker
    assert not scan_store.claim(world.engine, key, second.owner, scan_store_lease())
    assert scan_store.claim(world.engine, key, first.owner, scan_store_lease())  # its own lease, renewed


def test_a_scan_longer_than_its_lease_keeps_it_and_records_its_verdict(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease is renewed while the scan runs, so no other worker takes a live scan over."""
    monkeypatch.setattr(scan_service, "LEASE", dt.timedelta(seconds=2.4))  # renewed every 0.8 s
    other, service = world.service(), world.service()  # the last one made is the one MLflow calls
    scan, key, attempts = service._report, VersionKey("default", "slow", 1), []

    def slow(record: Any, files: Any, background: bool) -> Any:
        deadline = time.monotonic() + 6  # two and a half leases
        while time.monotonic() < deadline:
            attempts.append(scan_store.claim(world.engine, key, other.owner, scan_service.LEASE))
            time.sleep(0.1)
        return scan(record, files, background)

    monkeypatch.setattr(service, "_report", slow)
    created = world.create(service, "slow", {"MLmodel": MLMODEL})
    assert created.status == "READY"
    assert len(attempts) > 40 and not any(attempts)
    assert not service._held
    service.stop()
    other.stop()


def test_one_statement_renews_the_leases_a_worker_holds_and_no_others(world: World) -> None:
    first = world.service(inline_max_bytes=10)  # large to both: left pending, leased to their worker
    first.stop()
    for name in ("a", "b"):
        world.create(first, name, {"model.pkl": OS_SYSTEM, "weights.bin": b"\0" * 64})
    second = world.service(inline_max_bytes=10)
    second.stop()
    world.create(second, "c", {"model.pkl": OS_SYSTEM, "weights.bin": b"\0" * 64})
    keys = [VersionKey("default", name, 1) for name in ("a", "b", "c")]
    for key in keys:
        expire_lease(world, key)
    assert scan_store.extend(world.engine, keys, first.owner, scan_store_lease()) == 2
    assert scan_store.extend(world.engine, [], first.owner, scan_store_lease()) == 0
    taken = [scan_store.claim(world.engine, key, "a-third-worker", scan_store_lease()) for key in keys]
    assert taken == [False, False, True]  # first's two renewed; second's ran out and is taken


def scan_store_lease() -> dt.timedelta:
    return dt.timedelta(seconds=30)


def test_release_serves_a_quarantined_version_and_rescan_takes_it_back(world: World) -> None:
    service = world.service()
    world.create(service, "bad", {"model.pkl": OS_SYSTEM})
    key = VersionKey("default", "bad", 1)
    released = scan_store.release(world.engine, key, "cli:ops", "reviewed: a test fixture")
    assert not released.blocked and released.released_by == "cli:ops"
    assert world.status("bad") == ("READY", "released by cli:ops: reviewed: a test fixture")
    Quarantine(world.engine).check_version("bad", 1)

    scan_store.rescan(world.engine, [key], blocked=True)
    assert world.status("bad")[0] == "PENDING_REGISTRATION"
    with pytest.raises(ModelQuarantined, match="not been scanned yet"):
        Quarantine(world.engine).check_version("bad", 1)
    assert service.sweep_once() == 1
    wait_for(lambda: world.status("bad")[0] == "FAILED_REGISTRATION")
    service.stop()


def test_a_pending_version_cannot_be_released(world: World) -> None:
    service = world.service(inline_max_bytes=10)
    service.stop()
    world.create(service, "waiting", {"model.pkl": OS_SYSTEM, "weights.bin": b"\0" * 64})
    with pytest.raises(LookupError, match="still being scanned"):
        scan_store.release(world.engine, VersionKey("default", "waiting", 1), "cli:ops", "impatient")


def test_reserved_tags_are_refused_to_every_client(world: World) -> None:
    from mlflow.entities.model_registry import ModelVersionTag
    from mlflow.exceptions import MlflowException

    service = world.service()
    world.create(service, "clean", {"MLmodel": MLMODEL})
    store = RegistryStore(world.store, service, Quarantine(world.engine))
    for attempt in (
        lambda: store.set_model_version_tag("clean", "1", ModelVersionTag("hokusai_scan_verdict", "clean")),
        lambda: store.delete_model_version_tag("clean", "1", "hokusai_scan_verdict"),
    ):
        with pytest.raises(MlflowException, match="hokusai_scan_") as refused:
            attempt()
        assert refused.value.get_http_status_code() == 403
    assert world.store.get_model_version("clean", "1").tags["hokusai_scan_verdict"] == "clean"
    # a new version sent with scan tags (the stock client's copy_model_version copies them): dropped
    forged = [ModelVersionTag("hokusai_scan_verdict", "clean"), ModelVersionTag("own", "kept")]
    copied = store.create_model_version(
        name="clean", source=world.model({"model.pkl": OS_SYSTEM}), tags=forged
    )
    tags = world.store.get_model_version("clean", copied.version).tags
    assert copied.status == "FAILED_REGISTRATION" and tags["hokusai_scan_verdict"] == "unsafe"
    assert tags["own"] == "kept"


def test_a_model_deleted_and_made_again_gets_new_versions(world: World) -> None:
    service = world.service()
    world.create(service, "again", {"model.pkl": OS_SYSTEM})
    world.store.delete_registered_model("again")
    assert world.create(service, "again", {"MLmodel": MLMODEL}).status == "READY"


def test_a_renamed_model_stays_quarantined(world: World) -> None:
    service = world.service()
    world.create(service, "old", {"model.pkl": OS_SYSTEM})
    RegistryStore(world.store, service, Quarantine(world.engine)).rename_registered_model("old", "new")
    with pytest.raises(ModelQuarantined):
        Quarantine(world.engine).check_version("new", 1)


@pytest.mark.parametrize("source", ["file:///srv/mlruns/1/models/m-1/artifacts", "s3://elsewhere/m"])
def test_under_block_files_the_server_does_not_serve_are_refused_and_nothing_is_written(
    world: World, source: str
) -> None:
    from mlflow.exceptions import MlflowException

    service = world.service()
    world.store.create_registered_model("outside")
    store = RegistryStore(world.store, service, Quarantine(world.engine))
    with pytest.raises(MlflowException, match="mlflow-artifacts") as refused:
        store.create_model_version(name="outside", source=source)
    assert refused.value.get_http_status_code() == 400
    assert world.store.search_model_versions("name='outside'") == []
    assert scan_store.versions_of(world.engine, "outside") == []
    warn = world.service("warn")  # under warn nothing is blocked, so any store may hold the files
    served = RegistryStore(world.store, warn, Quarantine(world.engine)).create_model_version(
        name="outside", source=source
    )
    assert served.status == "READY" and "cannot be scanned" in served.status_message


def test_a_version_without_files_is_no_clean_version(world: World) -> None:
    service = world.service()
    world.store.create_registered_model("empty")
    store = RegistryStore(world.store, service, Quarantine(world.engine))
    created = store.create_model_version(name="empty", source="mlflow-artifacts:/1/nothing/here")
    assert created.status == "FAILED_REGISTRATION" and "no files" in created.status_message


def test_the_path_gate_covers_files_under_and_directories_above_a_blocked_version(world: World) -> None:
    world.create(world.service(), "bad", {"model.pkl": OS_SYSTEM})  # files at 1/models/m-1/artifacts
    gate = Quarantine(world.engine)
    spellings = (
        "1/./models/m-1/artifacts/model.pkl",
        "1//models/m-1/artifacts/",
        "/1/models/x/../m-1/artifacts",
    )
    for refused in (
        "1/models/m-1/artifacts/model.pkl",
        "1/models/m-1/artifacts",
        "1/models",
        "1",
        *spellings,
    ):
        with pytest.raises(ModelQuarantined):
            gate.check_path(refused)
    for allowed in ("1/models/m-10/artifacts/model.pkl", "1/models/m-1/artifactsX/y", "2/models/m-1"):
        gate.check_path(allowed)


def test_a_scanned_versions_files_cannot_be_rewritten(world: World) -> None:
    from hokusai_registry.server.quarantine import FilesImmutable

    world.create(world.service(), "clean", {"MLmodel": MLMODEL})  # files at 1/models/m-1/artifacts
    gate = Quarantine(world.engine)
    for refused in ("1/models/m-1/artifacts/python_model.pkl", "1/./models/m-1/artifacts", "1/models"):
        with pytest.raises(FilesImmutable) as raised:
            gate.check_write(refused)
        assert raised.value.get_http_status_code() == 403
    gate.check_write("1/models/m-2/artifacts/model.pkl")  # another logged model's files
    # once the version is deleted its files may be cleaned up (verify deletes what it made)
    RegistryStore(world.store, world.service(), gate).delete_model_version("clean", "1")
    gate.check_write("1/models/m-1/artifacts/MLmodel")


def test_a_deleted_quarantined_version_stays_blocked(world: World) -> None:
    service = world.service()
    world.create(service, "bad", {"model.pkl": OS_SYSTEM})
    RegistryStore(world.store, service, Quarantine(world.engine)).delete_registered_model("bad")
    with pytest.raises(ModelQuarantined):
        Quarantine(world.engine).check_path("1/models/m-1/artifacts/model.pkl")
    assert service.sweep_once() == 0


def test_like_wildcards_in_a_path_match_only_themselves(world: World) -> None:
    with world.engine.begin() as conn:
        scan_store.insert_pending(conn, VersionKey("default", "w", 1), "x", "axb/c", blocked=True)
    gate = Quarantine(world.engine)
    with pytest.raises(ModelQuarantined):
        gate.check_path("axb")
    gate.check_path("a_b")  # "_" is no wildcard here
    gate.check_path("a%")


def test_a_version_made_from_one_file_scans_that_file(world: World) -> None:
    from hokusai_registry.scanning.sources import ModelFiles, StoredFile

    source = world.model({"notes.txt": b"owner's bytes"})
    files = ModelFiles(str(world.artifacts), source.removeprefix("mlflow-artifacts:/") + "/notes.txt")
    assert files.listing() == [StoredFile("notes.txt", 13)]
    assert [path.read_bytes() for _, path in files.open_each()] == [b"owner's bytes"]
    store = RegistryStore(world.store, world.service(), Quarantine(world.engine))
    world.store.create_registered_model("single")
    assert store.create_model_version(name="single", source=f"{source}/notes.txt").status == "READY"


def test_a_sweep_while_the_database_is_away_logs_one_line_and_no_traceback(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    service = world.service()

    def database_down() -> int:
        service._stop.set()  # one round only
        raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    service.sweep_once = database_down  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="hokusai_registry.server.scan_service"):
        service._sweep_forever(0.001)
    (line,) = [r for r in caplog.records if r.name == "hokusai_registry.server.scan_service"]
    assert line.levelname == "WARNING" and "database unreachable" in line.getMessage()
    assert line.exc_info is None


@pytest.mark.parametrize("leased", [True, False])
def test_the_pending_row_inserted_is_the_row_read_back(world: World, leased: bool) -> None:
    """An inline scan starts from what ``insert_pending`` returns instead of reading the row again."""
    key = VersionKey("default", "returned", 3)
    with world.engine.begin() as conn:
        inserted = scan_store.insert_pending(
            conn,
            key,
            "runs:/r/model",
            None,
            blocked=True,
            leased_to=("w1", dt.timedelta(seconds=30)) if leased else None,
        )
    stored = scan_store.get(world.engine, key)
    assert stored is not None
    naive = dataclasses.replace(inserted, created_at=inserted.created_at.replace(tzinfo=None))
    assert dataclasses.replace(stored, created_at=stored.created_at.replace(tzinfo=None)) == naive
