"""A run's or logged model's row read by a permission check answers the next checks for a second."""

from __future__ import annotations

import pytest

from hokusai_registry.server.recent_rows import RecentRows


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reads:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"row {self.count}"


def test_a_row_read_less_than_the_interval_ago_answers_again_then_it_is_read_anew() -> None:
    clock, reads = Clock(), Reads()
    recent = RecentRows(1.0, clock)
    assert recent.read(("run", "r1"), reads) == "row 1"
    clock.now += 0.99
    assert recent.read(("run", "r1"), reads) == "row 1"
    assert recent.read(("run", "r2"), reads) == "row 2"  # another key: its own read
    clock.now += 0.01
    assert recent.read(("run", "r1"), reads) == "row 3"  # the interval is over
    assert reads.count == 3


def test_a_missing_row_is_read_again_every_time() -> None:
    recent, reads = RecentRows(1.0, Clock()), Reads()

    def missing() -> str:
        reads()
        raise LookupError("no such run")

    for _ in range(3):
        with pytest.raises(LookupError):
            recent.read(("run", "gone"), missing)
    assert reads.count == 3


def test_an_interval_of_zero_keeps_nothing() -> None:
    recent, reads = RecentRows(0, Clock()), Reads()
    assert [recent.read("k", reads) for _ in range(3)] == ["row 1", "row 2", "row 3"]


def test_the_least_recently_read_row_makes_room() -> None:
    recent, reads = RecentRows(1.0, Clock(), max_rows=2), Reads()
    recent.read("a", reads)
    recent.read("b", reads)
    recent.read("a", reads)  # a kept; b is now the oldest
    recent.read("c", reads)
    assert (recent.read("a", reads), recent.read("b", reads)) == ("row 1", "row 4")
