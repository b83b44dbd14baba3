"""Server-rendered SVG charts for the dashboard, each with its numbers in a table and as CSV.

Pure functions from numbers to markup: no script, no ``style`` attribute or
element (the dashboard's CSP allows neither), colours and lines drawn with SVG
presentation attributes, sizes left to the dashboard's own stylesheet. Every
chart is a ``<figure>``: an ``<svg role="img">`` named by its ``<title>`` and
``<desc>``, the same numbers in a ``<table>`` (inside ``<details>``, so screen
readers and keyboard users reach it without JavaScript), and a link to the
chart's CSV. Each drawn mark carries ``data-series``/``data-category``/
``data-value``, as does its table cell, so a test can hold one against the
other. The markup is well-formed XML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

Format = Callable[[float], str]

WIDTH = 720
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
INK = "#1d2330"
MUTED = "#5a6272"
GRID = "#d9dde4"
TARGET = "#b3261e"
# Told apart by dash and marker as well as by hue (colour-blind readers, greyscale print).
PALETTE = ("#1f5fbf", "#c2570c", "#6b3fa0", "#1e6b3a")
DASHES = ("", "7 4", "2 3", "10 3 2 3")
MAX_X_LABELS = 8


def plain(value: float) -> str:
    """A number as a person writes it: no trailing ``.0``, thousands grouped."""
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def percent(value: float) -> str:
    """``99.5 %``, ``99.95 %``, ``100 %`` (the value is already a percentage), to 0.01."""
    return f"{value:.2f}".rstrip("0").rstrip(".") + " %"


def hours(value: float) -> str:
    """Seconds as hours: ``0.5 h``, ``26 h``; under an hour in minutes (``12 min``)."""
    if value < 3600:
        return f"{round(value / 60)} min"
    return f"{value / 3600:.1f}".rstrip("0").rstrip(".") + " h"


def seconds(value: float) -> str:
    """``0.84 s``, ``2 s``, ``12.3 s``, ``2 min 5 s``."""
    if value >= 120:
        minutes, rest = divmod(round(value), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    shown = f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return shown.rstrip("0").rstrip(".") + " s"


# --- what a chart is made of --------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One named line or set of bars: a value per category (``None``: no data there)."""

    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class Target:
    """A goal drawn across a chart as a dashed red line, labelled ``label`` (``target < 2 s``)."""

    value: float
    label: str


@dataclass(frozen=True)
class Cohort:
    """One funnel row: its label and the count reaching each step."""

    label: str
    counts: tuple[int, ...]


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None
    series: str = ""


@dataclass(frozen=True)
class Table:
    """The numbers behind a chart: a header per column, the first cell of a row names it."""

    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


MISSING = "—"
"""What a table cell shows where a series has no value."""


@dataclass(frozen=True)
class Figure:
    """A rendered chart: ``html`` is the whole ``<figure>``, ``table`` the numbers in it."""

    id: str
    title: str
    html: Markup
    table: Table

    def __html__(self) -> str:
        return str(self.html)


@dataclass(frozen=True)
class Tile:
    """A headline figure with its definition, coloured by ``met`` (``None``: nothing to judge).

    ``target`` is the goal in words (``> 99 %``); without one the tile only informs.
    ``definition`` is a line; ``definition_url`` links to where it is written in full.
    """

    id: str
    label: str
    value: float | None
    fmt: Format
    definition: str
    target: str | None = None
    met: bool | None = None
    detail: str = ""
    definition_url: str = ""  # where the definition is written out in full

    @property
    def state(self) -> str:
        if self.target is None:
            return "info" if self.value is not None else "no-data"
        if self.value is None or self.met is None:
            return "no-data"
        return "met" if self.met else "not-met"

    def __html__(self) -> str:
        return str(tile(self))


# --- markup ------------------------------------------------------------------------


def _attrs(attrs: dict[str, object]) -> str:
    parts = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        parts.append(f' {name.rstrip("_").replace("_", "-")}="{escape(str(value))}"')
    return "".join(parts)


