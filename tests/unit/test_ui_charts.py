"""The dashboard's SVG charts: well-formed, CSP-safe, targets drawn, tables equal to the marks."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.ui import charts
from adapter.ui.charts import Cohort, Figure, Series, Target, Tile
from adapter.ui.insights import CHART_METRIC, figures, tiles
from tests.unit.insights_sample import sample_report

SVG = "{http://www.w3.org/2000/svg}"


def xml(markup: object) -> ET.Element:
    return ET.fromstring(str(markup))  # noqa: S314 - our own markup, parsed to check it


def parse(figure: Figure) -> ET.Element:
    return xml(figure.html)


def marks(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if "mark" in (e.get("class") or "").split()]


def table_values(root: ET.Element) -> dict[tuple[str, str], tuple[float, str]]:
    """(row header, column's series) -> (data-value, shown text) for every cell with a number."""
    found = {}
    for row in root.iter("tr"):
        header = row.find("th[@scope='row']")
        if header is None:
            continue
        for cell in row.iter("td"):
            if cell.get("data-value") is not None:
                key = (header.text or "", cell.get("data-series") or "")
                found[key] = (float(cell.get("data-value") or "nan"), cell.text or "")
    return found


def target_y(root: ET.Element) -> float:
    (group,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "target"]
    line = group.find(f"{SVG}line")
    assert line is not None
    assert line.get("y1") == line.get("y2")
    return float(line.get("y1") or "nan")


def mark_y(mark: ET.Element) -> float:
    return float(mark.get("cy") or mark.get("y") or "nan")


def test_every_chart_of_a_report_is_wellformed_xml_with_no_script_or_style() -> None:
    """Each figure parses as XML; no <script>, no <style>, no style= or on*= attribute (CSP)."""
    for figure in figures(sample_report()).values():
        root = parse(figure)
        for element in root.iter():
            tag = element.tag.split("}")[-1]
            assert tag not in ("script", "style", "foreignObject"), figure.id
            for name in element.attrib:
                assert name != "style", (figure.id, element.tag)
                assert not name.startswith("on"), (figure.id, element.tag, name)
                assert "javascript:" not in element.attrib[name]


def test_each_svg_is_an_image_named_by_its_title_and_desc() -> None:
    """role=img, aria-labelledby pointing at its own <title> and <desc>, which say something."""
    for figure in figures(sample_report()).values():
        root = parse(figure)
        svg = root.find(f"{SVG}svg")
        assert svg is not None
        assert svg.get("role") == "img"
        title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
        assert title is not None
        assert desc is not None
        assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
        assert title.text == figure.title
        assert desc.text
        assert len(desc.text) > 20
        assert root.find("details/summary") is not None
        table = root.find("details/div/table")
        assert table is not None
        assert table.find("caption") is not None


def test_the_table_holds_exactly_the_numbers_the_chart_draws() -> None:
    """Every mark has its table cell with the same value (and shown with the chart's format),
    and every numeric cell of a drawn series has its mark."""
    for figure in figures(sample_report()).values():
        root = parse(figure)
        cells = table_values(root)
        drawn = {}
        for mark in marks(root):
            key = (mark.get("data-category") or "", mark.get("data-series") or "")
            drawn[key] = float(mark.get("data-value") or "nan")
            assert key in cells, (figure.id, key)
            assert cells[key][0] == drawn[key], (figure.id, key)
        series = {key[1] for key in drawn}
        expected = {key: value for key, (value, _) in cells.items() if key[1] in series}
        assert expected == drawn, figure.id
        assert drawn, figure.id


def test_the_shown_numbers_use_the_charts_format() -> None:
    """The success-rate table reads 98 %, the sync table 0.5 s, a missing day an em dash."""
    charts_ = figures(sample_report())
    rate = table_values(parse(charts_["webhook-rate"]))
    assert rate[("2026-10-02", "Success rate")] == (98.0, "98 %")
    assert rate[("2026-10-04", "Success rate")] == (99.5, "99.5 %")
    sync = table_values(parse(charts_["sync-time"]))
    assert sync[("2026-10-02", "p50")] == (0.5, "0.5 s")
    assert sync[("2026-10-05", "p99")] == (6.5, "6.5 s")
    cells = [td.text for td in parse(charts_["sync-time"]).iter("td")]
    assert cells.count("—") == 4  # 2026-10-03: no synced event, four series


def test_the_target_line_is_drawn_where_the_target_is() -> None:
    """Marks above the target value sit above the red line, marks below it below (SVG y grows
    downwards); the line carries the target's value and label."""
    charts_ = figures(sample_report())
    for chart_id, target in (
        ("webhook-rate", 99.0),
        ("sync-time", 2.0),
        ("follow-ups", 100.0),
        ("response-owners", 24.0),
    ):
        root = parse(charts_[chart_id])
        y = target_y(root)
        group = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "target")
        assert float(group.get("data-value") or "nan") == target
        text = group.find(f"{SVG}text")
        assert text is not None
        assert (text.text or "").startswith("target")
        for mark in marks(root):
            value = float(mark.get("data-value") or "nan")
            top = mark_y(mark)
            if value > target:
                assert top < y, (chart_id, mark.attrib)
            elif value < target:
                assert top > y, (chart_id, mark.attrib)
            else:
                assert top == pytest.approx(y, abs=0.01), (chart_id, mark.attrib)


