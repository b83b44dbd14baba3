"""The dashboard's Insights page: the success metrics and the funnel (``adapter.insights``) as
headline figures and charts, each chart's numbers also as CSV.

The period and event type come from a GET form (no JavaScript needed); the
report is computed by ``adapter.insights.compute.build_report`` and turned into
figures here by pure functions (``figures``, ``tiles``). Each chart links to the CSV of
the metric it draws: ``/ui/insights.csv`` serves ``adapter.insights.tabular``'s table,
the same as ``GET /api/insights.csv``, behind the dashboard's login.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import Request, status
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from adapter.api.deps import ServicesDep
from adapter.insights.compute import build_report
from adapter.insights.period import FilterError, parse_filters
from adapter.insights.report import WEEKDAYS, Filters, FunnelRow, Report
from adapter.insights.tabular import METRICS, to_csv
from adapter.timeutil import utcnow
from adapter.ui.charts import (
    Cohort,
    Figure,
    Series,
    Target,
    Tile,
    bar_chart,
    funnel_chart,
    hours,
    line_chart,
    percent,
    plain,
    seconds,
)
from adapter.ui.views import Page, _logged_in, _secure, _to_login, _unreadable, router

if TYPE_CHECKING:
    from adapter.services import Services

STEP_NAMES = {
    "bookings": "Bookings",
    "held": "Meetings held",
    "consultations": "Consultations",
    "won": "Won",
}
CHART_METRIC = {
    "webhook-rate": "webhook",
    "webhook-deliveries": "webhook",
    "sync-time": "sync",
    "funnel": "funnel",
    "cancellations-type": "cancellations",
    "cancellations-weekday": "cancellations",
    "follow-ups": "followUps",
    "response-owners": "response",
}
"""Each chart's CSV: the table of ``GET /api/insights?format=csv&metric=…`` it draws from."""
LIST_SHOWN = 10
"""Rows of a list (refused deliveries, missing follow-ups, duplicates) shown on the page; the
rest are in the list's CSV."""


@dataclass(frozen=True)
class Query:
    """The form's choice: ``first``..``last`` inclusive (UTC days) and an event type or all."""

    filters: Filters

    @property
    def first(self) -> date:
        return self.filters.start

    @property
    def last(self) -> date:
        return self.filters.end - timedelta(days=1)

    @property
    def event_type(self) -> str | None:
        return self.filters.event_type

    def params(self) -> str:
        """The query string that brings this choice back (for the CSV links)."""
        fields = {"from": self.first.isoformat(), "to": self.last.isoformat()}
        if self.event_type:
            fields["eventType"] = self.event_type
        return urlencode(fields)

    def csv_url(self, metric: str) -> str:
        return f"/ui/insights.csv?metric={metric}&{self.params()}"


def parse_query(
    raw_from: str | None, raw_to: str | None, raw_event_type: str | None, today: date
) -> Query:
    """The period and event type from the form, by the API's rules (``parse_filters``): the
    last 30 days and every event type by default; a bad field raises ``FilterError``."""
    return Query(
        parse_filters(
            (raw_from or "").strip() or None,
            (raw_to or "").strip() or None,
            raw_event_type,
            today=today,
        )
    )


# --- the report as pictures -----------------------------------------------------------


def _share(value: float | None) -> float | None:
    return None if value is None else value * 100


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value / 3600, 2)


