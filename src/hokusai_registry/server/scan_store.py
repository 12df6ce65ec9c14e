"""The scan table (in the registry database, beside MLflow's model versions): one row per version.

A row is written in the same transaction as its model version (mlflow_adapter.on_model_version_insert),
so a version is never visible without one. Its life:

    pending ──claim──> pending, leased to one worker ──finish──> done (verdict, report)
        ^                       │ lease runs out (the worker died)          │
        └────────── any worker's sweep claims it again ──────────────────────┘ rescan

``finish`` only writes where the row is still pending and leased to the caller, in one transaction
with the version's status, so each version gets exactly one final verdict, whichever replica scanned.
``blocked`` is what the download gate reads: true from insert until a clean verdict or a release.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from hokusai_registry.scanning.report import ScanReport, Verdict
from hokusai_registry.server import database, mlflow_adapter

metadata = sa.MetaData()

scans = sa.Table(
    "hokusai_scans",
    metadata,
    sa.Column("workspace", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("storage_location", sa.String(500), nullable=False),
    # The version's files as a path under the artifact destination; None until resolved (runs:/ sources).
    sa.Column("artifact_prefix", sa.String(1000), index=True),
    sa.Column("state", sa.String(16), nullable=False),  # pending | done
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("verdict", sa.String(16)),
    sa.Column("summary", sa.String(500)),
    sa.Column("report", sa.Text),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("released_by", sa.String(255)),
    sa.Column("released_reason", sa.Text),
    sa.Index("hokusai_scans_pending", "state", "lease_until"),
)

PENDING, DONE, DELETED = "pending", "done", "deleted"  # deleted: its version is gone
READY, PENDING_REGISTRATION, FAILED_REGISTRATION = "READY", "PENDING_REGISTRATION", "FAILED_REGISTRATION"
TAG_PREFIX = "hokusai_scan_"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class VersionKey:
    workspace: str
    name: str
    version: int

    def where(self) -> sa.ColumnElement[bool]:
        return (
            (scans.c.workspace == self.workspace)
            & (scans.c.name == self.name)
            & (scans.c.version == self.version)
        )

    def __str__(self) -> str:
        return f"{self.name} version {self.version}"


@dataclass(frozen=True)
class ScanRecord:
    key: VersionKey
    storage_location: str
    artifact_prefix: str | None
    state: str
    blocked: bool
    verdict: Verdict | None
    summary: str | None
    report: ScanReport | None
    attempts: int
    created_at: dt.datetime
    finished_at: dt.datetime | None
    released_by: str | None
    released_reason: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.key.name,
            "version": self.key.version,
            "state": self.state,
            "verdict": self.verdict.value if self.verdict else None,
            "blocked": self.blocked,
            "summary": self.summary,
            "scanner": self.report.scanner if self.report else None,
            "findings": [asdict(finding) for finding in self.report.findings] if self.report else [],
            "manifest": [asdict(stored) for stored in self.report.files] if self.report else [],
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "released_by": self.released_by,
            "released_reason": self.released_reason,
        }

    @classmethod
    def from_row(cls, row: sa.Row[tuple[object, ...]]) -> ScanRecord:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, data: Mapping[Any, Any]) -> ScanRecord:
        return cls(
            key=VersionKey(data["workspace"], data["name"], data["version"]),
            storage_location=data["storage_location"],
            artifact_prefix=data["artifact_prefix"],
            state=data["state"],
            blocked=bool(data["blocked"]),
            verdict=Verdict(data["verdict"]) if data["verdict"] else None,
            summary=data["summary"],
            report=ScanReport.from_json(data["report"]) if data["report"] else None,
            attempts=data["attempts"],
            created_at=data["created_at"],
            finished_at=data["finished_at"],
            released_by=data["released_by"],
            released_reason=data["released_reason"],
        )


# On PostgreSQL the prefix index above follows the database's collation, in which "under a/b/" is no
# range; a byte-ordered one serves the quarantine's "files under this directory" (see _at_or_around).
PREFIX_BYTES_INDEX = (
    'CREATE INDEX IF NOT EXISTS hokusai_scans_prefix_bytes ON hokusai_scans (artifact_prefix COLLATE "C")'
)


def create_tables(engine: sa.Engine) -> None:
    metadata.create_all(engine)
    if engine.dialect.name == "postgresql":  # also on a table made before the index existed
        with engine.begin() as conn:
            conn.execute(sa.text(PREFIX_BYTES_INDEX))


def insert_pending(
    conn: sa.Connection,
    key: VersionKey,
    storage_location: str,
    prefix: str | None,
    *,
    blocked: bool,
    leased_to: tuple[str, dt.timedelta] | None = None,
) -> ScanRecord:
    """Insert ``key``'s pending scan row (in the version's own inserting transaction); the row as
    inserted, so the scan that follows in the same request need not read it back."""
    owner, lease = leased_to if leased_to else (None, None)
    at = now()
    # A row left by a deleted model of the same name and number gives way to the new version.
    conn.execute(scans.delete().where(key.where()))
    conn.execute(
        scans.insert().values(
            workspace=key.workspace,
            name=key.name,
            version=key.version,
            storage_location=storage_location,
            artifact_prefix=prefix,
            state=PENDING,
            blocked=blocked,
            lease_owner=owner,
            lease_until=at + lease if lease else None,
            attempts=1 if owner else 0,
            created_at=at,
        )
    )
    return ScanRecord(
        key=key,
        storage_location=storage_location,
        artifact_prefix=prefix,
        state=PENDING,
        blocked=blocked,
        verdict=None,
        summary=None,
        report=None,
        attempts=1 if owner else 0,
        created_at=at,
        finished_at=None,
        released_by=None,
        released_reason=None,
    )


def mark_deleted(engine: sa.Engine, workspace: str, name: str, version: int | None = None) -> None:
    """The version (or every version of the model) is gone: its files may be cleaned up now, but a
    blocked one stays blocked (deleting a quarantined version does not release its files)."""
    where = (scans.c.workspace == workspace) & (scans.c.name == name)
    if version is not None:
        where &= scans.c.version == version
    with engine.begin() as conn:
        conn.execute(scans.update().where(where).values(state=DELETED, lease_owner=None, lease_until=None))


def rename(engine: sa.Engine, workspace: str, old: str, new: str) -> None:
    """Follow a registered model's rename, so its versions stay quarantined under the new name."""
    with engine.begin() as conn:
        conn.execute(
            scans.update().where((scans.c.workspace == workspace) & (scans.c.name == old)).values(name=new)
        )


