"""What every client command of ours shares: routes, the key and URL it uses, hashing, error bodies.

Client-side and light: no MLflow and nothing from ``server/`` is imported here, so ``register``, ``verify``
and the scripts load it in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "API",
    "ARTIFACTS",
    "CHUNK",
    "MISSING_KEY",
    "MISSING_URL",
    "OUTAGE",
    "Digest",
    "ErrorBody",
    "Sha256Meter",
    "error_body",
    "hash_file",
    "hash_stream",
    "read_chunks",
    "resolve_key",
    "resolve_url",
]

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
CHUNK = 1024 * 1024  # files and artifacts are streamed in 1 MiB pieces, so memory stays flat

# In every 503 the registry answers when its own database or artifact store is down (server/outages.py).
OUTAGE = "cannot be reached right now"
MISSING_KEY = "no API key: pass --api-key or set HOKUSAI_API_KEY (or MLFLOW_TRACKING_TOKEN)"
MISSING_URL = "no registry URL: pass --url or set MLFLOW_TRACKING_URI"


def resolve_key(given: str | None = None) -> str | None:
    """The key a client command uses: the one given (``--api-key``), else HOKUSAI_API_KEY, else
    MLflow's own MLFLOW_TRACKING_TOKEN; None when there is none (say ``MISSING_KEY``)."""
    return given or os.environ.get("HOKUSAI_API_KEY") or os.environ.get("MLFLOW_TRACKING_TOKEN")


def resolve_url(given: str | None = None) -> str | None:
    """The registry URL: the one given (``--url``), else MLFLOW_TRACKING_URI; None when there is none."""
    return given or os.environ.get("MLFLOW_TRACKING_URI")


@dataclass(frozen=True)
class Digest:
    """What a stream of bytes was: its SHA-256 (hex) and its size in bytes."""

    sha256: str
    size: int


class Sha256Meter:
    """Hash bytes as they pass (``update`` per chunk), for a loop that does more with each chunk."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)

    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest(), self._size)


def hash_stream(chunks: Iterable[bytes]) -> Digest:
    """The digest of all ``chunks`` together, consuming them one at a time."""
    meter = Sha256Meter()
    for chunk in chunks:
        meter.update(chunk)
    return meter.digest()


def read_chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in ``CHUNK`` pieces."""
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def hash_file(path: Path) -> Digest:
    return hash_stream(read_chunks(path))


@dataclass(frozen=True)
class ErrorBody:
    """What an error answer said: MLflow's ``error_code`` (``""`` when none) and a message.

    ``is_json`` tells who answered: MLflow and FastAPI answer JSON, a proxy or load balancer in front
    usually answers an HTML page.
    """

    error_code: str
    message: str
    is_json: bool


def error_body(text: str) -> ErrorBody:
    """Parse MLflow's ``{"error_code", "message"}``, FastAPI's ``{"detail"}`` or any other body (a proxy's
    HTML page: its text with whitespace collapsed, cut to 200 characters)."""
    try:
        body = json.loads(text)
    except ValueError:
        return ErrorBody("", _short(text), is_json=False)
    if isinstance(body, dict):
        message = body.get("message", body.get("detail", ""))
        return ErrorBody(str(body.get("error_code", "")), str(message), is_json=True)
    return ErrorBody("", _short(text), is_json=True)


def _short(text: str) -> str:
    return " ".join(text.split())[:200]
