"""When to try a request again: exponential backoff with jitter, ``Retry-After``, a bounded total time.

Pure functions, so the policy is tested without a server. Only answers that say "try later" are retried
(429, 502, 503, 504) plus connection errors; a 401/403 will not change by waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_JITTER = random.Random()  # noqa: S311 (jitter, not a secret)


@dataclass(frozen=True)
class RetryPolicy:
    """``budget_seconds`` bounds the time one request may take, retries included.

    The default outlasts a registry restart (a few seconds) and a short load-balancer hiccup without
    leaving a user staring at a silent terminal for minutes.
    """

    budget_seconds: float = 120.0
    base_seconds: float = 0.5
    cap_seconds: float = 10.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after the ``attempt``-th failure: half of an exponential ceiling fixed, half jitter,
        so clients that failed together do not come back together."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2.0 ** max(attempt - 1, 0))
        return ceiling / 2 + (rng or _JITTER).uniform(0, ceiling / 2)

    def next_delay(
        self, attempt: int, elapsed: float, retry_after: float | None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when the budget does not allow one."""
        delay = retry_after if retry_after is not None else self.backoff(attempt, rng)
        if elapsed + delay >= self.budget_seconds:
            return None
        return delay


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
