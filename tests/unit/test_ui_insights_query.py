"""The Insights page's form: defaults, and errors that name the field and the reason."""

from __future__ import annotations

from datetime import date

import pytest

from adapter.ui.insights import MAX_DAYS, QueryError, parse_query

TODAY = date(2026, 11, 29)


def test_without_fields_the_period_is_the_last_30_days_and_every_event_type() -> None:
    """No from/to/eventType: today and the 29 days before, all event types."""
    query = parse_query(None, None, None, TODAY)
    assert (query.first, query.last, query.event_type) == (date(2026, 10, 31), TODAY, None)
    assert query.filters.start == date(2026, 10, 31)
    assert query.filters.end == date(2026, 11, 30)  # the report's end is exclusive
    assert query.params() == "from=2026-10-31&to=2026-11-29"


def test_the_chosen_period_and_event_type_are_kept() -> None:
    """Both ends inclusive; blank fields mean the default; the event type is trimmed."""
    query = parse_query("2026-01-01", "2026-12-31", " 30min consultation ", TODAY)
    assert (query.first, query.last) == (date(2026, 1, 1), date(2026, 12, 31))
    assert query.event_type == "30min consultation"
    assert query.params() == "from=2026-01-01&to=2026-12-31&eventType=30min+consultation"
    assert parse_query(" ", "", "", TODAY) == parse_query(None, None, None, TODAY)


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        (("2026-13-01", None, None), "from", "'2026-13-01' is not a date (YYYY-MM-DD)"),
        ((None, "yesterday", None), "to", "'yesterday' is not a date (YYYY-MM-DD)"),
        (("2026-11-02", "2026-11-01", None), "from", "2026-11-02 is after the period's end"),
        (("2020-01-01", "2026-01-01", None), "from", f"longer than {MAX_DAYS} days"),
        ((None, None, "x" * 201), "eventType", "at most 200 printable characters"),
        ((None, None, "a\x00b"), "eventType", "printable"),
    ],
)
def test_a_field_the_page_cannot_use_is_named_with_the_reason(
    fields: tuple[str | None, str | None, str | None], field: str, reason: str
) -> None:
    """Each refusal says which field and why (the page shows it as a 400, never a 500)."""
    with pytest.raises(QueryError) as caught:
        parse_query(*fields, TODAY)
    assert caught.value.field == field
    assert reason in caught.value.reason
