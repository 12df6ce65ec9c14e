"""The retry schedule: exponential with jitter, Retry-After first, never past the budget."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hokusai_registry.register.retry import RetryPolicy, retry_after_seconds


def test_backoff_grows_is_jittered_and_capped() -> None:
    policy, rng = RetryPolicy(base_seconds=1, cap_seconds=8), random.Random(1)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        delays = {policy.backoff(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "no jitter"


def test_retry_after_wins_and_the_budget_bounds_everything() -> None:
    policy = RetryPolicy(budget_seconds=30)
    assert policy.next_delay(1, elapsed=0, retry_after=7) == 7
    assert policy.next_delay(1, elapsed=25, retry_after=7) is None
    assert policy.next_delay(20, elapsed=29.9, retry_after=None) is None


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("5") == 5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=12), usegmt=True), now) == 12
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=12), usegmt=True), now) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
