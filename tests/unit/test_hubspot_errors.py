"""HubSpot's documented answers translated into the adapter's error tree (``translate_error``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hubspot.crm.objects.exceptions import ApiException

from adapter.backends.hubspot.client import (
    LOCK_SECONDS,
    MIGRATION_PAUSE,
    HubSpotPaused,
    next_daily_reset,
    translate_error,
)
from adapter.errors import RateLimitedError, RetryableError
from tests.fakes.hubspot import rate_limit_body

NOW = datetime(2027, 3, 27, 23, 30, tzinfo=UTC)


def answer(status: int, body: Any = None, **headers: str) -> ApiException:
    exc = ApiException(status=status, reason="")
    exc.body = json.dumps(body or {"status": "error", "message": f"answer {status}"})
    exc.headers = {name.replace("_", "-"): value for name, value in headers.items()}
    return exc


def test_477_pauses_until_retry_after_in_seconds_or_as_an_http_date() -> None:
    """Retry-After: 86400 is a day; an HTTP-date is that moment; none falls back to 10 min."""
    in_seconds = translate_error(answer(477, Retry_After="86400"), now=NOW)
    assert isinstance(in_seconds, HubSpotPaused)
    assert in_seconds.until == NOW + timedelta(days=1)
    dated = translate_error(answer(477, Retry_After="Sun, 28 Mar 2027 06:00:00 GMT"), now=NOW)
    assert isinstance(dated, HubSpotPaused)
    assert dated.until == datetime(2027, 3, 28, 6, 0, tzinfo=UTC)
    bare = translate_error(answer(477), now=NOW)
    assert isinstance(bare, HubSpotPaused)
    assert bare.until == NOW + timedelta(seconds=MIGRATION_PAUSE)


def test_daily_429_pauses_until_midnight_in_the_account_zone_other_429s_do_not() -> None:
    """policyName DAILY pauses to the zone's midnight; TEN_SECONDLY_ROLLING and SECONDLY hold."""
    stockholm = ZoneInfo("Europe/Stockholm")
    daily = translate_error(answer(429, rate_limit_body(daily=True)), time_zone=stockholm, now=NOW)
    assert isinstance(daily, HubSpotPaused)
    # 00:30 in Stockholm on the night clocks go forward: the reset is the next midnight.
    assert daily.until == datetime(2027, 3, 28, 22, 0, tzinfo=UTC)
    rolling = translate_error(
        answer(429, rate_limit_body(), X_HubSpot_RateLimit_Interval_Milliseconds="10000"),
        now=NOW,
    )
    assert isinstance(rolling, RateLimitedError)
    assert rolling.retry_after == 10.0
    search = translate_error(
        answer(
            429, rate_limit_body(search=True), X_HubSpot_RateLimit_Interval_Milliseconds="10000"
        ),
        now=NOW,
    )
    assert isinstance(search, RateLimitedError)
    assert search.retry_after == 1.0


def test_next_daily_reset_is_midnight_in_the_zone_and_utc_by_default() -> None:
    """UTC by default; a zone west of UTC resets later in UTC terms."""
    assert next_daily_reset(NOW) == datetime(2027, 3, 28, tzinfo=UTC)
    new_york = next_daily_reset(NOW, ZoneInfo("America/New_York"))
    assert new_york == datetime(2027, 3, 28, 4, 0, tzinfo=UTC)


def test_423_waits_for_the_lock_and_5xx_for_retry_after() -> None:
    """423 is retryable after at least HubSpot's 2 s lock; a 503's Retry-After is kept."""
    locked = translate_error(answer(423), now=NOW)
    assert type(locked) is RetryableError
    assert locked.retry_after == LOCK_SECONDS
    unavailable = translate_error(answer(503, Retry_After="30"), now=NOW)
    assert type(unavailable) is RetryableError
    assert unavailable.retry_after == 30.0
    assert translate_error(answer(502), now=NOW).retry_after is None
