"""Insights' small parts: the period from user input, CSV cells, nearest-rank percentiles."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from adapter.insights.days import percentile_ms
from adapter.insights.period import FilterError, parse_filters
from adapter.insights.tabular import _cell

TODAY = date(2026, 11, 29)


def test_period_defaults_to_the_last_30_days_both_ends_included() -> None:
    """No dates: the 30 days to today; ``end`` is exclusive (the day after ``to``)."""
    filters = parse_filters(None, None, None, today=TODAY)
    assert (filters.start, filters.end, filters.event_type) == (
        date(2026, 10, 31),
        date(2026, 11, 30),
        None,
    )
    one = parse_filters("2026-01-01", "2026-01-01", " workshop ", today=TODAY)
    assert (one.start, one.end, one.event_type) == (
        date(2026, 1, 1),
        date(2026, 1, 2),
        "workshop",
    )
    assert parse_filters("2025-01-01", "2025-12-31", None, today=TODAY).end == date(2026, 1, 1)


@pytest.mark.parametrize(
    ("start", "end", "kind", "field"),
    [
        ("2026-02-30", None, None, "from"),
        (None, "29/11/2026", None, "to"),
        ("2026-05-02", "2026-05-01", None, "from"),
        ("2024-01-01", "2025-01-02", None, "from"),
        (None, None, "x" * 201, "eventType"),
        (None, None, "a\x00b", "eventType"),
        ("0001-01-01", "0001-01-05", None, "to"),
        (None, "9999-12-31", None, "to"),
    ],
)
def test_bad_input_names_its_field(
    start: str | None, end: str | None, kind: str | None, field: str
) -> None:
    """Each refusal names the field the caller must fix."""
    with pytest.raises(FilterError) as caught:
        parse_filters(start, end, kind, today=TODAY)
    assert caught.value.field == field


def test_csv_cells_a_spreadsheet_would_run_are_quoted() -> None:
    """=, +, -, @ at the start of a text cell get a leading quote; numbers stay numbers."""
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _cell("@sum") == "'@sum"
    assert _cell("workshop") == "workshop"
    assert _cell(-3) == -3


def test_percentiles_are_nearest_rank_over_the_histogram() -> None:
    """p50 of 1..10 ms is 5 ms, p95 10 ms, p99 10 ms; an empty histogram has none."""
    histogram = Counter(range(1, 11))
    assert [percentile_ms(histogram, p) for p in (0.5, 0.95, 0.99)] == [5, 10, 10]
    assert percentile_ms(Counter({7: 100}), 0.5) == 7
    assert percentile_ms(Counter(), 0.5) is None
