"""A client-side request budget: at most ``limit`` requests in any rolling ``window``.

One budget is shared by every thread of a process that talks to one portal
(``shared_budget``), so N worker threads together stay under HubSpot's
per-portal limit instead of each assuming it has the whole of it. A 429
``hold``s the budget, so every thread pauses, not just the one refused.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RollingWindow:
    """At most ``limit`` acquisitions per ``window`` seconds, across threads."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        margin: float | None = None,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a budget needs limit >= 1 and window > 0")
        self.limit = limit
        # A slot is stamped before the request leaves and HubSpot stamps it on arrival:
        # keep each slot a little longer than the window so the two windows agree.
        self.window = window + (0.02 * window + 0.05 if margin is None else margin)
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._held_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one request slot, sleeping until one is free; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._stamps and self._stamps[0] <= now - self.window:
                    self._stamps.popleft()
                delay = self._held_until - now
                if delay <= 0 and len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return waited
                if delay <= 0:
                    delay = self._stamps[0] + self.window - now
            # Sleep outside the lock so other threads can see the budget meanwhile.
            delay = max(delay, 0.001)
            self._sleep(delay)
            waited += delay

    def hold(self, seconds: float) -> None:
        """Refuse every slot for ``seconds`` (HubSpot said 429)."""
        with self._lock:
            self._held_until = max(self._held_until, self._clock() + seconds)


_shared: dict[tuple[str, str, int, float], RollingWindow] = {}
_shared_lock = threading.Lock()


def shared_budget(portal: str, kind: str, limit: int, window: float) -> RollingWindow:
    """The process-wide budget of ``kind`` (``"requests"``, ``"search"``) for ``portal``."""
    key = (portal, kind, limit, window)
    with _shared_lock:
        budget = _shared.get(key)
        if budget is None:
            budget = _shared[key] = RollingWindow(limit, window)
        return budget
