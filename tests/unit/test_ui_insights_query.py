"""The Insights page's form, read by the API's rules: defaults, errors naming the field."""

from __future__ import annotations

from datetime import date

import pytest

from adapter.insights.period import MAX_DAYS, FilterError
from adapter.ui.insights import parse_query

TODAY = date(2026, 11, 29)


def test_without_fields_the_period_is_the_last_30_days_and_every_event_type() -> None:
    """No from/to/eventType: today and the 29 days before, all event types."""
    query = parse_query(None, None, None, TODAY)
    assert (query.first, query.last, query.event_type) == (date(2026, 10, 31), TODAY, None)
    assert query.filters.start == date(2026, 10, 31)
    assert query.filters.end == date(2026, 11, 30)  # the report's end is exclusive
    assert query.params() == "from=2026-10-31&to=2026-11-29"
    assert query.csv_url("sync") == "/ui/insights.csv?metric=sync&from=2026-10-31&to=2026-11-29"


def test_the_chosen_period_and_event_type_are_kept() -> None:
    """Both ends inclusive; blank fields mean the default; the event type is trimmed."""
    query = parse_query("2026-01-01", "2026-12-31", " 30min consultation ", TODAY)
    assert (query.first, query.last) == (date(2026, 1, 1), date(2026, 12, 31))
    assert query.event_type == "30min consultation"
    assert query.params() == "from=2026-01-01&to=2026-12-31&eventType=30min+consultation"
    assert query.filters.end == date(2027, 1, 1)
    assert parse_query(" ", "", "", TODAY) == parse_query(None, None, None, TODAY)


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        (("2026-13-01", None, None), "from", "must be a date, YYYY-MM-DD"),
        ((None, "yesterday", None), "to", "must be a date, YYYY-MM-DD"),
        (("2026-11-02", "2026-11-01", None), "from", "must not be after to"),
        (("2020-01-01", "2026-01-01", None), "from", f"at most {MAX_DAYS} days"),
        ((None, None, "x" * 201), "eventType", "at most 200 characters"),
        ((None, None, "a\x00b"), "eventType", "no NUL"),
    ],
)
def test_a_field_the_page_cannot_use_is_named_with_the_reason(
    fields: tuple[str | None, str | None, str | None], field: str, reason: str
) -> None:
    """Each refusal says which field and why (the page shows it as a 400, never a 500)."""
    with pytest.raises(FilterError) as caught:
        parse_query(*fields, TODAY)
    assert caught.value.field == field
    assert reason in caught.value.message