def set_prefix(engine: sa.Engine, key: VersionKey, prefix: str) -> None:
    with engine.begin() as conn:
        conn.execute(scans.update().where(key.where()).values(artifact_prefix=prefix))


def get(engine: sa.Engine, key: VersionKey) -> ScanRecord | None:
    with engine.connect() as conn:
        row = conn.execute(scans.select().where(key.where())).first()
    return ScanRecord.from_row(row) if row else None


def versions_of(engine: sa.Engine, name: str) -> list[VersionKey]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(scans.c.workspace, scans.c.name, scans.c.version)
            .where(scans.c.name == name)
            .order_by(scans.c.version)
        ).all()
    return [VersionKey(*row) for row in rows]


def claim(engine: sa.Engine, key: VersionKey, owner: str, lease: dt.timedelta) -> bool:
    """Take the scan of ``key`` if it is pending and nobody holds a live lease on it."""
    at = now()
    with engine.begin() as conn:
        taken = conn.execute(
            scans.update()
            .where(key.where() & (scans.c.state == PENDING))
            .where(
                (scans.c.lease_until.is_(None)) | (scans.c.lease_until < at) | (scans.c.lease_owner == owner)
            )
            .values(
                lease_owner=owner,
                lease_until=at + lease,
                # a worker renewing its own lease is the same attempt; another worker's is a new one
                attempts=scans.c.attempts + sa.case((scans.c.lease_owner == owner, 0), else_=1),
            )
        ).rowcount
    return bool(taken)


