"""The report as CSV: one table per metric (``METRICS``), the rows the charts draw."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from adapter.insights.report import REFUSAL_REASONS, Report

Table = tuple[Sequence[str], Iterable[Sequence[Any]]]


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{round(value, digits):g}"


def webhook(report: Report) -> Table:
    head = ["day", "deliveries", "accepted", *REFUSAL_REASONS, "pending", "success_rate"]
    rows = (
        [
            d.day.isoformat(),
            d.deliveries,
            d.accepted,
            *(d.refused[r] for r in REFUSAL_REASONS),
            d.pending,
            _num(d.success_rate),
        ]
        for d in report.webhook.days
    )
    return head, rows


def refused(report: Report) -> Table:
    head = ["received_at", "reason", "event_id", "booking_id", "detail"]
    rows = (
        [e.received_at.isoformat(), e.reason, e.event_id or "", e.booking_id or "", e.detail or ""]
        for e in report.webhook.refused_events
    )
    return head, rows


def sync(report: Report) -> Table:
    head = ["day", "count", "p50_s", "mean_s", "p95_s", "p99_s", "max_s"]
    rows = (
        [
            d.day.isoformat(),
            d.stats.count,
            _num(d.stats.p50),
            _num(d.stats.mean),
            _num(d.stats.p95),
            _num(d.stats.p99),
            _num(d.stats.max),
        ]
        for d in report.sync.days
    )
    return head, rows


def duplicates(report: Report) -> Table:
    head = ["rule", "key", "extra", "record_ids"]
    rows = (
        [g.rule, g.key, len(g.record_ids) - 1, " ".join(g.record_ids)]
        for g in report.duplicates.groups
    )
    return head, rows


def follow_ups(report: Report) -> Table:
    head = ["event_type", "bookings", "complete", "share", "expected_keys"]
    rows = (
        [r.event_type, r.bookings, r.complete, _num(r.share), " ".join(r.expected_keys)]
        for r in report.follow_ups.per_event_type
    )
    return head, rows


def missing_follow_ups(report: Report) -> Table:
    head = ["booking_id", "event_type", "missing_keys"]
    rows = (
        [m.booking_id, m.event_type, " ".join(m.missing_keys)] for m in report.follow_ups.missing
    )
    return head, rows


def response(report: Report) -> Table:
    head = ["owner", "bookings", "answered", "median_s", "under_24h", "share_under_24h"]
    everyone = [("(all)", report.response.overall)]
    rows = (
        [owner, s.bookings, s.answered, _num(s.median, 1), s.under_24h, _num(s.share_under_24h)]
        for owner, s in everyone + [(o.owner, o.stats) for o in report.response.per_owner]
    )
    return head, rows


def funnel(report: Report) -> Table:
    head = [
        "month",
        "event_type",
        "bookings",
        "held",
        "consultations",
        "won",
        "held_rate",
        "consultation_rate",
        "won_rate_of_consultations",
        "won_rate",
        "median_days_to_won",
    ]
    rows = (
        [
            r.month or "(all)",
            r.event_type or "(all)",
            r.bookings,
            r.held,
            r.consultations,
            r.won,
            _num(r.conversion["held"]),
            _num(r.conversion["consultations"]),
            _num(r.conversion["won"]),
            _num(r.won_rate),
            _num(r.median_days_to_won, 2),
        ]
        for r in (*report.funnel.rows, report.funnel.totals)
    )
    return head, rows


def cancellations(report: Report) -> Table:
    head = ["event_type", "weekday", "bookings", "cancelled", "no_show"]
    rows = (
        [r.event_type, r.weekday, r.bookings, r.cancelled, r.no_show]
        for r in report.cancellations.rows
    )
    return head, rows


def _cell(value: Any) -> Any:
    # A text cell a spreadsheet would run as a formula is quoted (event types, keys and
    # refusal details come from outside).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


METRICS: dict[str, Callable[[Report], Table]] = {
    "webhook": webhook,
    "refused": refused,
    "sync": sync,
    "duplicates": duplicates,
    "followUps": follow_ups,
    "missingFollowUps": missing_follow_ups,
    "response": response,
    "funnel": funnel,
    "cancellations": cancellations,
}


def to_csv(report: Report, metric: str) -> str:
    """One metric's table as CSV (``metric`` one of ``METRICS``)."""
    head, rows = METRICS[metric](report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(head)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()
