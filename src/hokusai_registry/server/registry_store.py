"""The registry store MLflow's handlers and its auth app share, with what the registry adds to it.

- **A registered model read once in ``registered-models/get``** (shared_reads.py): MLflow's auth app
  reads the whole model only to learn whether it is a prompt and which workspace holds it, then the
  handler reads it again (about a quarter of a worker's time on it, docs/benchmarks.md).
- **Scans** (scan_service.py): a version created through any route is scanned before its
  ``create_model_version`` returns when it is small, and its reserved ``hokusai_scan_*`` tags can be
  written by nobody but the scan (set or deleted: 403 ``PERMISSION_DENIED``; sent with a new version:
  dropped), so a verdict cannot be forged. A rename carries the scan rows along.
- **Quarantine** (quarantine.py): a blocked version's download URI is refused.
"""

from __future__ import annotations

from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

from hokusai_registry.server import mlflow_adapter, scan_store, shared_reads
from hokusai_registry.server.metrics import REGISTRATIONS
from hokusai_registry.server.quarantine import Quarantine
from hokusai_registry.server.scan_service import RECORDED_ELSEWHERE, ScanService
from hokusai_registry.server.scan_store import TAG_PREFIX


def refuse_reserved(keys: list[str]) -> None:
    reserved = sorted(key for key in keys if key.startswith(TAG_PREFIX))
    if reserved:
        raise MlflowException(
            f"tags starting with {TAG_PREFIX!r} are written only by the registry's model scan: {reserved}",
            error_code=PERMISSION_DENIED,
        )


class RegistryStore(mlflow_adapter.Delegating):
    def __init__(
        self, wrapped: Any, scans: ScanService | None = None, quarantine: Quarantine | None = None
    ) -> None:
        super().__init__(wrapped)
        self.scans = scans
        self.quarantine = quarantine

    def get_registered_model(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return self.wrapped.get_registered_model(name, *args, **kwargs)
        return shared_reads.shared_read(
            (id(self), "registered_model", name), lambda: self.wrapped.get_registered_model(name)
        )

    def create_model_version(self, *args: Any, **kwargs: Any) -> Any:
        # The stock client's copy_model_version sends the source version's tags, the scan's among
        # them: they are dropped (the new version gets its own scan), never written by a client.
        kwargs["tags"] = [tag for tag in kwargs.get("tags") or [] if not tag.key.startswith(TAG_PREFIX)]
        if self.scans is not None:
            self.scans.before_create()
        created = self.wrapped.create_model_version(*args, **kwargs)
        return self._after_create(created)

    def delete_model_version(self, name: str, version: Any) -> Any:
        deleted = self.wrapped.delete_model_version(name, version)
        if self.scans is not None:
            scan_store.mark_deleted(self.scans.engine, "default", name, int(version))
        return deleted

    def delete_registered_model(self, name: str) -> Any:
        deleted = self.wrapped.delete_registered_model(name)
        if self.scans is not None:
            scan_store.mark_deleted(self.scans.engine, "default", name)
        return deleted

    def rename_registered_model(self, name: str, new_name: str) -> Any:
        renamed = self.wrapped.rename_registered_model(name, new_name)
        if self.scans is not None:
            scan_store.rename(self.scans.engine, "default", name, new_name)
        return renamed

    def copy_model_version(self, *args: Any, **kwargs: Any) -> Any:
        if self.scans is not None:
            self.scans.before_create()
        return self._after_create(self.wrapped.copy_model_version(*args, **kwargs))

    def set_model_version_tag(self, name: str, version: Any, tag: Any) -> Any:
        refuse_reserved([tag.key])
        return self.wrapped.set_model_version_tag(name, version, tag)

    def delete_model_version_tag(self, name: str, version: Any, key: str) -> Any:
        refuse_reserved([key])
        return self.wrapped.delete_model_version_tag(name, version, key)

    def get_model_version_download_uri(self, name: str, version: Any) -> Any:
        if self.quarantine is not None:
            self.quarantine.check_version(name, version)
        return self.wrapped.get_model_version_download_uri(name, version)

    def _after_create(self, created: Any) -> Any:
        recorded = self.scans.after_create() if self.scans is not None else None
        if recorded == RECORDED_ELSEWHERE:
            created = self.wrapped.get_model_version(created.name, created.version)
        elif recorded is not None:  # scanned inline: answer with its verdict
            created = mlflow_adapter.with_outcome(created, recorded.status, recorded.message, recorded.tags)
        REGISTRATIONS.labels(registration_outcome(str(created.status))).inc()
        return created


def registration_outcome(status: str) -> str:
    """A new version's status as it is answered: ready, pending (its scan runs on) or failed."""
    return {"READY": "ready", "FAILED_REGISTRATION": "failed"}.get(status, "pending")


def install(scans: ScanService | None = None, quarantine: Quarantine | None = None) -> RegistryStore:
    """Make MLflow's handlers and its auth app use our store (they share one global)."""
    return mlflow_adapter.install_registry_store(lambda store: RegistryStore(store, scans, quarantine))
