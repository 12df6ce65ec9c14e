"""One JSON line for every request that writes or is refused. Keys never appear, only key ids."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

logger = logging.getLogger("hokusai_registry.audit")


def configure() -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def should_record(is_write: bool, status: int) -> bool:
    return is_write or status in (401, 403, 503)


def record(
    *, key_id: str | None, user: str | None, method: str, path: str, status: int, duration_ms: float
) -> None:
    entry = json.dumps(
        {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key_id": key_id,
            "user": user,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(duration_ms, 2),
        }
    )
    logger.info(entry)


def event(action: str, **fields: object) -> None:
    """An audit line for an action taken outside a request (the CLI releasing a model version)."""
    logger.info(
        json.dumps({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "action": action, **fields})
    )