def tiles(report: Report) -> list[Tile]:
    """The headline figures, each judged against the booking design's target."""
    web, sync, dup = report.webhook, report.sync, report.duplicates
    follow, response, funnel = report.follow_ups, report.response, report.funnel
    refused = ", ".join(f"{reason} {count}" for reason, count in web.refused.items())
    stats = sync.overall
    spread = " · ".join(
        f"{name} {seconds(value)}"
        for name, value in (("p50", stats.p50), ("p95", stats.p95), ("p99", stats.p99))
        if value is not None
    )
    checked = (
        f"Checked {dup.checked_at:%Y-%m-%d %H:%M} UTC on the {dup.backend} CRM."
        if dup.checked_at
        else "Not checked yet."
    )
    if dup.error:
        checked += f" The last check failed: {dup.error}"
    overall = response.overall
    within = (
        f"{percent(overall.share_under_24h * 100)} answered within 24 h; "
        if overall.share_under_24h is not None
        else ""
    )
    won = funnel.totals.conversion.get("won")
    return [
        Tile(
            "tile-webhook",
            "Webhook success rate",
            _share(web.success_rate),
            percent,
            "Accepted deliveries / all authenticated deliveries.",
            web.target.text,
            web.target.met,
            f"{web.accepted:,} of {web.deliveries:,} deliveries accepted; refused: {refused}; "
            f"{web.pending:,} still pending.",
            definition_url="#def-webhook",
        ),
        Tile(
            "tile-sync",
            "Average sync time",
            stats.mean,
            seconds,
            "Receipt → CRM write committed, the mean over synced events.",
            sync.target.text,
            sync.target.met,
            f"{spread} over {stats.count:,} synced events." if stats.count else "",
            definition_url="#def-sync",
        ),
        Tile(
            "tile-duplicates",
            "Duplicate records",
            float(dup.count),
            plain,
            "Extra records sharing an identity the contract makes unique.",
            dup.target.text,
            dup.target.met,
            checked,
            definition_url="#def-duplicates",
        ),
        Tile(
            "tile-follow-ups",
            "Follow-ups scheduled",
            _share(follow.share),
            percent,
            "Bookings whose mapped tasks all exist in the CRM / bookings.",
            follow.target.text,
            follow.target.met,
            f"{follow.complete:,} of {follow.bookings:,} bookings have every mapped task.",
            definition_url="#def-follow-ups",
        ),
        Tile(
            "tile-response",
            "Response time to new leads (median)",
            overall.median,
            hours,
            "Booking received → first sales action in the CRM, the median.",
            response.target.text,
            response.target.met,
            f"{within}{overall.answered:,} of {overall.bookings:,} bookings answered.",
            definition_url="#def-response",
        ),
        Tile(
            "tile-conversion",
            "Consultation → client",
            _share(won),
            percent,
            "Leads won / consultations held: the funnel's last step.",
            detail=(
                f"{funnel.totals.won:,} won of {funnel.totals.consultations:,} consultations "
                f"and {funnel.totals.bookings:,} bookings."
            ),
            definition_url="#def-funnel",
        ),
    ]


def _cohort_label(row: FunnelRow, by_type: bool) -> str:
    return f"{row.month} · {row.event_type}" if by_type else row.month


def figures(report: Report) -> dict[str, Figure]:
    """Every chart of the page by id, each linking to the CSV of the metric it draws."""
    query = Query(report.filters)

    def csv(chart_id: str) -> str:
        return query.csv_url(CHART_METRIC[chart_id])

    web, sync, funnel, cancels = report.webhook, report.sync, report.funnel, report.cancellations
    days = [d.day.isoformat() for d in web.days]
    charts = [
        line_chart(
            "webhook-rate",
            "Webhook success rate per day",
            "Accepted deliveries as a share of all authenticated deliveries received that day, "
            f"against the target {web.target.text}.",
            days,
            [Series("Success rate", tuple(_share(d.success_rate) for d in web.days))],
            fmt=percent,
            target=Target(web.target.value * 100, f"target {web.target.text}"),
            low=None,
            high=100.0,
            csv_url=csv("webhook-rate"),
        ),
        bar_chart(
            "webhook-deliveries",
            "Deliveries per day",
            "Deliveries per day: accepted, refused (invalid, quarantined or dead) and pending.",
            days,
            [
                Series("Accepted", tuple(float(d.accepted) for d in web.days)),
                Series("Refused", tuple(float(sum(d.refused.values())) for d in web.days)),
                Series("Pending", tuple(float(d.pending) for d in web.days)),
            ],
            first_column="Day",
            csv_url=csv("webhook-deliveries"),
        ),
    ]
    sync_days = [d.day.isoformat() for d in sync.days]
    charts.append(
        line_chart(
            "sync-time",
            "Sync time per day",
            "Seconds from receipt to the CRM write committed: median, mean, 95th and 99th "
            f"percentile per day, against the target {sync.target.text} (on the mean).",
            sync_days,
            [
                Series(name, tuple(getattr(d.stats, attr) for d in sync.days))
                for name, attr in (("p50", "p50"), ("mean", "mean"), ("p95", "p95"), ("p99", "p99"))
            ],
            fmt=seconds,
            target=Target(sync.target.value, f"target: mean {sync.target.text}"),
            csv_url=csv("sync-time"),
        )
    )
    by_type = report.filters.event_type is None and len({r.event_type for r in funnel.rows}) > 1
    rows = [funnel.totals, *funnel.rows]
    charts.append(
        funnel_chart(
            "funnel",
            "Funnel by booking month",
            "For each month of booking (its cohort): bookings, meetings held, consultations and "
            "leads won. Each bar is as wide as its share of the cohort's bookings; under it, "
            "its count · the share of the step before that reached it.",
            [STEP_NAMES.get(step, step) for step in funnel.steps],
            [
                Cohort(
                    "All" if row is funnel.totals else _cohort_label(row, by_type),
                    tuple(int(getattr(row, step)) for step in funnel.steps),
                )
                for row in rows
            ],
            first_column="Cohort (booking month)",
            extra=[Series("Median days to won", tuple(row.median_days_to_won for row in rows))],
            extra_fmt=lambda value: f"{value:.1f} d",
            csv_url=csv("funnel"),
        )
    )
    types = sorted({row.event_type for row in cancels.rows})
    charts.append(
        _cancel_chart("cancellations-type", "per event type", types, "event_type", report, csv)
    )
    charts.append(
        _cancel_chart(
            "cancellations-weekday", "per weekday", list(WEEKDAYS), "weekday", report, csv
        )
    )
    follow = report.follow_ups
    charts.append(
        bar_chart(
            "follow-ups",
            "Follow-ups scheduled per event type",
            "Share of bookings whose mapped tasks all exist in the CRM, per event type, "
            f"against the target {follow.target.text}.",
            [row.event_type for row in follow.per_event_type],
            [Series("Scheduled", tuple(_share(row.share) for row in follow.per_event_type))],
            fmt=percent,
            target=Target(follow.target.value * 100, f"target {follow.target.text}"),
            first_column="Event type",
            csv_url=csv("follow-ups"),
        )
    )
    response = report.response
    owners = response.per_owner
    charts.append(
        bar_chart(
            "response-owners",
            "Response time to new leads per owner",
            "Median time from a booking's receipt to the first sales action, per owner, "
            f"against the target {response.target.text}.",
            [one.owner or "(no owner)" for one in owners],
            [Series("Median (h)", tuple(_hours(one.stats.median) for one in owners))],
            fmt=lambda value: f"{plain(value)} h",
            target=Target(response.target.value / 3600, f"target {response.target.text}"),
            first_column="Owner",
            csv_url=csv("response-owners"),
        )
    )
    return {chart.id: chart for chart in charts}


