"""The registry's model scan as a client sees it: a new version's status, its verdict tags, the wait.

hokusai-registry creates every model version ``PENDING_REGISTRATION`` and scans its files before anyone
may download them: a small model inside the ``model-versions/create`` request (so that answer already
says ``READY`` or ``FAILED_REGISTRATION``), a larger one in the background (the status changes later).
``register`` and ``verify`` both need the verdict before they ask for the files, so the wait lives here,
with the fetch, the clock and the sleep passed in: the rules are tested without a server. A server that
does not scan (stock MLflow, ``HOKUSAI_REGISTRY_SCAN_POLICY=off``) answers ``READY`` at once and sets no
``hokusai_scan_*`` tag, which reads as "not scanned", never as "clean".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PENDING = "PENDING_REGISTRATION"
READY = "READY"
FAILED = "FAILED_REGISTRATION"
TAG_PREFIX = "hokusai_scan_"  # the server writes these; a client may not set or delete them (403)
TAG_VERDICT = f"{TAG_PREFIX}verdict"
TAG_FINDINGS = f"{TAG_PREFIX}findings"
CLEAN = "clean"
QUARANTINED = "MODEL_QUARANTINED"  # the error_code of a refused download of a version not READY
POLL_SECONDS = 1.0
WAIT_SECONDS = 600.0  # a background scan of a multi-GiB model takes minutes; a stuck one never ends


@dataclass(frozen=True)
class ScanState:
    """What one model version says about its scan: its status, and the verdict tags if it was scanned."""

    status: str
    verdict: str | None = None
    findings: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def pending(self) -> bool:
        return self.status == PENDING

    @property
    def rejected(self) -> bool:
        return self.status == FAILED

    @property
    def flagged(self) -> bool:
        """Scanned and found something: served anyway only under the server's ``warn`` policy."""
        return self.verdict is not None and self.verdict != CLEAN


def state(version: Mapping[str, Any]) -> ScanState:
    """The scan state of a ``model_version`` object as MLflow's REST API returns it."""
    tags = {str(t.get("key")): str(t.get("value", "")) for t in version.get("tags", [])}
    return ScanState(
        status=str(version.get("status") or READY),
        verdict=tags.get(TAG_VERDICT),
        findings=findings(tags.get(TAG_FINDINGS, "")),
        message=str(version.get("status_message") or ""),
    )


def findings(text: str) -> list[str]:
    """The ``hokusai_scan_findings`` tag as lines (``"path: detail"``); ``"none"`` and blanks are none."""
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and line != "none"]


def wait(
    fetch: Callable[[], Mapping[str, Any]],
    first: Mapping[str, Any],
    *,
    timeout: float = WAIT_SECONDS,
    interval: float = POLL_SECONDS,
    on_poll: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ScanState:
    """Poll ``fetch`` (the version, fresh) every ``interval`` seconds until it leaves
    ``PENDING_REGISTRATION`` or ``timeout`` seconds have passed, and return the last state seen: still
    pending when the time ran out, which the caller reports its own way. ``on_poll`` gets the seconds
    waited so far, for a status line."""
    current, started = state(first), clock()
    while current.pending:
        waited = clock() - started
        if waited >= timeout:
            break
        if on_poll:
            on_poll(waited)
        sleep(min(interval, timeout - waited))
        current = state(fetch())
    return current