def extend(engine: sa.Engine, keys: list[VersionKey], owner: str, lease: dt.timedelta) -> int:
    """Renew ``owner``'s leases on ``keys`` in one statement; how many it still held (a scan taken
    over by another worker, or already finished, is left alone)."""
    if not keys:
        return 0
    with engine.begin() as conn:
        kept: int = conn.execute(
            scans.update()
            .where(sa.or_(*(key.where() for key in keys)))
            .where((scans.c.state == PENDING) & (scans.c.lease_owner == owner))
            .values(lease_until=now() + lease)
        ).rowcount
    return kept


def claimable(engine: sa.Engine, limit: int = 20) -> list[VersionKey]:
    """Pending scans whose lease ran out (their worker died) or that nobody took yet."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(scans.c.workspace, scans.c.name, scans.c.version)
            .where(
                (scans.c.state == PENDING) & ((scans.c.lease_until.is_(None)) | (scans.c.lease_until < now()))
            )
            .order_by(scans.c.created_at)
            .limit(limit)
        ).all()
    return [VersionKey(*row) for row in rows]


@dataclass(frozen=True)
class Outcome:
    """What a verdict does to the version under the operator's policy."""

    status: str
    message: str | None
    blocked: bool


@dataclass(frozen=True)
class Recorded:
    """What a recorded verdict wrote to its version: its status, status message and tags."""

    status: str
    message: str | None
    tags: dict[str, str]


def finish(engine: sa.Engine, key: VersionKey, owner: str, report: ScanReport, outcome: Outcome) -> bool:
    """Record the verdict and set the version's status, once: False if another worker got there first."""
    tags = verdict_tags(report)
    params = {
        "key_workspace": key.workspace,
        "key_name": key.name,
        "key_version": key.version,
        "owner": owner,
        "verdict_blocked": outcome.blocked,
        "verdict": report.verdict.value,
        "verdict_summary": report.summary(),
        "verdict_report": report.to_json(),
        "verdict_at": now(),
    }
    if engine.dialect.name == "postgresql":  # one statement, in autocommit: one round trip
        params |= mlflow_adapter.model_version_outcome_params(outcome.status, outcome.message, tags)
        with database.single_statement_engine(engine, "rows").connect() as conn:
            return bool(conn.execute(_finish_in_one_statement(), params).scalar_one())
    with engine.begin() as conn:
        if not conn.execute(_record_verdict(), params).rowcount:
            return False
        mlflow_adapter.set_model_version_outcome(
            conn, key.workspace, key.name, key.version, outcome.status, outcome.message, tags
        )
    return True


@functools.cache
def _record_verdict() -> sa.Update:
    """The scan row's verdict, where it is still pending and leased to the caller (built once)."""
    key = (
        (scans.c.workspace == sa.bindparam("key_workspace"))
        & (scans.c.name == sa.bindparam("key_name"))
        & (scans.c.version == sa.bindparam("key_version"))
    )
    return (
        scans.update()
        .where(key & (scans.c.state == PENDING) & (scans.c.lease_owner == sa.bindparam("owner")))
        .values(
            state=DONE,
            blocked=sa.bindparam("verdict_blocked"),
            verdict=sa.bindparam("verdict"),
            summary=sa.bindparam("verdict_summary"),
            report=sa.bindparam("verdict_report"),
            finished_at=sa.bindparam("verdict_at"),
            lease_owner=None,
            lease_until=None,
        )
    )


@functools.cache
def _finish_in_one_statement() -> sa.Select[Any]:
    """PostgreSQL's finish: the verdict's update returns the version it recorded, and the version's
    status and tags follow in the same statement (mlflow_adapter.model_version_outcome_after)."""
    done = _record_verdict().returning(scans.c.workspace, scans.c.name, scans.c.version).cte("done")
    after = mlflow_adapter.model_version_outcome_after(done)
    return sa.select(sa.func.count()).select_from(done).add_cte(after)


def verdict_tags(report: ScanReport) -> dict[str, str]:
    """The version tags a verdict leaves, readable by anyone who can read the version."""
    return {
        f"{TAG_PREFIX}verdict": report.verdict.value,
        f"{TAG_PREFIX}scanner": report.scanner,
        f"{TAG_PREFIX}findings": "\n".join(finding.line() for finding in report.findings)[:5000] or "none",
        f"{TAG_PREFIX}files": str(len(report.files)),
    }


