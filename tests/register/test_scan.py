"""What a client reads from a model version about the registry's scan, and how long it waits for it.

The wait runs on a fake clock, so the bound and the poll interval are checked without a server or a
sleep; the real waits are in tests/e2e/test_register_scanning.py.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from hokusai_registry.register import InvalidInput, metadata, progress, scan


def version(status: str, **tags: str) -> dict[str, Any]:
    return {
        "status": status,
        "status_message": f"message of {status}",
        "tags": [{"key": key, "value": value} for key, value in tags.items()],
    }


def test_a_quarantined_version_carries_its_verdict_and_findings() -> None:
    found = scan.state(
        version(
            "FAILED_REGISTRATION",
            hokusai_scan_verdict="unsafe",
            hokusai_scan_findings="model/model.pkl: calls os.system\nmodel/b.pkl: imports x.y\n",
        )
    )
    assert (found.rejected, found.pending, found.flagged) == (True, False, True)
    assert found.verdict == "unsafe" and found.message == "message of FAILED_REGISTRATION"
    assert found.findings == ["model/model.pkl: calls os.system", "model/b.pkl: imports x.y"]


def test_no_tags_is_not_scanned_and_never_clean() -> None:
    found = scan.state({"status": "READY", "tags": []})
    assert (found.verdict, found.findings, found.flagged, found.rejected) == (None, [], False, False)
    assert scan.state({}).status == "READY"  # a server that leaves the default out of its JSON


def test_none_is_no_findings() -> None:
    assert scan.findings("none") == [] and scan.findings("") == [] and scan.findings(" a: b \n\n") == ["a: b"]
    clean = scan.state(version("READY", hokusai_scan_verdict="clean", hokusai_scan_findings="none"))
    assert (clean.flagged, clean.findings) == (False, [])


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_pending_version_is_polled_every_second_until_it_has_a_verdict() -> None:
    answers = iter([version("PENDING_REGISTRATION"), version("READY", hokusai_scan_verdict="clean")])
    fake, polled = FakeTime(), list[float]()
    found = scan.wait(
        lambda: next(answers), version("PENDING_REGISTRATION"), timeout=600,
        on_poll=polled.append, clock=fake.clock, sleep=fake.sleep,
    )  # fmt: skip
    assert (found.status, found.verdict) == ("READY", "clean")
    assert fake.sleeps == [1.0, 1.0] and polled == [0.0, 1.0]


def test_an_answer_with_a_verdict_is_not_polled() -> None:
    def never() -> dict[str, Any]:
        raise AssertionError("polled although the create answer had the verdict")

    assert scan.wait(never, version("FAILED_REGISTRATION")).rejected


def test_the_wait_is_bounded_and_returns_the_pending_state() -> None:
    fake = FakeTime()
    found = scan.wait(
        lambda: version("PENDING_REGISTRATION"), version("PENDING_REGISTRATION"), timeout=2.5,
        clock=fake.clock, sleep=fake.sleep,
    )  # fmt: skip
    assert found.pending
    assert fake.sleeps == [1.0, 1.0, 0.5] and fake.now == 102.5  # never past the bound


def test_scan_timeout_and_server_tags_are_validated_before_any_request() -> None:
    assert metadata.scan_timeout(0) == 0.0 and metadata.scan_timeout(12.5) == 12.5
    bad_values: list[Any] = [-1, float("nan"), float("inf"), True, "60"]
    for bad in bad_values:
        with pytest.raises(InvalidInput, match="scan_timeout"):
            metadata.scan_timeout(bad)
    with pytest.raises(InvalidInput, match="set by the registry's scan"):
        metadata.tags({"hokusai_scan_verdict": "clean"})


def test_a_status_line_off_a_terminal_is_printed_once_not_per_poll() -> None:
    out = io.StringIO()
    bars = progress.Bars(Console(file=out, force_terminal=False, width=200))
    with progress.status(bars, "waiting for the scan…") as line:
        line.update("waiting for the scan… 1s")
        line.update("waiting for the scan… 2s")
    assert out.getvalue().splitlines() == ["waiting for the scan…"]


def test_a_progress_without_a_status_line_still_works() -> None:
    class TransfersOnly:
        def transfer(self, action: str, path: str, size: int) -> Any:
            raise AssertionError("not called")

    with progress.status(TransfersOnly(), "waiting") as line:
        line.update("still waiting")
