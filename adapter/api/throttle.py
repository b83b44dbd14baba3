"""Failed credentials throttled per client address: webhook secrets, admin tokens, logins.

Each failure is a hit on every tier of ``AUTH_FAILURE_LIMITS`` (default
``5/minute;30/hour;100/day``), kept in moving windows by the ``limits``
library. While any tier is full, that address gets 429 with ``Retry-After``
before its credential is even looked at (else a guesser would still learn
which guess was right); the wait grows as the longer tiers fill. Only the
failing address waits: a correct credential from anywhere else is never slowed.
Counts live in each process's memory: behind several processes each counts
its own share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import Counter
from starlette.requests import Request

__all__ = ["FailureThrottle", "client_address", "parse_limits"]


def parse_limits(spec: str) -> list[RateLimitItem]:
    """``AUTH_FAILURE_LIMITS`` as ``limits`` items; raises ``ValueError`` when malformed."""
    items = parse_many(spec)
    if not items:
        raise ValueError("no limit given")
    return items


def client_address(request: Request) -> str:
    """The address failures are counted against (uvicorn has applied trusted proxy headers)."""
    return request.client.host if request.client else "unknown"


class FailureThrottle:
    """Counts failed credentials per address and says how long a blocked address waits."""

    def __init__(
        self,
        spec: str,
        *,
        failures: Counter,
        throttled: Counter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = parse_limits(spec)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._failures = failures
        self._throttled = throttled
        self._clock = clock
        self._suspects: set[str] = set()  # addresses with a failure since their last look

    def retry_after(self, address: str, surface: str) -> int | None:
        """Whole seconds until ``address`` may present a credential again; ``None``: now.

        A refusal is counted in ``bookme_auth_throttled_total{surface}``. An address with
        no failure since its last look passes without asking the limiter (a webhook's
        every request asks; the limiter's moving windows cost a few % of its CPU).
        """
        if address not in self._suspects:
            return None
        # Let go first: a failure recorded meanwhile (``failed`` adds after its hits)
        # keeps it a suspect, whatever this look finds.
        self._suspects.discard(address)
        waits = [
            self._limiter.get_window_stats(item, address).reset_time - self._clock()
            for item in self._limits
            if not self._limiter.test(item, address)
        ]
        if not waits:
            return None  # not blocked: only a further failure can block it
        self._suspects.add(address)
        self._throttled.labels(surface).inc()
        return max(1, math.ceil(max(waits)))

    def failed(self, address: str, surface: str) -> None:
        """Record one wrong credential from ``address`` on every tier."""
        self._failures.labels(surface).inc()
        for item in self._limits:
            self._limiter.hit(item, address)
        self._suspects.add(address)
