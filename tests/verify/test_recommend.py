"""Each recommendation appears exactly when its observation says so, and none for a production-like set."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hokusai_registry.key_client import WhoAmI
from hokusai_registry.verify.diagnose import CATALOGUE
from hokusai_registry.verify.recommend import (
    REPLICA_PROBES,
    Observations,
    loopback,
    recommend,
    served_policy,
)

NOW = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)


def production(**changes: Any) -> Observations:
    """What verify sees of the CloudFormation stack: HTTPS, PostgreSQL, two replicas, a fresh key,
    scanning blocking, fast transfers."""
    seen = Observations(
        url="https://registry.example.com",
        address="203.0.113.10",
        store_type="SqlStore",
        database="postgresql",
        replica_ids=["a1", "b2"] * (REPLICA_PROBES // 2),
        scan_policy="block",
        large_mib=16,
        rates_mb_s={"large_upload_mb_s": 120.0, "large_download_mb_s": 95.0},
    )
    return replace(seen, **changes)


def ids(seen: Observations) -> list[str]:
    return [r.id for r in recommend(seen)]


def expiring_key(**whoami: Any) -> WhoAmI:
    fields: dict[str, Any] = {
        "id": "k_1", "name": None, "user": "acme", "scope": "write", "expires_at": None,
        "expires_in_seconds": None, "grace_seconds_left": None, "source": "local",
    }  # fmt: skip
    return WhoAmI(**(fields | whoami))


def test_a_production_like_deployment_gets_none() -> None:
    assert recommend(production()) == []
    assert recommend(Observations()) == []  # nothing seen (reachability failed): nothing to say


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"url": "http://registry.example.com"}, "plain_http"),
        ({"database": "sqlite"}, "sqlite_backend"),
        ({"store_type": "FileStore", "database": None}, "file_backend"),
        ({"replica_ids": ["a1"] * REPLICA_PROBES}, "single_replica"),
        ({"scan_policy": "off"}, "scan_policy"),
        ({"scan_policy": "warn"}, "scan_policy"),
        ({"rates_mb_s": {"large_upload_mb_s": 120.0, "large_download_mb_s": 4.2}}, "slow_artifacts"),
        ({"rates_mb_s": {"large_upload_mb_s": 9.9, "large_download_mb_s": 95.0}}, "slow_artifacts"),
    ],
)
def test_each_observation_brings_exactly_its_recommendation(changes: dict[str, Any], expected: str) -> None:
    assert ids(production(**changes)) == [expected]


@pytest.mark.parametrize(
    "changes",
    [
        {"url": "http://127.0.0.1:5000", "address": "127.0.0.1"},
        {"url": "http://localhost:5000", "address": "::1"},
        {"url": "http://registry.internal:5000", "address": "127.0.0.1"},  # a name for this machine
        {"url": "http://[::1]:5000", "address": "::1"},
        {"database": None},  # a server without GET /api/hokusai/v1/server (or the check did not run)
        {"database": "mysql"},
        {"store_type": None},
        {"replica_ids": None},  # a server from before X-Hokusai-Replica
        {"replica_ids": []},
        {"replica_ids": ["a1"] * (REPLICA_PROBES - 1)},  # too few answers to say "one"
        {"replica_ids": ["a1"] * (REPLICA_PROBES - 1) + ["b2"]},
        {"scan_policy": None},  # not run, or graded clean (says nothing about the policy)
        {"large_mib": 4, "rates_mb_s": {"large_upload_mb_s": 2.0, "large_download_mb_s": 2.0}},
        {"large_mib": 0, "rates_mb_s": {}},
        {"rates_mb_s": {"large_upload_mb_s": 10.0, "large_download_mb_s": 10.0}},
    ],
)
def test_no_recommendation_without_its_observation(changes: dict[str, Any]) -> None:
    assert ids(production(**changes)) == []


def test_slow_transfers_on_loopback_say_nothing_about_the_path() -> None:
    slow = {"large_upload_mb_s": 3.0, "large_download_mb_s": 3.0}
    assert ids(production(url="http://127.0.0.1:5000", address="127.0.0.1", rates_mb_s=slow)) == []


def test_the_key_warning_is_the_authentication_checks_own() -> None:
    soon = expiring_key(expires_in_seconds=3 * 86_400.0).warning(NOW)
    assert soon is not None
    found = recommend(production(key_warning=soon))
    assert [(r.id, r.detail, r.fix) for r in found] == [("key_expiring", soon.problem, soon.fix)]
    rotated = expiring_key(grace_seconds_left=3600.0, expires_at=NOW + timedelta(hours=1)).warning(NOW)
    assert rotated is not None
    assert ids(production(key_warning=rotated, key_rotated=True)) == ["key_rotated"]
    assert expiring_key(expires_in_seconds=30 * 86_400.0).warning(NOW) is None  # nothing to pass on


def test_a_single_sqlite_server_on_plain_http_gets_all_three() -> None:
    seen = production(url="http://10.0.1.5:5000", address="10.0.1.5", database="sqlite",
                      replica_ids=["b70c5690"] * REPLICA_PROBES)  # fmt: skip
    found = {r.id: r for r in recommend(seen)}
    assert list(found) == ["plain_http", "sqlite_backend", "single_replica"]
    assert "clear text" in found["plain_http"].detail and "HTTPS" in found["plain_http"].fix
    assert "SQLite" in found["sqlite_backend"].detail
    assert "--backend-store-uri postgresql://" in found["sqlite_backend"].fix
    assert found["single_replica"].detail.startswith(f"one replica (X-Hokusai-Replica: b70c5690) answered "
                                                     f"{REPLICA_PROBES} requests")  # fmt: skip
    assert "at least two behind the load balancer" in found["single_replica"].fix
    assert "MinTaskCount" in found["single_replica"].fix
    assert all(r.title and r.detail and r.fix for r in found.values())
    assert all(not (r.detail + r.fix).endswith(".") for r in found.values())  # the report adds the stop


def test_the_scan_recommendation_gives_the_catalogue_fix() -> None:
    (found,) = recommend(production(scan_policy="off"))
    assert "HOKUSAI_REGISTRY_SCAN_POLICY=block" in found.fix and found.fix == CATALOGUE["F13"][1]


def test_slow_artifacts_names_both_rates() -> None:
    (found,) = recommend(production(rates_mb_s={"large_upload_mb_s": 5.0, "large_download_mb_s": 40.0}))
    assert "5.0 MB/s up and 40.0 MB/s down" in found.detail and "200 s" in found.detail


def test_to_json_is_the_four_fields() -> None:
    (found,) = recommend(production(database="sqlite"))
    assert set(found.to_json()) == {"id", "title", "detail", "fix"}


def test_served_policy() -> None:
    assert served_policy(None) == "off"
    assert served_policy("unsafe") == "warn"
    assert served_policy("suspicious") == "warn"
    assert served_policy("clean") is None


@pytest.mark.parametrize(
    ("url", "address", "expected"),
    [
        ("http://127.0.0.1:5000", None, True),
        ("http://127.8.0.1", None, True),
        ("http://localhost:5000", None, True),
        ("http://LOCALHOST.", None, True),
        ("http://[::1]:5000", None, True),
        ("http://box:5000", "127.0.1.1", True),
        ("http://10.0.1.5:5000", "10.0.1.5", False),
        ("https://registry.example.com", "203.0.113.10", False),
        ("http://not-a-url", None, False),
    ],
)
def test_loopback(url: str, address: str | None, expected: bool) -> None:
    assert loopback(url, address) is expected
