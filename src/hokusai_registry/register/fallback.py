"""Artifacts for experiments whose store the client reaches itself (``s3://`` and the like).

Here the stock MLflow client writes straight to storage with the caller's own credentials (F3 in
docs/failures.md); our registry never creates such experiments, other MLflow servers may. The key goes to
MLflow through ``MLFLOW_TRACKING_TOKEN`` (the only way it reads one), set for the call and restored.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hokusai_registry.client import Digest, hash_file
from hokusai_registry.register.errors import ServerRefused

HINT = (
    "This experiment stores artifacts at {location}, which the client must reach with its own storage "
    "credentials (F3): set them, or ask the operator for an experiment on mlflow-artifacts:/."
)


@contextmanager
def mlflow_token(api_key: str) -> Iterator[None]:
    previous = os.environ.get("MLFLOW_TRACKING_TOKEN")
    os.environ["MLFLOW_TRACKING_TOKEN"] = api_key
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = previous


def upload(url: str, api_key: str, run_id: str, directory: Path, location: str) -> None:
    from mlflow import MlflowClient

    try:
        with mlflow_token(api_key):
            MlflowClient(tracking_uri=url).log_artifacts(run_id, str(directory), "model")
    except Exception as exc:  # storage SDKs raise their own types; all mean the upload failed
        raise ServerRefused(
            "upload", f"the storage client failed: {exc}", HINT.format(location=location)
        ) from exc


def download_sha256s(url: str, api_key: str, artifact_uri: str, location: str) -> dict[str, Digest]:
    """Every file under ``artifact_uri`` as {relative path: its digest}, via a temp dir."""
    import mlflow.artifacts

    try:
        with mlflow_token(api_key), tempfile.TemporaryDirectory() as tmp:
            root = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp, tracking_uri=url)
            )
            return {p.relative_to(root).as_posix(): hash_file(p) for p in root.rglob("*") if p.is_file()}
    except Exception as exc:
        raise ServerRefused(
            "round_trip", f"the storage client failed: {exc}", HINT.format(location=location)
        ) from exc
