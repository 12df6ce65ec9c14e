"""Under ``scan_policy=block`` no file of an unsafe, suspicious or not-yet-scanned version leaves the server.

There are two doors, and both are guarded below MLflow's handlers, so no route (REST, ``ajax-api``, the
UI, an alias, ``models:/NAME/V``) and no caller (admins included) gets past them:

- a version's download URI, which ``get-download-uri``, ``model-versions/get-artifact`` and the stock
  client's ``models:/`` resolution all ask the registry store for (registry_store.py calls
  :meth:`Quarantine.check_version`);
- the artifact destination's repository, which every proxied file read goes through (the native
  ``mlflow-artifacts`` download, a run's ``get-artifact``, a logged model's files): a path under a
  blocked version's files is refused (:meth:`Quarantine.check_path`, installed by app.py through
  ``mlflow_adapter.guard_artifact_repository``).

And once a version is scanned its files are frozen: a write or delete under them is refused
(:meth:`Quarantine.check_write`), so what is served is what was scanned.

The refusal is a 403 whose JSON ``error_code`` is ``MODEL_QUARANTINED`` and whose message names the
finding. Listing files stays allowed: names are not code.
"""

from __future__ import annotations

import json
import posixpath

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from hokusai_registry.server import database, scan_store
from hokusai_registry.server.scan_store import ScanRecord, VersionKey

__all__ = ["FilesImmutable", "ModelQuarantined", "Quarantine", "ancestors", "normalized"]

ERROR_CODE = "MODEL_QUARANTINED"


class ModelQuarantined(MlflowException):  # type: ignore[misc]
    """403 ``MODEL_QUARANTINED``: MLflow's handlers serialize it like any of their own errors."""

    def __init__(self, record: ScanRecord) -> None:
        if record.state == scan_store.PENDING:
            why = "it has not been scanned yet; try again when its status is READY"
        else:
            why = f"its scan found {record.summary or record.verdict}"
        super().__init__(
            f"model version {record.key} is quarantined: {why}. An admin can inspect it with "
            f"`hokusai-registry scan show {record.key.name} {record.key.version}`"
        )

    def get_http_status_code(self) -> int:
        return 403

    def serialize_as_json(self) -> str:
        return json.dumps({"error_code": ERROR_CODE, "message": self.message})


def normalized(path: str) -> str:
    """The path as the repository will open it (``a/./b//c`` is ``a/b/c``), so no spelling gets past."""
    return posixpath.normpath("/" + path).lstrip("/")


class FilesImmutable(MlflowException):  # type: ignore[misc]
    """403: a write under the files of a registered (scanned) version."""

    def __init__(self, record: ScanRecord) -> None:
        super().__init__(
            f"these files belong to model version {record.key}, which was scanned as they are; "
            "they cannot be changed. Log the new files elsewhere and register a new version",
            error_code=PERMISSION_DENIED,
        )


def ancestors(path: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b", "a/b/c"]``: the prefixes a blocked version's files could have."""
    parts = [part for part in normalized(path).split("/") if part]
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


class Quarantine:
    """Its checks run on every download, upload and download URI: each is one statement, read on
    PostgreSQL from the single-statement pool for rows (one round trip, not MLflow's pool's four)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._reads = database.single_statement_engine(engine, "rows")

    def check_version(self, name: str, version: str | int) -> None:
        try:
            key = VersionKey("default", str(name), int(version))
        except (TypeError, ValueError):
            return  # MLflow's own handler refuses a malformed version
        record = database.once_more_if_dropped(lambda: scan_store.get(self._reads, key))
        if record is not None and record.blocked:
            raise ModelQuarantined(record)

    def check_path(self, path: str) -> None:
        """Refuse a file under a blocked version's files, or a directory that holds some."""
        found = normalized(path), ancestors(path)
        record = database.once_more_if_dropped(lambda: scan_store.blocked_at_or_around(self._reads, *found))
        if record is not None:
            raise ModelQuarantined(record)

    def check_write(self, path: str) -> None:
        """A registered version's files are what was scanned: nobody writes or deletes under them."""
        found = normalized(path), ancestors(path)
        record = database.once_more_if_dropped(lambda: scan_store.scanned_at_or_around(self._reads, *found))
        if record is not None:
            raise FilesImmutable(record)
