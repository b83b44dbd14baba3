"""How the dashboard writes dates, durations, outcomes and HubSpot links (pure functions)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from adapter.timeutil import as_utc

OUTCOMES = {
    "SCHEDULED": "scheduled",
    "RESCHEDULED": "rescheduled",
    "COMPLETED": "completed",
    "CANCELED": "cancelled",
    "NO_SHOW": "no-show",
}
HUBSPOT_UI_DOMAIN = "app.hubspot.com"
"""The HubSpot app's host until the portal's own ``uiDomain`` is known."""
# HubSpot's object type ids in app URLs (contact 0-1, company 0-2, deal 0-3, ...).
HUBSPOT_OBJECT_TYPE_IDS = {
    "contact": "0-1",
    "company": "0-2",
    "deal": "0-3",
    "task": "0-27",
    "meeting": "0-47",
}
_UNITS = (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600))


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """``Mon 15 Feb 2027, 11:00 CET``: the moment on the display timezone's clock."""
    local = as_utc(moment).astimezone(zone)
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M} {local.tzname()}"


def relative_time(moment: datetime, now: datetime) -> str:
    """``in 3 days``, ``2 hours ago``, ``in 5 minutes``, ``now``: the largest unit that fits."""
    seconds = (as_utc(moment) - as_utc(now)).total_seconds()
    size = abs(seconds)
    if size < 60:
        return "now"
    # Rounded, so a booking 2 days 23 hours away reads "in 3 days", as people say it.
    unit, count = "minute", round(size / 60)
    for name, length in _UNITS:
        if size >= length * 0.95:
            unit, count = name, max(round(size / length), 1)
            break
    amount = f"{count} {unit}{'' if count == 1 else 's'}"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def duration(seconds: float | None) -> str:
    """An age such as the oldest pending event's: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d``."""
    if seconds is None:
        return "none"
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{whole // 86400} d"


def outcome(value: str) -> str:
    """The meeting outcome as people say it (``NO_SHOW`` -> ``no-show``)."""
    return OUTCOMES.get(value, value.lower().replace("_", "-"))


def hubspot_record_url(
    portal_id: str, kind: str, object_id: str, *, ui_domain: str = HUBSPOT_UI_DOMAIN
) -> str:
    """The record's page in the HubSpot app, on the portal's own host (``app-eu1...`` in the EU)."""
    type_id = HUBSPOT_OBJECT_TYPE_IDS[kind]
    return f"https://{ui_domain}/contacts/{portal_id}/record/{type_id}/{object_id}"


def change_value(field: str, value: str | None, zone: ZoneInfo) -> str:
    """A recorded CRM change's value as the dashboard shows it: a start on the display
    timezone's clock, minutes with their unit, other values as they are."""
    if value is None:
        return "–"
    if field == "start":
        try:
            return local_time(datetime.fromisoformat(value.replace("Z", "+00:00")), zone)
        except ValueError:
            return value
    if field == "duration":
        return f"{value} min"
    return value
