"""The report's period and filter from user input (API query, CLI options), checked."""

from __future__ import annotations

from datetime import date, timedelta

from adapter.insights.report import Filters

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_EVENT_TYPE = 200


class FilterError(ValueError):
    """An input that cannot be a filter; ``field`` names it (``from``, ``to``, ``eventType``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _day(field: str, value: str | None) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FilterError(field, "must be a date, YYYY-MM-DD") from None


def parse_filters(
    start: str | None, end: str | None, event_type: str | None, *, today: date
) -> Filters:
    """``from``/``to`` are UTC days, both included (default: the last 30 days to today)."""
    last = _day("to", end) or today
    if last.year < 2 or last.year > 9998:
        raise FilterError(
            "to" if end else "from", "must be a date between 0002-01-01 and 9998-12-31"
        )
    first = _day("from", start) or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise FilterError("from", "must not be after to")
    if (last - first).days + 1 > MAX_DAYS:
        raise FilterError("from", f"the period must be at most {MAX_DAYS} days")
    if event_type is not None:
        event_type = event_type.strip() or None
    if event_type is not None and (len(event_type) > MAX_EVENT_TYPE or "\x00" in event_type):
        raise FilterError("eventType", f"must be at most {MAX_EVENT_TYPE} characters, no NUL")
    return Filters(start=first, end=last + timedelta(days=1), event_type=event_type)
