"""What a deployment shows that production should not run with: recommendations, never failures.

The checks note what they saw on the way (``Observations``: the URL and the address it resolved to, the
backend store, which replicas answered, the key's expiry, the scan policy, the transfer rates), and
``recommend`` turns that into ``Recommendation`` objects for both reports. Pure functions, so every rule
is unit-tested without a server; a recommendation never changes ``passed`` or the exit code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from hokusai_registry.key_client import KeyWarning
from hokusai_registry.verify.diagnose import CATALOGUE

REPLICA_HEADER = "X-Hokusai-Replica"  # a per-start id on every keyed answer (server/middleware.py)
REPLICA_PROBES = 8  # with two replicas picked at random, all 8 land on one only 1 time in 128
SLOW_MB_S = 10.0  # a worker streams roughly 90-300 MB/s (docs/benchmarks.md): 10x below is the path
SLOW_MIN_MIB = 16  # smaller transfers measure latency and TCP slow start more than the path's bandwidth


@dataclass(frozen=True)
class Recommendation:
    """What was seen (``detail``) and what to do (``fix``); ``id`` is stable for machines."""

    id: str
    title: str
    detail: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "detail": self.detail, "fix": self.fix}


@dataclass
class Observations:
    """What the checks saw; None (or empty) where a check did not run or could not tell."""

    url: str = ""
    address: str | None = None  # the IP reachability connected to
    store_type: str | None = None  # server-info's store_type: "SqlStore", "FileStore"
    database: str | None = None  # sqlite, postgresql, ...: GET /api/hokusai/v1/server's ``backend``
    replica_ids: list[str] | None = None  # X-Hokusai-Replica per connection; None: header absent
    key_warning: KeyWarning | None = None  # the authentication check's whoami warning
    key_rotated: bool = False  # the key is an old one in its rotation grace period
    scan_policy: str | None = None  # block, warn or off, as the model scanning check saw it behave
    large_mib: int = 0
    rates_mb_s: dict[str, float] = field(default_factory=dict)  # large_upload_mb_s, large_download_mb_s


def served_policy(verdict: str | None) -> str | None:
    """The scan policy a server shows by serving (``READY``) a version whose pickle names os.system: no
    verdict tag, ``off``; graded and served anyway, ``warn``; graded clean says nothing about the policy."""
    if verdict is None:
        return "off"
    return None if verdict == "clean" else "warn"


def loopback(url: str, address: str | None = None) -> bool:
    """The URL's host is this machine: ``localhost``, a loopback IP, or a name resolving to one."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    for candidate in (host, address):
        try:
            if candidate and ipaddress.ip_address(candidate).is_loopback:
                return True
        except ValueError:
            pass
    return False


def recommend(seen: Observations) -> list[Recommendation]:
    """Every recommendation ``seen`` supports, most urgent first; empty for a production-like deployment."""
    found = [
        _plain_http(seen),
        _scan_policy(seen),
        _backend_store(seen),
        _single_replica(seen),
        _key(seen),
        _slow_artifacts(seen),
    ]
    return [r for r in found if r is not None]


def _plain_http(seen: Observations) -> Recommendation | None:
    parts = urlsplit(seen.url)
    if parts.scheme != "http" or loopback(seen.url, seen.address):
        return None
    return Recommendation(
        "plain_http",
        "Plain HTTP",
        f"{seen.url} is plain http:// to {parts.hostname}, which is not loopback: the API key on every "
        "request crosses the network in clear text",
        "serve clients over HTTPS: the load balancer in deploy/cloudformation/registry.yaml terminates TLS "
        "on 443 and answers HTTP only with a redirect (docs/deploy.md); then verify the https:// URL",
    )


def _scan_policy(seen: Observations) -> Recommendation | None:
    if seen.scan_policy == "off":
        detail = (
            "model scanning is off: a version whose pickle names os.system became READY with no "
            "hokusai_scan_verdict tag"
        )
    elif seen.scan_policy == "warn":
        detail = "the scan policy is warn: a version graded unsafe was served READY, its verdict only tagged"
    else:
        return None
    return Recommendation("scan_policy", "Model scanning does not block", detail, CATALOGUE["F13"][1])


def _backend_store(seen: Observations) -> Recommendation | None:
    if seen.store_type == "FileStore":
        rid, title, what = (
            "file_backend",
            "File backend store",
            "MLflow's file store (server-info: FileStore)",
        )
    elif seen.database == "sqlite":
        rid, title = "sqlite_backend", "SQLite backend store"
        what = "SQLite (server-info: SqlStore; the driver MLflow's duplicate-name error names: sqlite3)"
    else:
        return None
    return Recommendation(
        rid,
        title,
        f"the backend store is {what}: files on one task's disk, which a second task cannot share and "
        "a replaced task loses",
        "run every task on one PostgreSQL database: `--backend-store-uri postgresql://user:pw@host:5432/"
        "registry` (HOKUSAI_REGISTRY_BACKEND_STORE_URI in the container; docs/deploy.md)",
    )


def _single_replica(seen: Observations) -> Recommendation | None:
    ids = seen.replica_ids
    if ids is None or len(ids) < REPLICA_PROBES or len(set(ids)) != 1:
        return None
    shared = " on one PostgreSQL database" if seen.database == "sqlite" else ""
    return Recommendation(
        "single_replica",
        "A single replica",
        f"one replica ({REPLICA_HEADER}: {ids[0]}) answered {len(ids)} requests on separate connections",
        f"production runs at least two behind the load balancer{shared} (MinTaskCount, 2 in "
        "deploy/cloudformation/registry.yaml), so a deployment or a lost task is no outage",
    )


def _key(seen: Observations) -> Recommendation | None:
    """The authentication check's own warning (whoami's), not a second look at the key."""
    warning = seen.key_warning
    if warning is None:
        return None
    if seen.key_rotated:
        return Recommendation("key_rotated", "An old key in its grace period", warning.problem, warning.fix)
    return Recommendation("key_expiring", "The key expires soon", warning.problem, warning.fix)


def _slow_artifacts(seen: Observations) -> Recommendation | None:
    rates = {k: v for k, v in seen.rates_mb_s.items() if v > 0}
    if seen.large_mib < SLOW_MIN_MIB or not rates or loopback(seen.url, seen.address):
        return None
    slowest = min(rates.values())
    if slowest >= SLOW_MB_S:
        return None
    up, down = rates.get("large_upload_mb_s"), rates.get("large_download_mb_s")
    return Recommendation(
        "slow_artifacts",
        "Slow artifact transfers",
        f"{seen.large_mib} MiB moved at {up} MB/s up and {down} MB/s down, under {SLOW_MB_S:.0f} MB/s: a "
        f"1 GB model takes {1000 / slowest:.0f} s",
        "a worker streams roughly 90-300 MB/s (docs/benchmarks.md), so the limit is on the path: check "
        "the task's CPU (TaskCpu), a proxy that buffers bodies, the artifact bucket's region, and the link "
        "verify ran from (re-run it next to the clients, or inside the VPC, to tell them apart)",
    )