def el(tag: str, attrs: dict[str, object] | None = None, *children: object) -> Markup:
    """An element with escaped attributes and text; children that are ``Markup`` go in as is."""
    inner = "".join(str(c) if isinstance(c, Markup) else str(escape(str(c))) for c in children)
    head = f"<{tag}{_attrs(attrs or {})}"
    # Safe: attribute values and text were escaped above; tag names come from this module.
    return Markup(f"{head}>{inner}</{tag}>" if children else f"{head}/>")  # noqa: S704


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _data_value(value: float) -> str:
    return repr(float(value))


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values spanning ``low``..``high`` (1, 2, 2.5 or 5 times a power of ten)."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    tick = first
    while tick < high + step * 1e-9:
        ticks.append(round(tick, 10))
        tick += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


@dataclass(frozen=True)
class _Frame:
    """The plotting area of a category chart: y maps values, x places categories."""

    categories: int
    low: float
    high: float
    left: float = 64
    right: float = WIDTH - 16
    top: float = 40
    bottom: float = 230
    height: float = 268

    def y(self, value: float) -> float:
        span = self.high - self.low or 1
        clamped = min(max(value, self.low), self.high)
        return self.bottom - (clamped - self.low) / span * (self.bottom - self.top)

    def band(self) -> float:
        return (self.right - self.left) / max(self.categories, 1)

    def x(self, index: int) -> float:
        return self.left + self.band() * (index + 0.5)


def _domain(
    values: Iterable[float], target: Target | None, low: float | None, high: float | None
) -> tuple[float, float, list[float]]:
    known = [v for v in values]
    if target is not None:
        known.append(target.value)
    top = max(known, default=1.0) if high is None else high
    if low is None:  # zoomed: from a round value below the smallest figure (rates near 100 %)
        smallest = min(known, default=0.0)
        step = nice_ticks(smallest, top)[1] - nice_ticks(smallest, top)[0]
        bottom = max(math.floor(smallest / step) * step - step, 0.0)
    else:
        bottom = low
    if top <= bottom:
        top = bottom + 1
    ticks = [t for t in nice_ticks(bottom, top) if t >= bottom]
    if high is None:
        top = ticks[-1]
    return bottom, top, [t for t in ticks if t <= top]


def _text(
    x: float, y: float, text: str, anchor: str = "middle", size: int = 12, **attrs: object
) -> Markup:
    return el(
        "text",
        {
            "x": _num(x),
            "y": _num(y),
            "text-anchor": anchor,
            "font-size": size,
            "font-family": FONT,
            "fill": attrs.pop("fill", INK),
            **attrs,
        },
        text,
    )


def _axes(frame: _Frame, ticks: Sequence[float], fmt: Format, labels: Sequence[str]) -> Markup:
    parts = []
    for tick in ticks:
        y = frame.y(tick)
        parts.append(
            el(
                "line",
                {
                    "x1": _num(frame.left),
                    "x2": _num(frame.right),
                    "y1": _num(y),
                    "y2": _num(y),
                    "stroke": GRID,
                    "stroke-width": 1,
                },
            )
        )
        parts.append(_text(frame.left - 6, y + 4, fmt(tick), anchor="end", size=11, fill=MUTED))
    every = max(math.ceil(len(labels) / MAX_X_LABELS), 1)
    for index, label in enumerate(labels):
        if index % every == 0 or (index == len(labels) - 1 and len(labels) <= MAX_X_LABELS):
            parts.append(_text(frame.x(index), frame.bottom + 18, label, size=11, fill=MUTED))
    parts.append(
        el(
            "line",
            {
                "x1": _num(frame.left),
                "x2": _num(frame.right),
                "y1": _num(frame.bottom),
                "y2": _num(frame.bottom),
                "stroke": MUTED,
                "stroke-width": 1,
            },
        )
    )
    return el("g", {"class": "axes", "aria-hidden": "true"}, *parts)


def _target_line(frame: _Frame, target: Target) -> Markup:
    y = frame.y(target.value)
    return el(
        "g",
        {"class": "target", "data-value": _data_value(target.value)},
        el(
            "line",
            {
                "x1": _num(frame.left),
                "x2": _num(frame.right),
                "y1": _num(y),
                "y2": _num(y),
                "stroke": TARGET,
                "stroke-width": 2,
                "stroke-dasharray": "8 4",
            },
        ),
        _text(
            frame.right - 4,
            y - 6,
            target.label,
            "end",
            11,
            fill=TARGET,
            font_weight="600",
            # A white outline keeps the label readable over a bar or a line.
            stroke="#fff",
            stroke_width=3,
            paint_order="stroke",
        ),
    )


