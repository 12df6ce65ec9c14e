"""From a refused HTTP answer to the error a third party can act on (see ``errors`` for the tree).

Pure: the status, the body and whether it was an artifact route decide; the failure catalogue entries
(F1, F4, F5, F6, F8, F9, F11 in docs/failures.md) are named so an operator can look the fix up.
"""

from __future__ import annotations

from hokusai_registry.client import OUTAGE, error_body
from hokusai_registry.register.errors import (
    ArtifactServingDisabled,
    KeyServiceUnavailable,
    NotAuthenticated,
    PayloadTooLarge,
    PermissionDenied,
    ServerRefused,
    ServerUnavailable,
)
from hokusai_registry.register.retry import RETRY_STATUSES
from hokusai_registry.register.scan import QUARANTINED

ARTIFACT_ROUTE = "/mlflow-artifacts/"


def transient(status: int, text: str) -> bool:
    """Worth retrying: 429/502/503/504, except MLflow's 503 for disabled artifact serving (permanent)."""
    return status in RETRY_STATUSES and "artifact serving is disabled" not in text.lower()


def refusal(
    step: str, status: int, text: str, *, path: str, attempts: int = 1, elapsed: float = 0.0
) -> ServerRefused:
    body = error_body(text)
    code, message = body.error_code, body.message
    said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")

    def make(kind: type[ServerRefused], problem: str, hint: str) -> ServerRefused:
        return kind(step, problem, hint, status=status, error_code=code)

    tried = f"{attempts} tries over {elapsed:.0f}s" if attempts > 1 else "1 try"
    if status == 401:
        return make(
            NotAuthenticated,
            f"the registry refused the API key ({said}).",
            "The key is invalid, revoked or expired (F5): ask the registry operator for a new key and "
            "pass it with --api-key or HOKUSAI_API_KEY.",
        )
    if status == 403 and code == QUARANTINED:
        return make(
            PermissionDenied,
            f"the registry refuses the files of a version its model scan has not passed ({said}).",
            "The version is pending its scan or quarantined: wait for READY, or ask an admin to inspect it "
            "(`hokusai-registry scan show NAME VERSION`).",
        )
    if status == 403:
        return make(
            PermissionDenied,
            f"the key may not do this ({said}).",
            "A read-scope key cannot register models, and an experiment or model name another user "
            "created needs their grant (F8): use a write key, another --name/--experiment, or ask the "
            "operator for permission.",
        )
    disabled = status == 503 and "artifact serving is disabled" in message.lower()
    missing = code == "RESOURCE_DOES_NOT_EXIST"  # MLflow answered: that file is not there
    if ARTIFACT_ROUTE in path and ((status == 404 and not missing) or disabled):
        return make(
            ArtifactServingDisabled,
            f"the server does not accept artifacts ({said}).",
            "It runs without artifact serving (F1), or a proxy does not route /api/2.0/mlflow-artifacts/ "
            "(F4): the operator must run it with artifact serving on (`hokusai-registry up`, or "
            "`mlflow server --serve-artifacts`) and redeploy.",
        )
    if status == 413:
        return make(
            PayloadTooLarge,
            f"a proxy or load balancer in front of the registry refused the request body ({said}).",
            "The operator must raise its body size limit (e.g. nginx client_max_body_size) above the "
            "largest model file (F9).",
        )
    if status == 503 and OUTAGE in message:
        return make(
            ServerUnavailable,
            f"the registry's database or artifact store is down ({said}; {tried}): {message[:200]}",
            "The registry recovers by itself once it is back (F15): try again later and tell the operator "
            "if it persists.",
        )
    if status == 503 and code == "TEMPORARILY_UNAVAILABLE":
        return make(
            KeyServiceUnavailable,
            f"the registry cannot check API keys right now ({said}; {tried}).",
            "Its key service is unreachable (F6): try again later and tell the operator if it persists.",
        )
    if status in RETRY_STATUSES:
        return make(
            ServerUnavailable,
            f"the server kept answering {said} ({tried}).",
            "Check the registry's health and try again; a 502/503 from a load balancer usually means no "
            "healthy server behind it (F11).",
        )
    return make(ServerRefused, f"the server refused the request ({said}).", "")


def unreachable(step: str, url: str, error: Exception, attempts: int, elapsed: float) -> ServerUnavailable:
    return ServerUnavailable(
        step,
        f"could not reach {url} ({type(error).__name__}: {error}; {attempts} tries over {elapsed:.0f}s).",
        "Check the URL and that the registry is running, then run the command again.",
    )