def test_bar_heights_are_proportional_to_their_values() -> None:
    """Bars start at zero: height / value is the same for every bar of a chart."""
    for chart_id in ("webhook-deliveries", "cancellations-type", "cancellations-weekday"):
        bars = [
            (float(m.get("data-value") or "nan"), float(m.get("height") or "nan"))
            for m in marks(parse(figures(sample_report())[chart_id]))
        ]
        top_value, top_height = max(bars)
        for value, height in bars:
            assert height == pytest.approx(value / top_value * top_height, abs=0.02), chart_id


def test_a_day_without_data_breaks_the_line() -> None:
    """2026-10-03 has no deliveries: the success rate is two lines, not one through a zero."""
    root = parse(figures(sample_report())["webhook-rate"])
    series = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "series")
    assert len(series.findall(f"{SVG}polyline")) == 2
    assert len(series.findall(f"{SVG}circle")) == 4


def test_the_funnel_draws_each_step_as_a_share_of_its_cohort_with_conversions() -> None:
    """Bar widths follow count / the cohort's bookings; the table has each step's conversion."""
    root = parse(figures(sample_report())["funnel"])
    widths: dict[str, dict[str, float]] = {}
    for mark in marks(root):
        widths.setdefault(mark.get("data-category") or "", {})[mark.get("data-series") or ""] = (
            float(mark.get("width") or "nan")
        )
    full = widths["All"]["Bookings"]
    assert widths["All"]["Meetings held"] == pytest.approx(full * 23 / 34, abs=0.01)
    assert widths["2026-10 · 30min-consultation"]["Won"] == pytest.approx(full * 5 / 20, abs=0.01)
    assert widths["2026-10 · workshop"]["Meetings held"] == 0
    cells = table_values(root)
    assert cells[("All", "Consultations → Won (%)")] == (38.1, "38.1 %")
    assert cells[("2026-09 · workshop", "Bookings → Meetings held (%)")] == (80.0, "80 %")
    assert cells[("2026-09 · workshop", "Median days to won")] == (4.5, "4.5 d")
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "23 · 67.6 %" in texts


def test_each_chart_links_to_the_csv_of_the_metric_it_draws() -> None:
    """The link carries the report's period (``to`` inclusive) and the metric's name."""
    charts_ = figures(sample_report(event_type="workshop"))
    for chart_id, metric in CHART_METRIC.items():
        root = parse(charts_[chart_id])
        link = next(a for a in root.iter("a") if a.get("class") == "csv")
        assert link.get("href") == (
            f"/ui/insights.csv?metric={metric}&from=2026-10-01&to=2026-10-05&eventType=workshop"
        )
        assert "".join(link.itertext()) == f"Download CSV of {charts_[chart_id].title}"
    assert set(charts_) == set(CHART_METRIC)


def test_text_is_escaped_and_stays_wellformed() -> None:
    """An event type with markup in it is shown as text, never as markup."""
    hostile = '<script>alert("x")</script> & co'
    figure = charts.bar_chart(
        "hostile", "Hostile", "A & B <b>", [hostile], [Series(hostile, (3.0,))]
    )
    root = parse(figure)
    assert not list(root.iter("script"))
    assert not list(root.iter(f"{SVG}script"))
    assert hostile in str(ET.tostring(root, encoding="unicode", method="text"))


def test_an_empty_period_says_so_and_still_renders() -> None:
    """No categories: a 'No data in this period' note, an empty table, valid XML."""
    root = parse(charts.line_chart("empty", "Empty", "Nothing here.", [], [Series("x", ())]))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "No data in this period" in texts
    assert not marks(root)
    funnel = parse(charts.funnel_chart("f", "Funnel", "None.", ["a", "b"], []))
    assert "No bookings in this period" in [t.text for t in funnel.iter(f"{SVG}text")]