def _legend(series: Sequence[Series], bars: bool) -> Markup:
    items = []
    x = 64.0
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        if bars:
            swatch = el("rect", {"x": _num(x), "y": 8, "width": 14, "height": 12, "fill": colour})
        else:
            swatch = el(
                "line",
                {
                    "x1": _num(x),
                    "x2": _num(x + 22),
                    "y1": 14,
                    "y2": 14,
                    "stroke": colour,
                    "stroke-width": 3,
                    "stroke-dasharray": DASHES[index % len(DASHES)] or None,
                },
            )
        offset = 20 if bars else 28
        items.append(swatch)
        items.append(_text(x + offset, 18, one.name, anchor="start"))
        x += offset + 8 * len(one.name) + 24
    return el("g", {"class": "legend", "aria-hidden": "true"}, *items)


def _svg(chart_id: str, title: str, description: str, height: float, *body: Markup) -> Markup:
    return el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "chart-svg",
            "role": "img",
            "aria-labelledby": f"{chart_id}-title {chart_id}-desc",
            "viewBox": f"0 0 {WIDTH} {_num(height)}",
            "width": WIDTH,
            "height": _num(height),
            "preserveAspectRatio": "xMinYMin meet",
        },
        el("title", {"id": f"{chart_id}-title"}, title),
        el("desc", {"id": f"{chart_id}-desc"}, description),
        *body,
    )


def _table_html(chart_id: str, table: Table) -> Markup:
    head = el(
        "thead",
        None,
        el("tr", None, *(el("th", {"scope": "col"}, name) for name in table.columns)),
    )
    rows = []
    for row in table.rows:
        first, *rest = row
        cells = [el("th", {"scope": "row"}, first.text)]
        for cell in rest:
            attrs: dict[str, object] = {"data-label": cell.series or None}
            if cell.value is not None:
                attrs |= {"data-series": cell.series, "data-value": _data_value(cell.value)}
            cells.append(el("td", attrs, cell.text))
        rows.append(el("tr", None, *cells))
    body = el("tbody", None, *rows) if rows else el("tbody", None)
    return el(
        "details",
        {"class": "chart-table"},
        el(
            "summary",
            None,
            "Numbers behind the chart",
            el("span", {"class": "visually-hidden"}, f": {table.caption}"),
        ),
        el(
            "div",
            {"class": "table-wrap"},
            el(
                "table", {"id": f"{chart_id}-table"}, el("caption", None, table.caption), head, body
            ),
        ),
    )


def _figure(
    chart_id: str,
    title: str,
    svg: Markup,
    table: Table,
    csv_url: str | None,
    caption: str,
) -> Figure:
    links = (
        el(
            "a",
            {"href": csv_url, "class": "csv"},
            "Download CSV",
            el("span", {"class": "visually-hidden"}, f" of {title}"),
        )
        if csv_url
        else Markup("")
    )
    html = el(
        "figure",
        {"class": "chart", "id": chart_id},
        svg,
        el("figcaption", None, caption, Markup(" ") if csv_url else "", links),
        _table_html(chart_id, table),
    )
    return Figure(id=chart_id, title=title, html=html, table=table)


def _no_data(frame: _Frame, shown: bool) -> Markup:
    if shown:
        return Markup("")
    middle = (frame.top + frame.bottom) / 2
    return _text((frame.left + frame.right) / 2, middle, "No data in this period", fill=MUTED)


def _series_table(
    caption: str, first: str, categories: Sequence[str], series: Sequence[Series], fmt: Format
) -> Table:
    rows = []
    for index, category in enumerate(categories):
        cells = [Cell(category)]
        for one in series:
            value = one.values[index]
            cells.append(Cell(MISSING if value is None else fmt(value), value, series=one.name))
        rows.append(tuple(cells))
    return Table(caption, (first, *(one.name for one in series)), tuple(rows))


# --- the charts ---------------------------------------------------------------------


