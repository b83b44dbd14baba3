"""When a failed event is tried again: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt ``n`` (1-based) that failed waits about ``base * 2**(n-1)``, at most ``cap``.

    The defaults (20 attempts, 5 s doubling to a 3 h cap) spread the 19 waits over
    roughly a day before an event is dead-lettered. Jitter draws the delay
    from [50 %, 100 %] of the nominal value so a burst of failures does not
    come back as a burst.
    """

    max_attempts: int = 20
    base_seconds: float = 5.0
    cap_seconds: float = 3 * 3600.0

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        nominal = min(self.cap_seconds, self.base_seconds * 2.0 ** max(0, attempts - 1))
        jitter: float = (rng or random).uniform(0.5, 1.0)
        return nominal * jitter

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