def test_a_series_of_the_wrong_length_is_refused() -> None:
    """Categories and values must line up; the error names the series."""
    with pytest.raises(ValueError, match="'p50' has 1 values for 2 categories"):
        charts.line_chart("x", "X", "X.", ["a", "b"], [Series("p50", (1.0,))])
    with pytest.raises(ValueError, match="cohort 'All' has 1 counts"):
        charts.funnel_chart("x", "X", "X.", ["a", "b"], [Cohort("All", (1,))])


@pytest.mark.parametrize(
    ("value", "met", "target", "state", "verdict"),
    [
        (99.5, True, "> 99 %", "met", "met"),
        (98.0, False, "> 99 %", "not-met", "not met"),
        (None, None, "> 99 %", "no-data", "nothing to judge yet"),
        (38.1, None, None, "info", None),
    ],
)
def test_a_tile_is_coloured_and_worded_by_its_target(
    value: float | None, met: bool | None, target: str | None, state: str, verdict: str | None
) -> None:
    """The class colours it; the verdict says it in words too (not colour alone)."""
    root = xml(
        charts.tile(Tile("t", "Rate", value, charts.percent, "How it is counted.", target, met))
    )
    assert root.get("class") == f"tile {state}"
    found = root.find(".//strong[@class='verdict']")
    assert (found.text if found is not None else None) == verdict
    assert "How it is counted." in "".join(root.itertext())


def test_the_sample_reports_tiles_follow_the_reports_judgement() -> None:
    """The tiles take met / not met from the report, not from their own arithmetic."""
    states = {tile.id: tile.state for tile in tiles(sample_report())}
    assert states == {
        "tile-webhook": "not-met",
        "tile-sync": "met",
        "tile-duplicates": "not-met",
        "tile-follow-ups": "not-met",
        "tile-response": "met",
        "tile-conversion": "info",
    }


@given(
    low=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    span=st.floats(min_value=1e-3, max_value=1e6, allow_nan=False),
)
def test_nice_ticks_cover_the_range_in_equal_round_steps(low: float, span: float) -> None:
    """Ticks start at or below the low end, end at or above the high end, equally spaced."""
    ticks = charts.nice_ticks(low, low + span)
    assert ticks[0] <= low + 1e-9 * max(1, low)
    assert ticks[-1] >= (low + span) * (1 - 1e-9)
    steps = {round(b - a, 6) for a, b in itertools.pairwise(ticks)}
    assert len(steps) <= 2 or max(steps) - min(steps) < 1e-6 * max(steps)
    assert 2 <= len(ticks) <= 12


@pytest.mark.parametrize(
    ("fmt", "value", "shown"),
    [
        (charts.percent, 99.5, "99.5 %"),
        (charts.percent, 100.0, "100 %"),
        (charts.percent, 99.954, "99.95 %"),
        (charts.seconds, 0.5, "0.5 s"),
        (charts.seconds, 8.0, "8 s"),
        (charts.seconds, 12.34, "12.3 s"),
        (charts.seconds, 125.0, "2 min 5 s"),
        (charts.hours, 5 * 3600.0, "5 h"),
        (charts.hours, 600.0, "10 min"),
        (charts.plain, 1234.0, "1,234"),
    ],
)
def test_numbers_are_written_as_people_write_them(
    fmt: Callable[[float], str], value: float, shown: str
) -> None:
    """Formats used on the axes, tables and tiles."""
    assert fmt(value) == shown


def test_target_is_only_drawn_when_given() -> None:
    """A chart without a target has no target line."""
    root = parse(charts.bar_chart("b", "B", "B.", ["x"], [Series("n", (1.0,))]))
    assert not [g for g in root.iter(f"{SVG}g") if g.get("class") == "target"]
    with_target = parse(
        charts.bar_chart("b", "B", "B.", ["x"], [Series("n", (1.0,))], target=Target(2, "t"))
    )
    assert target_y(with_target) < float(marks(with_target)[0].get("y") or "nan")


def test_a_years_charts_stay_well_formed() -> None:
    """366 days, four series: every chart and tile is drawn, one mark per day with syncs
    (their speed is measured by ``bench/insights_seed.py``, not here)."""
    report = sample_report(days=366)
    drawn = figures(report)
    for item in tiles(report):
        item.__html__()
    root = parse(drawn["sync-time"])
    assert len(marks(root)) == 4 * 365  # one day without syncs
    assert all(m.get("r") == "1.5" for m in marks(root))