def line_chart(
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    fmt: Format = plain,
    target: Target | None = None,
    low: float | None = 0.0,
    high: float | None = None,
    first_column: str = "Day",
    csv_url: str | None = None,
    caption: str = "",
) -> Figure:
    """Lines over categories (days), one per series, with the target as a dashed red line.

    ``low=None`` zooms the value axis to just below the smallest figure (a rate
    that lives between 97 and 100 %); a gap in a series breaks its line.
    """
    _check(categories, series)
    values = [v for one in series for v in one.values if v is not None]
    bottom, top, ticks = _domain(values, target, low, high)
    frame = _Frame(len(categories), bottom, top)
    # Dots small enough not to hide the lines of a year's days.
    radius = 4 if len(categories) <= 31 else 2.5 if len(categories) <= 92 else 1.5
    marks = []
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        points = []
        for position, value in enumerate(one.values):
            if value is None:
                runs.append([])
                continue
            x, y = frame.x(position), frame.y(value)
            runs[-1].append((x, y))
            points.append(
                el(
                    "circle",
                    {
                        "class": "mark",
                        "cx": _num(x),
                        "cy": _num(y),
                        "r": radius,
                        "fill": colour,
                        "data-series": one.name,
                        "data-category": categories[position],
                        "data-value": _data_value(value),
                    },
                )
            )
        paths = [
            el(
                "polyline",
                {
                    "points": " ".join(f"{_num(x)},{_num(y)}" for x, y in run),
                    "fill": "none",
                    "stroke": colour,
                    "stroke-width": 2,
                    "stroke-linejoin": "round",
                    "stroke-dasharray": DASHES[index % len(DASHES)] or None,
                },
            )
            for run in runs
            if len(run) > 1
        ]
        marks.append(el("g", {"class": "series", "data-series": one.name}, *paths, *points))
    svg = _svg(
        chart_id,
        title,
        description,
        frame.height,
        _legend(series, bars=False),
        _axes(frame, ticks, fmt, categories),
        *marks,
        _target_line(frame, target) if target else Markup(""),
        _no_data(frame, bool(values)),
    )
    table = _series_table(title, first_column, categories, series, fmt)
    return _figure(chart_id, title, svg, table, csv_url, caption or description)


def bar_chart(
    chart_id: str,
    title: str,
    description: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    fmt: Format = plain,
    target: Target | None = None,
    first_column: str = "",
    csv_url: str | None = None,
    caption: str = "",
) -> Figure:
    """Bars grouped by category (per day, per event type, per weekday), one colour a series."""
    _check(categories, series)
    values = [v for one in series for v in one.values if v is not None]
    bottom, top, ticks = _domain(values, target, 0.0, None)
    frame = _Frame(len(categories), bottom, top)
    band = frame.band()
    inner = band * 0.8
    width = inner / max(len(series), 1)
    groups = []
    for index, one in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        bars = []
        for position, value in enumerate(one.values):
            if value is None:
                continue
            x = frame.left + band * position + (band - inner) / 2 + width * index
            y = frame.y(value)
            bars.append(
                el(
                    "rect",
                    {
                        "class": "mark",
                        "x": _num(x),
                        "y": _num(y),
                        "width": _num(max(width - 1, 1)),
                        "height": _num(frame.bottom - y),
                        "fill": colour,
                        "data-series": one.name,
                        "data-category": categories[position],
                        "data-value": _data_value(value),
                    },
                )
            )
        groups.append(el("g", {"class": "series", "data-series": one.name}, *bars))
    svg = _svg(
        chart_id,
        title,
        description,
        frame.height,
        _legend(series, bars=True),
        _axes(frame, ticks, fmt, categories),
        *groups,
        _target_line(frame, target) if target else Markup(""),
        _no_data(frame, any(values)),
    )
    table = _series_table(title, first_column or "Category", categories, series, fmt)
    return _figure(chart_id, title, svg, table, csv_url, caption or description)


FUNNEL_ROW = 52
FUNNEL_LABEL = 96


