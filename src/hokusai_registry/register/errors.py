"""Why a registration failed, as exception types a caller can branch on.

Every error names the step that failed (``step``) and says what to do (``hint``); the CLI exits 2 for
``InvalidInput`` and 1 for everything else. The tree::

    RegistrationError                  base: .step, .hint; str() is the whole message
    ├── InvalidInput                   a field is wrong; raised before any request, so nothing exists (.field)
    ├── ServerRefused                  the server answered with an error status (.status, .error_code)
    │   ├── NotAuthenticated           401: key unknown, revoked or expired (F5)
    │   ├── PermissionDenied           403: read-scope key, or no permission on the experiment/model (F8)
    │   ├── ArtifactServingDisabled    404 or 503 "Artifact serving is disabled" on an artifact route, or an
    │   │                              experiment whose artifacts live on the server's disk (F1, F3, F4)
    │   ├── PayloadTooLarge            413: a body limit in a proxy/load balancer in front of the server (F9)
    │   ├── KeyServiceUnavailable      503 TEMPORARILY_UNAVAILABLE: the registry's key service is down (F6)
    │   └── ServerUnavailable          429/502/503/504 or no connection, still so after the retry budget
    ├── ModelRejected                  the registry's model scan quarantined the version: FAILED_REGISTRATION
    │                                  (.verdict, .findings, .status_message); the version is kept for review
    ├── ScanTimedOut                   the version was still PENDING_REGISTRATION when the wait ran out (F14)
    └── RoundTripMismatch              the files downloaded back differ from the ones uploaded

``ServerUnavailable`` is also raised for connection errors (``status`` is None then). A 401/403 is never
retried: it will not change by waiting. A download refused with 403 ``MODEL_QUARANTINED`` is a
``PermissionDenied`` with that ``error_code``. After ``ModelRejected`` the version is kept (an admin
inspects and may release it); after any other error raised once the version exists, it is deleted.
"""

from __future__ import annotations


class RegistrationError(Exception):
    """A registration that did not complete; ``step`` names where, ``hint`` what to do."""

    def __init__(self, step: str, problem: str, hint: str = "") -> None:
        self.step, self.problem, self.hint = step, problem, hint
        super().__init__(self._text())

    def _text(self) -> str:
        return f"{self.step}: {self.problem}" + (f" {self.hint}" if self.hint else "")

    def amend(self, note: str) -> None:
        """Add what the clean-up did (e.g. "the model version was deleted") to the message."""
        self.hint = f"{self.hint} {note}".strip()
        self.args = (self._text(),)


class InvalidInput(RegistrationError, ValueError):
    """An argument failed validation; raised before anything was sent."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__("validate", f"{field}: {problem}")


class ServerRefused(RegistrationError):
    """The server (or something in front of it) answered with an error status."""

    def __init__(
        self, step: str, problem: str, hint: str = "", *, status: int | None = None, error_code: str = ""
    ) -> None:
        self.status, self.error_code = status, error_code
        super().__init__(step, problem, hint)


class NotAuthenticated(ServerRefused):
    """401: the key is not accepted."""


class PermissionDenied(ServerRefused):
    """403: the key is accepted but may not do this."""


class ArtifactServingDisabled(ServerRefused):
    """The server does not proxy artifacts, so a client cannot upload through it."""


class PayloadTooLarge(ServerRefused):
    """413 from a body limit in front of the server."""


class KeyServiceUnavailable(ServerRefused):
    """503 TEMPORARILY_UNAVAILABLE: the registry could not check the key."""


class ServerUnavailable(ServerRefused):
    """Transient failures (429/502/503/504, connection errors) outlasted the retry budget."""


QUARANTINE_PREFIX = "quarantined by hokusai-registry's model scan: "  # how the server's status_message starts


class ModelRejected(RegistrationError):
    """The server's model scan refused the version: its status is ``FAILED_REGISTRATION``.

    The version is kept, not deleted: it is the evidence an admin reads (``hokusai-registry scan show``)
    and releases if the finding is a false alarm. ``verdict`` is the ``hokusai_scan_verdict`` tag
    (None on a server that failed the version without tagging it), ``findings`` the lines of the
    ``hokusai_scan_findings`` tag.
    """

    def __init__(
        self, name: str, version: str, verdict: str | None, findings: list[str], status_message: str
    ) -> None:
        self.name, self.version = name, version
        self.verdict, self.findings, self.status_message = verdict, findings, status_message
        said = status_message.removeprefix(QUARANTINE_PREFIX) or verdict or "FAILED_REGISTRATION"
        super().__init__(
            "scan",
            f"the registry's model scan rejected {name} version {version} ({said}).",
            f"Nobody can download it until it is released: an admin can inspect it with `hokusai-registry "
            f"scan show {name} {version}` and release it if the findings are expected; otherwise remove "
            "what they name from the model and register it again.",
        )


class ScanTimedOut(RegistrationError):
    """The version's scan had not finished when the wait ran out; the version is deleted again."""

    def __init__(self, name: str, version: str, waited: float) -> None:
        self.name, self.version, self.waited = name, version, waited
        super().__init__(
            "scan",
            f"{name} version {version} was still PENDING_REGISTRATION (waiting for the registry's model "
            f"scan) after {waited:.0f}s.",
            "The registry's scans are not finishing (F14), or this model is large: try again with a longer "
            "scan timeout (--scan-timeout, scan_timeout=), and tell the operator if it repeats.",
        )


class RoundTripMismatch(RegistrationError):
    """The downloaded files are missing or differ from what was uploaded."""
