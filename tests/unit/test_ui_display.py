"""How the dashboard writes times, ages, outcomes and HubSpot links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from adapter.ui import display

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(seconds=20), "now"),
        (timedelta(seconds=-20), "now"),
        (timedelta(minutes=5), "in 5 minutes"),
        (timedelta(minutes=1), "in 1 minute"),
        (timedelta(hours=-2), "2 hours ago"),
        (timedelta(days=3), "in 3 days"),
        (timedelta(days=2, hours=23), "in 3 days"),
        (timedelta(days=-1), "1 day ago"),
        (timedelta(days=60), "in 2 months"),
        (timedelta(days=400), "in 1 year"),
    ],
)
def test_relative_time_reads_as_people_say_it(delta: timedelta, expected: str) -> None:
    """The largest fitting unit, rounded, with 'in' for the future and 'ago' for the past."""
    assert display.relative_time(NOW + delta, NOW) == expected


def test_local_time_follows_the_display_zone_across_dst() -> None:
    """The same UTC hour reads 11:00 CET in winter and 12:00 CEST in summer in Stockholm."""
    zone = ZoneInfo("Europe/Stockholm")
    winter = display.local_time(datetime(2027, 2, 15, 10, 0, tzinfo=UTC), zone)
    summer = display.local_time(datetime(2027, 7, 15, 10, 0, tzinfo=UTC), zone)
    assert winter == "Mon 15 Feb 2027, 11:00 CET"
    assert summer == "Thu 15 Jul 2027, 12:00 CEST"


def test_naive_datetimes_are_taken_as_utc() -> None:
    """SQLite hands back naive datetimes; they are UTC."""
    assert display.local_time(datetime(2027, 2, 15, 10, 0), ZoneInfo("UTC")).endswith("10:00 UTC")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, "none"),
        (4.2, "4 s"),
        (125, "2 min"),
        (3600, "1 h"),
        (3 * 3600 + 300, "3 h 5 min"),
        (200_000, "2 d"),
    ],
)
def test_duration_of_the_oldest_pending_event(seconds: float | None, expected: str) -> None:
    """The oldest pending age in the unit an operator reads at a glance."""
    assert display.duration(seconds) == expected


def test_outcomes_and_hubspot_links() -> None:
    """Outcomes as words; HubSpot record URLs carry the portal and the object type id."""
    assert display.outcome("NO_SHOW") == "no-show"
    assert display.outcome("CANCELED") == "cancelled"
    assert display.outcome("RESCHEDULED") == "rescheduled"
    assert (
        display.hubspot_record_url("123", "contact", "901")
        == "https://app.hubspot.com/contacts/123/record/0-1/901"
    )
    assert display.hubspot_record_url("123", "deal", "7").endswith("/record/0-3/7")


def test_hubspot_links_use_the_portals_ui_domain() -> None:
    """An EU portal's records open on its own host, the path unchanged."""
    assert (
        display.hubspot_record_url("123", "meeting", "5", ui_domain="app-eu1.hubspot.com")
        == "https://app-eu1.hubspot.com/contacts/123/record/0-47/5"
    )