def funnel_chart(
    chart_id: str,
    title: str,
    description: str,
    steps: Sequence[str],
    cohorts: Sequence[Cohort],
    *,
    first_column: str = "Cohort",
    extra: Sequence[Series] = (),
    extra_fmt: Format = plain,
    csv_url: str | None = None,
    caption: str = "",
) -> Figure:
    """One funnel row per cohort: a bar per step, as wide as its share of the cohort's first
    step, with the count and the conversion from the step before.

    ``extra`` series (a value per cohort, e.g. the time to conversion) are added to
    the table and the CSV, not drawn.
    """
    for cohort in cohorts:
        if len(cohort.counts) != len(steps):
            raise ValueError(f"cohort {cohort.label!r} has {len(cohort.counts)} counts")
    _check([c.label for c in cohorts], extra)
    longest = max((len(cohort.label) for cohort in cohorts), default=0)
    label_width = min(max(FUNNEL_LABEL, 7 * longest + 16), 280)
    column = (WIDTH - label_width - 16) / max(len(steps), 1)
    parts = [
        _text(label_width + column * (i + 0.5), 20, step, size=12, font_weight="600")
        for i, step in enumerate(steps)
    ]
    for row, cohort in enumerate(cohorts):
        top = 32 + row * FUNNEL_ROW
        parts.append(_text(label_width - 8, top + 20, cohort.label, anchor="end"))
        base = cohort.counts[0] if cohort.counts else 0
        for i, count in enumerate(cohort.counts):
            width = (column - 12) * (count / base if base else 0)
            middle = label_width + column * (i + 0.5)
            parts.append(
                el(
                    "rect",
                    {
                        "class": "mark",
                        "x": _num(middle - width / 2),
                        "y": _num(top + 4),
                        "width": _num(width),
                        "height": 22,
                        "rx": 3,
                        "fill": PALETTE[0],
                        "fill-opacity": _num(1 - 0.18 * i),
                        "data-series": steps[i],
                        "data-category": cohort.label,
                        "data-value": _data_value(count),
                    },
                )
            )
            note = plain(count)
            if i:
                rate = conversion(count, cohort.counts[i - 1])
                note += f" · {percent(rate)}" if rate is not None else " · –"
            parts.append(_text(middle, top + 42, note, size=11, fill=MUTED))
    height = 32 + FUNNEL_ROW * max(len(cohorts), 1) + 8
    if not cohorts:
        parts.append(_text(WIDTH / 2, 60, "No bookings in this period", fill=MUTED))
    svg = _svg(chart_id, title, description, height, *parts)
    columns = [first_column]
    for i, step in enumerate(steps):
        columns.append(step)
        if i:
            columns.append(f"{steps[i - 1]} → {step} (%)")
    columns.extend(one.name for one in extra)
    rows = []
    for position, cohort in enumerate(cohorts):
        cells = [Cell(cohort.label)]
        for i, count in enumerate(cohort.counts):
            cells.append(Cell(plain(count), float(count), series=steps[i]))
            if i:
                rate = conversion(count, cohort.counts[i - 1])
                label = f"{steps[i - 1]} → {steps[i]} (%)"
                cells.append(Cell(MISSING if rate is None else percent(rate), rate, series=label))
        for one in extra:
            value = one.values[position]
            text = MISSING if value is None else extra_fmt(value)
            cells.append(Cell(text, value, series=one.name))
        rows.append(tuple(cells))
    table = Table(title, tuple(columns), tuple(rows))
    return _figure(chart_id, title, svg, table, csv_url, caption or description)


def conversion(count: int, previous: int) -> float | None:
    """The share of the step before that reached this one, in percent, to 0.1."""
    return round(100 * count / previous, 1) if previous else None


def tile(item: Tile) -> Markup:
    """A headline figure: value, target and whether it is met (in words, not colour alone)."""
    shown = "no data" if item.value is None else item.fmt(item.value)
    verdict = {"met": "met", "not-met": "not met", "no-data": "nothing to judge yet", "info": ""}
    parts: list[object] = [
        el("h3", {"class": "tile-label", "id": f"{item.id}-label"}, item.label),
        el(
            "p",
            {
                "class": "tile-value",
                "data-value": None if item.value is None else _data_value(item.value),
            },
            shown,
        ),
    ]
    if item.target is not None:
        parts.append(
            el(
                "p",
                {"class": "tile-target"},
                f"Target: {item.target} · ",
                el("strong", {"class": "verdict"}, verdict[item.state]),
            )
        )
    if item.detail:
        parts.append(el("p", {"class": "tile-detail"}, item.detail))
    more = (
        el(
            "a",
            {"href": item.definition_url},
            "Full definition",
            el("span", {"class": "visually-hidden"}, f" of {item.label}"),
        )
        if item.definition_url
        else ""
    )
    parts.append(el("p", {"class": "definition"}, item.definition, " " if more else "", more))
    return el(
        "section",
        {
            "class": f"tile {item.state}",
            "id": item.id,
            "aria-labelledby": f"{item.id}-label",
            "data-state": item.state,
        },
        *parts,
    )


def _check(categories: Sequence[str], series: Sequence[Series]) -> None:
    for one in series:
        if len(one.values) != len(categories):
            raise ValueError(
                f"series {one.name!r} has {len(one.values)} values for {len(categories)} categories"
            )
