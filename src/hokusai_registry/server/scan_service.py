"""Every new model version is scanned once, off the event loop, and its verdict set as its MLflow status.

A new version is inserted ``PENDING_REGISTRATION`` with its pending scan row (scan_store.py). Right after
MLflow creates it, still in the ``create_model_version`` request (a Flask thread, never the event
loop), a small model (``scan_inline_max_bytes``, the common case) is scanned there, so the response
already says ``READY`` or ``FAILED_REGISTRATION`` and the stock client never waits its 3 s poll. A larger
one goes to this worker's background pool (``scan_concurrency`` scanner processes at the lowest
CPU priority, so reads keep their latency while it runs). Whoever scans holds a lease on
the row and renews it; if the worker dies, the lease runs out and any worker's sweep (every
``SWEEP_SECONDS``) takes the scan over, so every version gets its one verdict within a minute.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.prompt.constants import IS_PROMPT_TAG_KEY

from hokusai_registry.scanning.engine import scan_files
from hokusai_registry.scanning.report import Finding, ScanReport, Verdict
from hokusai_registry.scanning.sources import ModelFiles, artifact_prefix
from hokusai_registry.server import outages, scan_store
from hokusai_registry.server.metrics import SCANS
from hokusai_registry.server.mlflow_adapter import NewModelVersion
from hokusai_registry.server.scan_store import Recorded, ScanRecord, VersionKey
from hokusai_registry.settings import SERVED_ARTIFACT_ROOT

log = logging.getLogger(__name__)

Policy = Literal["block", "warn", "off"]
LEASE = dt.timedelta(seconds=30)
SWEEP_SECONDS = 10.0


def outcome_for(report: ScanReport, policy: Policy) -> scan_store.Outcome:
    """Under ``block`` only a clean model is served; under ``warn`` every model is, its verdict tagged."""
    clean = report.verdict is Verdict.CLEAN
    if policy == "block" and not clean:
        message = f"quarantined by hokusai-registry's model scan: {report.summary()}"
        return scan_store.Outcome(scan_store.FAILED_REGISTRATION, message, blocked=True)
    return scan_store.Outcome(
        scan_store.READY, None if clean else f"scan warning: {report.summary()}", blocked=False
    )


RecordedElsewhere = Literal["recorded elsewhere"]
RECORDED_ELSEWHERE: RecordedElsewhere = "recorded elsewhere"  # read the version back for its verdict


class ScannerProcess:
    """One ``hokusai_registry.scanning.worker`` process, started when first needed, restarted if it died."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None

    def scan(self, files: ModelFiles) -> ScanReport:
        if self._proc is None or self._proc.poll() is not None:
            command = [sys.executable, "-m", "hokusai_registry.scanning.worker"]
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request = uuid.uuid4().hex
        try:
            self._proc.stdin.write(
                json.dumps({"id": request, "destination": files.destination, "prefix": files.prefix}) + "\n"
            )
            self._proc.stdin.flush()
            answer = json.loads(self._proc.stdout.readline() or "null")
        except (OSError, ValueError):
            answer = None
        if not isinstance(answer, dict) or answer.get("id") != request:  # died, or out of step
            self.stop()
            raise ScannerDied("the scanner process died or answered out of turn (out of memory, killed?)")
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return ScanReport.from_json(answer["report"])

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


class ScannerDied(RuntimeError):
    pass


