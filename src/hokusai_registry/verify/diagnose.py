"""Map what a check observed (status, body, headers, exception) to a root cause in the failure catalogue.

Pure functions, so every rule is unit-tested without a server. The catalogue (F1-F14) is the one in
``docs/failures.md``; the point of naming it is that an operator gets "run with artifact serving on", not
"404". Rules that look at a body distinguish who answered: MLflow answers JSON (``error_code``), Flask's
default pages carry werkzeug's wording, and anything else (nginx, a load balancer) is "something in front".
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from hokusai_registry.client import OUTAGE, error_body

Route = Literal["health", "tracking", "artifact"]


@dataclass(frozen=True)
class Diagnosis:
    """A catalogue entry: ``code`` (F1-F14), the most likely ``cause`` and the ``fix``."""

    code: str
    cause: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.code}: {self.cause}"


CATALOGUE: dict[str, tuple[str, str]] = {
    "F1": (
        "the server runs without artifact serving (old image, --no-serve-artifacts)",
        "run with artifact serving on (`hokusai-registry up` does); redeploy the new image as a new "
        "task-definition revision, not a force-redeploy",
    ),
    "F2": (
        "the artifact route answered 401/403, which only proves that something answered",
        "only a 2xx upload + download round trip proves the route; use a key allowed to write and re-run",
    ),
    "F3": (
        "experiment artifact location is not served by this server (s3://, file:, another host), so clients "
        "need storage credentials",
        "use a default artifact root of mlflow-artifacts:/; create new experiments or move the artifacts",
    ),
    "F4": (
        "a URL prefix or reverse proxy does not route /api/2.0/mlflow-artifacts/ "
        "(or --static-prefix mismatch)",
        "route /api/2.0/mlflow-artifacts/* and /ajax-api/2.0/* to the registry; use the tracking URI with "
        "the right prefix",
    ),
    "F5": (
        "the key is unknown, revoked or expired (or the key service is asked with the wrong service id)",
        "check the key (`hokusai-registry keys list`); check the key service contract",
    ),
    "F6": (
        "the external key service is unreachable, so requests are refused",
        "restore the key service; requests are refused, never let through",
    ),
    "F7": (
        "MLflow's allowed-hosts check rejects the Host header (often one with a port)",
        "start with --allowed-hosts listing the public host names, port variants included",
    ),
    "F8": (
        "the key is valid but may not write (read-only scope, or no permission on the experiment/model)",
        "use a write key or grant the permission",
    ),
    "F9": (
        "a proxy or load balancer in front limits body size or idle time",
        "raise its body limit and idle timeout; multipart uploads where clients can reach storage",
    ),
    "F10": (
        "TLS certificate verification failed (wrong or self-signed certificate)",
        "fix the certificate chain; never disable verification silently",
    ),
    "F11": (
        "nothing healthy answers (no healthy task, health-check path mismatch, image for the wrong CPU "
        "architecture)",
        "check the service events and the health check; build linux/amd64",
    ),
    "F12": (
        "the server answers without any key: authentication is not in front of this URL",
        "route all traffic through the authenticated server (no load-balancer rule straight to MLflow)",
    ),
    "F13": (
        "model scanning is off or not working: a version referencing os.system was served as READY",
        "set HOKUSAI_REGISTRY_SCAN_POLICY=block (the default) and check the server log for scan errors",
    ),
    "F14": (
        "model scans are not finishing: a new model version stayed PENDING_REGISTRATION",
        "check the server log for scan errors and that its workers are running; "
        "`hokusai-registry scan show NAME VERSION` shows the scan's state",
    ),
    "F15": (
        "the registry's own database or artifact store cannot be reached, so requests that need it get 503",
        "restore PostgreSQL or S3 (the message says which); the tasks recover by themselves, no restart",
    ),
}
SCAN_REJECTED_FIX = (
    "read the findings (`hokusai-registry scan show NAME VERSION`) and the server log: a plain scikit-learn "
    "model graded unsafe or suspicious, or a scan error, is a scanner problem on the server"
)

WERKZEUG_404 = "the requested url was not found on the server"


def entry(code: str, detail: str = "") -> Diagnosis:
    """The catalogue entry ``code``, its cause optionally sharpened by what was seen."""
    cause, fix = CATALOGUE[code]
    return Diagnosis(code, f"{cause} ({detail})" if detail else cause, fix)


def transport(exc: BaseException) -> Diagnosis:
    """A request that got no HTTP answer: DNS, refused connection, TLS or a timeout."""
    text = f"{type(exc).__name__}: {exc}"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain) or "CERTIFICATE_VERIFY_FAILED" in text:
        return entry("F10", text)
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return entry("F10", text)
    if any(isinstance(e, socket.gaierror) for e in chain) or "Name or service not known" in text:
        return entry("F11", f"DNS lookup failed: {text}")
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text.lower():
        return entry("F11", f"connection refused: {text}")
    if any(isinstance(e, OSError) and e.errno == errno.ECONNRESET for e in chain):
        return entry("F11", f"connection reset: {text}")
    if "timeout" in text.lower() or "timed out" in text.lower():
        return entry("F11", f"timed out: {text}")
    return entry("F11", text)


def response(
    status: int,
    body: str = "",
    headers: Mapping[str, str] | None = None,
    *,
    route: Route,
    with_key: bool = True,
) -> Diagnosis | None:
    """The root cause of a non-2xx answer (or of a 2xx that should have been refused); None if fine.

    ``route`` is what was asked (artifact routes have their own 404/503 meanings); ``with_key`` says
    whether the request carried a key the caller believes valid.
    """
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    lower = body.lower()
    code = error_body(body).error_code
    if 200 <= status < 300:
        return None if with_key or route == "health" else entry("F12", f"{route} call answered {status}")
    if status == 403 and "invalid host header" in lower:
        return entry("F7", body.strip()[:120])
    if status == 503 and "artifact serving is disabled" in lower:
        return entry("F1", "503 Artifact serving is disabled")
    if status == 503 and OUTAGE in lower:
        return entry("F15", f"503: {error_body(body).message[:160]}")
    if status == 503 and ("retry-after" in headers or code == "TEMPORARILY_UNAVAILABLE"):
        return entry("F6", f"503 with Retry-After {headers.get('retry-after', '-')}")
    if status in (413, 504) and route == "artifact":
        return entry("F9", f"{status} on an artifact transfer")
    if status in (502, 503, 504):
        return entry("F11", f"{status} from {route}")
    if status == 401:
        if route == "artifact":
            return entry("F2", "401 on the artifact route")
        return entry("F5", "401 for the given key") if with_key else None
    if status == 403:
        return entry("F2", "403 on the artifact route") if route == "artifact" else entry("F8", "403")
    if status == 404:
        return not_found(body, route)
    if status == 413:
        return entry("F9", "413 request too large")
    return None


def not_found(body: str, route: Route) -> Diagnosis:
    """A 404: MLflow without artifact routes (JSON or Flask's own page) vs a proxy that does not forward."""
    if route == "artifact":
        if error_body(body).is_json or WERKZEUG_404 in body.lower():
            return entry("F1", "404 from MLflow itself on the artifact route")
        return entry("F4", "404 that is not MLflow's (HTML from something in front)")
    return entry("F4", f"404 on the {route} route: wrong URL prefix or proxy routing")


def location(artifact_location: str, server_url: str) -> Diagnosis | None:
    """F3 when an experiment's artifacts are not served by the server at ``server_url``."""
    parts = urlsplit(artifact_location)
    if parts.scheme == "mlflow-artifacts":
        if not parts.netloc:
            return None
        served = urlsplit(server_url)
        if parts.netloc in (served.netloc, served.hostname):
            return None
        return entry("F3", f"{artifact_location} points at another host")
    where = parts.scheme or "a local path"
    return entry("F3", f"{artifact_location} ({where}) is not served by this server")


def scan_served(status: str, verdict: str | None, message: str) -> Diagnosis:
    """F13 for a version referencing os.system that the registry served: why, from its status and tags."""
    if verdict is None:
        return entry("F13", f"{status} with no hokusai_scan_verdict tag: the server did not scan it")
    if verdict == "clean":
        return entry("F13", f"{status}, graded clean: the scanner missed the os.system reference")
    if status == "READY":
        return entry("F13", f"READY although graded {verdict}: the scan policy is warn ({message[:120]})")
    return entry("F13", f"{status} ({verdict}), but its files were served: the quarantine is not enforced")


def registration(exc: Exception) -> Diagnosis:
    """A failed ``register_model`` call, by its typed error (see ``register.errors``)."""
    from hokusai_registry.register import errors

    status = getattr(exc, "status", None)
    if isinstance(exc, errors.NotAuthenticated):
        return entry("F5", str(exc)[:160])
    if isinstance(exc, errors.PermissionDenied):
        return entry("F7" if "invalid host header" in str(exc).lower() else "F8", str(exc)[:160])
    if isinstance(exc, errors.ArtifactServingDisabled):
        return entry("F3" if exc.step == "experiment" else "F1", str(exc)[:160])
    if isinstance(exc, errors.PayloadTooLarge):
        return entry("F9", str(exc)[:160])
    if isinstance(exc, errors.KeyServiceUnavailable):
        return entry("F6", str(exc)[:160])
    if isinstance(exc, errors.ServerUnavailable):
        return entry("F9" if status == 504 else "F11", str(exc)[:160])
    if isinstance(exc, errors.ModelRejected):
        seen = "; ".join(exc.findings) or exc.status_message
        cause = f"the registry's model scan rejected a plain scikit-learn model: {seen}"
        return Diagnosis("scan", cause[:240], SCAN_REJECTED_FIX)
    if isinstance(exc, errors.ScanTimedOut):
        return entry("F14", str(exc)[:160])
    if isinstance(exc, errors.RoundTripMismatch):
        return Diagnosis("round-trip", f"files came back different: {exc}", CATALOGUE["F9"][1])
    return Diagnosis("?", f"registration failed: {exc}", "read the detail; re-run with --keep to inspect")
