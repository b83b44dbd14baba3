"""A hand-made insights report with known figures, for the chart and page unit tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from adapter.insights.report import (
    CancellationRow,
    Cancellations,
    DuplicateGroup,
    Duplicates,
    Filters,
    FollowUps,
    FollowUpsByType,
    Funnel,
    FunnelRow,
    MissingFollowUp,
    OwnerResponse,
    RefusedEvent,
    Report,
    ResponseStats,
    ResponseTime,
    SyncDay,
    SyncStats,
    SyncTime,
    Target,
    WebhookDay,
    WebhookSuccess,
)

START = date(2026, 10, 1)


def _funnel_row(month: str, event_type: str, counts: tuple[int, int, int, int]) -> FunnelRow:
    bookings, held, consultations, won = counts

    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    return FunnelRow(
        month=month,
        event_type=event_type,
        bookings=bookings,
        held=held,
        consultations=consultations,
        won=won,
        conversion={
            "held": rate(held, bookings),
            "consultations": rate(consultations, held),
            "won": rate(won, consultations),
        },
        won_rate=rate(won, bookings),
        median_days_to_won=4.5 if won else None,
    )


def sample_report(days: int = 5, event_type: str | None = None) -> Report:
    """Five days: a 98 % day under the target, a day with no deliveries, a slow sync day."""
    day_list = [START + timedelta(days=i) for i in range(days)]
    rates = [1.0, 0.98, None, 0.995, 1.0][:days] + [1.0] * max(days - 5, 0)
    webhook_days = tuple(
        WebhookDay(
            day=d,
            deliveries=0 if r is None else 200,
            accepted=0 if r is None else round(200 * r),
            refused={
                "invalid": 0 if r is None else 200 - round(200 * r),
                "quarantined": 0,
                "dead": 0,
            },
            pending=1 if i == days - 1 else 0,
            success_rate=r,
        )
        for i, (d, r) in enumerate(zip(day_list, rates, strict=True))
    )
    sync_days = tuple(
        SyncDay(
            day=d,
            stats=SyncStats(
                count=0 if r is None else 200,
                p50=None if r is None else 0.4 + i / 10,
                mean=None if r is None else 0.6 + i / 10,
                p95=None if r is None else 1.5 + i / 2,
                p99=None if r is None else 2.5 + i,
                max=None if r is None else 9.0,
            ),
        )
        for i, (d, r) in enumerate(zip(day_list, rates, strict=True))
    )
    rows = (
        _funnel_row("2026-09", "workshop", (10, 8, 6, 3)),
        _funnel_row("2026-10", "30min-consultation", (20, 15, 15, 5)),
        _funnel_row("2026-10", "workshop", (4, 0, 0, 0)),
    )
    totals = _funnel_row("", "", (34, 23, 21, 8))
    return Report(
        filters=Filters(start=START, end=START + timedelta(days=days), event_type=event_type),
        generated_at=datetime(2026, 10, 6, 9, 30, tzinfo=UTC),
        backend="local",
        event_types=("30min-consultation", "workshop"),
        webhook=WebhookSuccess(
            definition="Accepted deliveries / all authenticated deliveries.",
            target=Target("> 99 %", 0.99, False),
            deliveries=800,
            accepted=795,
            refused={"invalid": 5, "quarantined": 0, "dead": 0},
            pending=1,
            success_rate=795 / 800,
            days=webhook_days,
            refused_events=(
                RefusedEvent(
                    reason="invalid",
                    received_at=datetime(2026, 10, 2, 8, 0, tzinfo=UTC),
                    event_id=None,
                    booking_id="bk-bad",
                    detail="email: not an email address",
                ),
                RefusedEvent(
                    reason="dead",
                    received_at=datetime(2026, 10, 2, 9, 0, tzinfo=UTC),
                    event_id="ev-dead-1",
                    booking_id="bk-dead",
                    detail="CRM said no",
                ),
            ),
            refused_limit=50,
        ),
        sync=SyncTime(
            definition="Receipt → CRM write committed.",
            target=Target("< 2 s", 2.0, True),
            overall=SyncStats(count=800, p50=0.5, mean=0.75, p95=2.0, p99=4.0, max=9.0),
            days=sync_days,
        ),
        duplicates=Duplicates(
            definition="Records sharing an identity that must be unique.",
            target=Target("= 0", 0, False),
            count=1,
            per_rule={"contacts": 0, "companies": 0, "leads": 1, "meetings": 0, "tasks": 0},
            groups=(DuplicateGroup(rule="leads", key="ada@example.com", record_ids=("l1", "l2")),),
            checked_at=datetime(2026, 10, 6, 9, 0, tzinfo=UTC),
            backend="local",
        ),
        follow_ups=FollowUps(
            definition="Bookings whose mapped tasks all exist / bookings.",
            target=Target("= 100 %", 1.0, False),
            bookings=30,
            complete=29,
            share=29 / 30,
            per_event_type=(
                FollowUpsByType("30min-consultation", 20, 20, 1.0, ("prep",)),
                FollowUpsByType("workshop", 10, 9, 0.9, ("prep", "follow-up")),
            ),
            missing=(MissingFollowUp("bk-7", "workshop", ("follow-up",)),),
            missing_limit=50,
        ),
        response=ResponseTime(
            definition="Booking received → first sales action.",
            target=Target("< 24 h", 86400.0, True),
            overall=ResponseStats(
                bookings=30, answered=25, median=5 * 3600.0, under_24h=24, share_under_24h=0.8
            ),
            per_owner=(
                OwnerResponse(
                    "ada@example.com",
                    ResponseStats(
                        bookings=20,
                        answered=18,
                        median=3 * 3600.0,
                        under_24h=18,
                        share_under_24h=0.9,
                    ),
                ),
                OwnerResponse(
                    "",
                    ResponseStats(
                        bookings=10,
                        answered=7,
                        median=30 * 3600.0,
                        under_24h=6,
                        share_under_24h=0.6,
                    ),
                ),
            ),
        ),
        funnel=Funnel(
            definition="Cohorts by booking month.",
            steps=("bookings", "held", "consultations", "won"),
            totals=totals,
            rows=rows,
        ),
        cancellations=Cancellations(
            definition="Cancelled bookings and no-show meetings.",
            bookings=34,
            cancelled=4,
            no_show=2,
            cancel_rate=4 / 34,
            no_show_rate=2 / 34,
            rows=(
                CancellationRow("workshop", "Mon", 10, 2, 1),
                CancellationRow("workshop", "Wed", 4, 1, 0),
                CancellationRow("30min-consultation", "Mon", 20, 1, 1),
            ),
        ),
    )