def release(engine: sa.Engine, key: VersionKey, by: str, reason: str) -> ScanRecord:
    """Serve a quarantined version as READY: an admin looked at its findings and accepts them."""
    with engine.begin() as conn:
        changed = conn.execute(
            scans.update()
            .where(key.where() & (scans.c.state == DONE))
            .values(blocked=False, released_by=by, released_reason=reason)
        ).rowcount
        if not changed:
            raise LookupError(f"{key} has no finished scan to release (is it still being scanned?)")
        mlflow_adapter.set_model_version_outcome(
            conn,
            key.workspace,
            key.name,
            key.version,
            READY,
            f"released by {by}: {reason}",
            {f"{TAG_PREFIX}released_by": by, f"{TAG_PREFIX}released_reason": reason[:5000]},
        )
    record = get(engine, key)
    assert record is not None
    return record


def rescan(engine: sa.Engine, keys: list[VersionKey], *, blocked: bool) -> int:
    """Put versions back to pending: any running worker's sweep scans them again within its interval."""
    with engine.begin() as conn:
        for key in keys:
            conn.execute(
                scans.update()
                .where(key.where())
                .values(
                    state=PENDING,
                    blocked=blocked,
                    lease_owner=None,
                    lease_until=None,
                    released_by=None,
                    released_reason=None,
                )
            )
            mlflow_adapter.set_model_version_outcome(
                conn, key.workspace, key.name, key.version, PENDING_REGISTRATION, "being scanned again", {}
            )
    return len(keys)


def blocked_at_or_around(engine: sa.Engine, path: str, ancestors: list[str]) -> ScanRecord | None:
    """A blocked version whose files hold ``path`` (their prefix is one of its ``ancestors``) or lie
    under it (``path`` is a directory above them)."""
    return _at_or_around(engine, path, ancestors, blocked_only=True)


def scanned_at_or_around(engine: sa.Engine, path: str, ancestors: list[str]) -> ScanRecord | None:
    """Any existing scanned version's files at or under ``path``, as :func:`blocked_at_or_around`."""
    return _at_or_around(engine, path, ancestors, blocked_only=False)


def _at_or_around(
    engine: sa.Engine, path: str, ancestors: list[str], *, blocked_only: bool
) -> ScanRecord | None:
    postgresql = engine.dialect.name == "postgresql"
    query = around_sql(postgresql, blocked_only, len(ancestors))
    condition: object = True if blocked_only else DELETED
    near = (ancestors,) if postgresql else tuple(ancestors)
    with database.planned_with_values():
        row = database.fetch_one(engine, query, (condition, *near, path + "/", path + "0"))
    return ScanRecord.from_mapping(dict(zip(scans.c.keys(), row, strict=True))) if row else None


@functools.cache
def around_sql(postgresql: bool, blocked_only: bool, ancestors: int) -> str:
    """One indexed lookup, whatever the number of versions (every upload and download asks): the
    prefixes equal to an ancestor, and those under ``path``, which in byte order are exactly the range
    [``path/``, ``path0``) ('0' follows '/'). SQLite compares text bytewise; PostgreSQL is told to.
    Sent without SQLAlchemy's statement layer, which cost more than the lookup (0.62 ms against 0.29
    on PostgreSQL). Its parameters: the blocked flag or the deleted state, the ancestors (one array on
    PostgreSQL, one each on SQLite), then the range's two ends."""
    mark = "%s" if postgresql else "?"
    if postgresql:
        prefix, ancestor = 'artifact_prefix COLLATE "C"', f"artifact_prefix = ANY({mark})"
    else:
        prefix, ancestor = "artifact_prefix", f"artifact_prefix IN ({', '.join([mark] * ancestors)})"
    condition = f"blocked = {mark}" if blocked_only else f"state != {mark}"
    columns = ", ".join(scans.c.keys())
    where = f"{condition} AND ({ancestor} OR ({prefix} >= {mark} AND {prefix} < {mark}))"
    return f"SELECT {columns} FROM hokusai_scans WHERE {where} LIMIT 1"  # noqa: S608 (constants only)