def _cancel_chart(
    chart_id: str,
    per: str,
    categories: list[str],
    attribute: str,
    report: Report,
    csv: Callable[[str], str],
) -> Figure:
    cancels = report.cancellations
    totals = {name: [0, 0, 0] for name in categories}
    for row in cancels.rows:
        counts = totals.setdefault(getattr(row, attribute), [0, 0, 0])
        counts[0] += row.bookings
        counts[1] += row.cancelled
        counts[2] += row.no_show
    names = list(totals)
    return bar_chart(
        chart_id,
        f"Cancellations and no-shows {per}",
        f"Bookings cancelled and meetings marked no-show, {per}, out of the bookings shown in "
        "the table.",
        names,
        [
            Series("Cancelled", tuple(float(totals[n][1]) for n in names)),
            Series("No-shows", tuple(float(totals[n][2]) for n in names)),
        ],
        first_column="Event type" if attribute == "event_type" else "Weekday (UTC)",
        csv_url=csv(chart_id),
    )


# --- routes ---------------------------------------------------------------------------


def _report(services: Services, query: Query) -> Report:
    return build_report(services, query.filters)


@router.get("/insights")
def insights_page(request: Request, services: ServicesDep) -> Response:
    """The success metrics and the funnel for the chosen period and event type."""
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    page = Page(request, services, session)
    params = request.query_params
    raw = {key: params.get(key) or "" for key in ("from", "to", "eventType")}
    try:
        query = parse_query(raw["from"], raw["to"], raw["eventType"], utcnow().date())
    except FilterError as exc:
        return page.render(
            "insights.html",
            status.HTTP_400_BAD_REQUEST,
            nav="insights",
            error=exc,
            raw=raw,
            event_types=(),
        )
    try:
        report = _report(services, query)
    except SQLAlchemyError as exc:
        return _unreadable(page, exc)
    return page.render(
        "insights.html",
        nav="insights",
        query=query,
        raw={
            "from": query.first.isoformat(),
            "to": query.last.isoformat(),
            "eventType": query.event_type or "",
        },
        report=report,
        tiles=tiles(report),
        charts=figures(report),
        event_types=report.event_types,
        shown=LIST_SHOWN,
    )


@router.get("/insights.csv")
def insights_csv(request: Request, services: ServicesDep) -> Response:
    """One metric's table as CSV, the same as ``GET /api/insights?format=csv&metric=…``, behind
    the dashboard's login instead of the admin token."""
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    params = request.query_params
    metric = params.get("metric", "")
    if metric not in METRICS:
        known = ", ".join(METRICS)
        return _plain(status.HTTP_400_BAD_REQUEST, f"metric: must be one of {known}")
    try:
        query = parse_query(
            params.get("from"), params.get("to"), params.get("eventType"), utcnow().date()
        )
    except FilterError as exc:
        return _plain(status.HTTP_400_BAD_REQUEST, str(exc))
    try:
        report = _report(services, query)
    except SQLAlchemyError as exc:
        return _unreadable(Page(request, services, session), exc)
    name = f"insights-{metric}-{query.first}-{query.last}.csv"
    response = Response(to_csv(report, metric), media_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return _secure(response)


def _plain(status_code: int, message: str) -> Response:
    return _secure(Response(f"{message}\n", status_code, media_type="text/plain; charset=utf-8"))
