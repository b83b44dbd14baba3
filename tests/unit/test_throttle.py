"""The failed-credentials throttle: blocks an address after its failures, and asks its
limiter nothing for an address that has not failed."""

from __future__ import annotations

import pytest

from adapter.api.throttle import FailureThrottle
from adapter.metrics import Metrics


def test_only_an_address_that_failed_is_looked_up_and_it_is_blocked_at_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics()
    throttle = FailureThrottle(
        "3/minute", failures=metrics.auth_failures, throttled=metrics.auth_throttled
    )
    asked: list[str] = []
    test = throttle._limiter.test

    def counting(item: object, *keys: str) -> bool:
        asked.append(keys[0])
        return test(item, *keys)  # type: ignore[arg-type]

    monkeypatch.setattr(throttle._limiter, "test", counting)
    for _ in range(100):
        assert throttle.retry_after("10.0.0.1", "webhook") is None
    assert asked == []  # a sender that never failed costs the limiter nothing

    for _ in range(2):
        throttle.failed("10.0.0.2", "webhook")
        assert throttle.retry_after("10.0.0.2", "webhook") is None
    throttle.failed("10.0.0.2", "webhook")  # the third failure in a minute
    for _ in range(3):  # blocked at every look, not only the first
        wait = throttle.retry_after("10.0.0.2", "webhook")
        assert wait is not None
        assert 1 <= wait <= 60
    assert throttle.retry_after("10.0.0.1", "webhook") is None
    assert set(asked) == {"10.0.0.2"}