class ScanService:
    def __init__(
        self,
        engine: sa.Engine,
        artifacts_uri: str,
        policy: Policy,
        inline_max_bytes: int,
        concurrency: int,
        resolve_run_location: Callable[[str], str | None] = lambda _: None,
    ) -> None:
        self.engine = engine
        self.artifacts_uri = artifacts_uri
        self.policy = policy
        self.inline_max_bytes = inline_max_bytes
        self.resolve_run_location = resolve_run_location
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="hokusai-scan")
        self._scanners: queue.SimpleQueue[ScannerProcess] = queue.SimpleQueue()
        for _ in range(concurrency):
            self._scanners.put(ScannerProcess())
        self._inserted = threading.local()
        self._lock = threading.Lock()
        self._in_flight: set[VersionKey] = set()  # queued or running background scans
        self._held: Counter[VersionKey] = Counter()  # scans running now (how many), leases renewed
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # --- called by MLflow's create_model_version (mlflow_adapter.on_model_version_insert) ------------

    def on_insert(self, conn: sa.Connection, row: NewModelVersion) -> str | None:
        if self.policy == "off" or row.tags.get(IS_PROMPT_TAG_KEY) == "true":  # a prompt has no files
            return None
        key = VersionKey(row.workspace, row.name, row.version)
        if self.policy == "block":
            self._refuse_unserved(row.storage_location)
        prefix = artifact_prefix(row.storage_location, self.artifacts_uri)
        # Leased to this worker from the start: the same thread scans it as soon as MLflow returns.
        self._inserted.record = scan_store.insert_pending(
            conn,
            key,
            row.storage_location,
            prefix,
            blocked=self.policy == "block",
            leased_to=(self.owner, LEASE),
        )
        return scan_store.PENDING_REGISTRATION

    def _refuse_unserved(self, storage_location: str) -> None:
        """Under ``block`` a version's files must be ones this server serves (``mlflow-artifacts:/``):
        only those reads go through the guarded repository. A run or logged model in an experiment
        with an explicit ``file://`` or ``s3://`` location is served from a repository MLflow builds
        per request, which no quarantine could stop."""
        location = storage_location
        if location.startswith("runs:"):
            location = self.resolve_run_location(location) or location
        if not location.startswith(SERVED_ARTIFACT_ROOT.rstrip("/")):
            raise MlflowException.invalid_parameter_value(
                f"this registry scans and serves model files it stores itself (mlflow-artifacts:/), but "
                f"this version's files are at {location}: log the model in an experiment with the "
                "default artifact location and register it from there"
            )

    def before_create(self) -> None:
        self._inserted.record = None  # whatever an earlier, failed create on this thread left

    def after_create(self) -> Recorded | RecordedElsewhere | None:
        """Scan the version this thread just inserted (its row as inserted, committed with the version):
        what its verdict wrote to it when this request recorded one (scanned inline),
        ``RECORDED_ELSEWHERE`` when it scanned inline but another worker recorded the verdict first,
        else None (its scan goes on in the background)."""
        record: ScanRecord | None = getattr(self._inserted, "record", None)
        self._inserted.record = None
        if record is None:
            return None
        try:
            files = self._files(record)
            large = (
                files is not None and sum(stored.size for stored in files.listing()) > self.inline_max_bytes
            )
        except Exception:  # the store is away: the version exists, so its scan goes to the background
            log.exception("could not list the files of %s; scanning it in the background", record.key)
            large = True
        if large:
            self._submit(record)
            return None
        return self._scan_claimed(record, files, background=False) or RECORDED_ELSEWHERE

    # --- scanning ---------------------------------------------------------------------------------

    def _files(self, record: ScanRecord) -> ModelFiles | None:
        """Where the version's files are; a ``runs:/`` source is resolved (and remembered) first."""
        prefix = record.artifact_prefix
        if prefix is None and record.storage_location.startswith("runs:"):
            location = self.resolve_run_location(record.storage_location)
            prefix = artifact_prefix(location, self.artifacts_uri) if location else None
            if prefix is not None:
                scan_store.set_prefix(self.engine, record.key, prefix)
        return ModelFiles(self.artifacts_uri, prefix) if prefix is not None else None

    def _submit(self, record: ScanRecord) -> None:
        with self._lock:
            if record.key in self._in_flight:
                return
            self._in_flight.add(record.key)
        try:
            self._pool.submit(self._scan_queued, record)
        except RuntimeError:  # shutting down: the lease runs out and another worker's sweep takes it
            log.warning("not scanning %s: this worker is stopping", record.key)
            self._in_flight.discard(record.key)

    def _scan_queued(self, record: ScanRecord) -> None:
        """A background scan, once a pool thread is free: its lease may have run out while it queued."""
        try:
            if scan_store.claim(self.engine, record.key, self.owner, LEASE):
                self._scan_claimed(record, self._files(record), background=True)
        except Exception:
            log.exception("background scan of %s failed; a sweep will try again", record.key)
        finally:
            with self._lock:
                self._in_flight.discard(record.key)

    def _scan_claimed(
        self, record: ScanRecord, files: ModelFiles | None, *, background: bool
    ) -> Recorded | None:
        key = record.key
        self._hold(key)
        try:
            report = self._report(record, files, background)
        finally:
            with self._lock:
                self._held[key] -= 1
                if self._held[key] <= 0:
                    del self._held[key]
        outcome = outcome_for(report, self.policy)
        if not scan_store.finish(self.engine, key, self.owner, report, outcome):
            log.warning("scan of %s finished, but another worker recorded its verdict first", key)
            return None
        SCANS.labels(report.verdict.value).inc()
        log.info("scanned %s: %s", key, report.summary())
        return Recorded(outcome.status, outcome.message, scan_store.verdict_tags(report))

    def _report(self, record: ScanRecord, files: ModelFiles | None, background: bool) -> ScanReport:
        if files is None:
            detail = (
                f"its files ({record.storage_location}) are not in this registry's artifact store, "
                "so they cannot be scanned"
            )
            return ScanReport("hokusai-registry", [], [Finding(".", Verdict.ERROR, detail)])
        try:
            if not files.listing():
                detail = f"no files at {record.storage_location}: nothing was scanned"
                return ScanReport("hokusai-registry", [], [Finding(".", Verdict.ERROR, detail)])
            if not background:  # small: here, in the request's thread
                report: ScanReport = scan_files(files.open_each())
                return report
            scanner = self._scanners.get()
            try:
                return scanner.scan(files)
            finally:
                self._scanners.put(scanner)
        except Exception as error:  # a scanner bug or a storage error: never a clean verdict
            log.exception("scan of %s failed", record.key)
            return ScanReport("hokusai-registry", [], [Finding(".", Verdict.ERROR, f"scan failed: {error}")])

    def _hold(self, key: VersionKey) -> None:
        """Keep the lease on ``key`` while its scan runs: one thread renews them all, none per scan."""
        with self._lock:
            self._held[key] += 1
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep_leases, daemon=True, name="hokusai-leases")
                self._keeper.start()

    def _keep_leases(self) -> None:
        """Renew every held lease a third of a lease apart, so none held runs below two thirds. Ends
        with ``stop``: a scan still running then loses its lease, and a sweep elsewhere takes it over."""
        while not self._stop.wait(LEASE.total_seconds() / 3):
            with self._lock:
                held = list(self._held)
            try:  # one statement for all: a slow database delays every renewal once, not once each
                scan_store.extend(self.engine, held, self.owner, LEASE)
            except Exception as error:  # the database is away: try again next time
                log.warning("could not renew %d scan leases: %s", len(held), outages.describe(error))

    # --- recovery -------------------------------------------------------------------------------------

    def start_sweeping(self, interval: float = SWEEP_SECONDS) -> None:
        if self.policy == "off" or self._sweeper is not None:
            return
        self._sweeper = threading.Thread(target=self._sweep_forever, args=(interval,), daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        while not self._scanners.empty():
            self._scanners.get().stop()

    def sweep_once(self) -> int:
        """Take over the scans whose worker died, and those nobody took yet (rescans)."""
        taken = 0
        for key in scan_store.claimable(self.engine):
            record = scan_store.get(self.engine, key)
            if record is not None and key not in self._in_flight:
                self._submit(record)
                taken += 1
        return taken

    def _sweep_forever(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sweep_once()
            except Exception as error:
                what = outages.dependency(error)
                if what is None:
                    log.exception("scan sweep failed")
                else:  # the database is away: one line, not a traceback per worker; try again next interval
                    log.warning("scan sweep skipped: %s unreachable (%s)", what, outages.describe(error))
