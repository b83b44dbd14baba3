"""The report's figures, each computed by SQL from the service's own records.

Sources: the outbox (``outbox_events``: receipt, settle time and state of every booking
event), ``webhook_refusals`` (authenticated deliveries refused before anything was
stored), the bookings projection (``project``), the CRM records (the local CRM's tables
or ``hubspot_objects``), and ``crm_changes`` (what sales staff did in the CRM).
Every statement is SQLAlchemy Core and runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    func,
    literal,
    or_,
    select,
)

from adapter.insights import definitions as text
from adapter.insights import sql
from adapter.insights.duplicates import duplicates_report
from adapter.insights.project import BOOKING_KINDS, catch_up
from adapter.insights.report import (
    FUNNEL_STEPS,
    REFUSAL_REASONS,
    TARGET_FOLLOW_UPS,
    TARGET_RESPONSE_SECONDS,
    TARGET_SYNC_MEAN_SECONDS,
    TARGET_WEBHOOK_SUCCESS,
    WEEKDAYS,
    CancellationRow,
    Cancellations,
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
from adapter.insights.tables import bookings, crm_changes, refusals
from adapter.mapping import MappingConfig
from outbox.schema import events
from outbox.store import DEAD, PENDING, QUARANTINED, SUPERSEDED, SYNCED

if TYPE_CHECKING:
    from adapter.services import Services

REFUSED_LIMIT = 100
MISSING_LIMIT = 100
DAY = 86400.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class Context:
    """What every part needs: the period as instants, the filter, the clock, the mapping."""

    filters: Filters
    now: datetime
    mapping: MappingConfig
    backend: str

    @property
    def start(self) -> datetime:
        return datetime.combine(self.filters.start, dtime(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.filters.end, dtime(), tzinfo=UTC)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _days(ctx: Context) -> list[date]:
    count = (ctx.filters.end - ctx.filters.start).days
    return [ctx.filters.start + timedelta(days=n) for n in range(count)]


def _in_period(column: Any, ctx: Context) -> Any:
    return and_(column >= ctx.start, column < ctx.end)


def _booking_events(ctx: Context) -> list[Any]:
    """Where-clauses: booking events received in the period (of the event type)."""
    clauses = [events.c.kind.in_(BOOKING_KINDS), _in_period(events.c.received_at, ctx)]
    if ctx.filters.event_type is not None:
        typed = select(bookings.c.booking_id).where(bookings.c.event_type == ctx.filters.event_type)
        clauses.append(events.c.key.in_(typed))
    return clauses


def _period_bookings(ctx: Context) -> list[Any]:
    """Where-clauses: bookings first received in the period (of the event type)."""
    clauses = [_in_period(bookings.c.received_at, ctx)]
    if ctx.filters.event_type is not None:
        clauses.append(bookings.c.event_type == ctx.filters.event_type)
    return clauses


# -- webhook success -----------------------------------------------------------------


def webhook_success(conn: Connection, ctx: Context) -> WebhookSuccess:
    day = sql.day(events.c.received_at)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in conn.execute(
        select(day.label("day"), events.c.state, func.count().label("n"))
        .where(*_booking_events(ctx))
        .group_by(day, events.c.state)
    ):
        counts[row.day][row.state] += row.n
    invalid: dict[str, int] = defaultdict(int)
    if ctx.filters.event_type is None:  # a refused delivery has no trusted event type
        rday = sql.day(refusals.c.received_at)
        for row in conn.execute(
            select(rday.label("day"), func.count().label("n"))
            .where(_in_period(refusals.c.received_at, ctx))
            .group_by(rday)
        ):
            invalid[row.day] += row.n

    days = []
    totals = {"accepted": 0, "pending": 0, **{r: 0 for r in REFUSAL_REASONS}}
    for d in _days(ctx):
        states = counts.get(d.isoformat(), {})
        accepted = states.get(SYNCED, 0) + states.get(SUPERSEDED, 0)
        refused = {
            "invalid": invalid.get(d.isoformat(), 0),
            "quarantined": states.get(QUARANTINED, 0),
            "dead": states.get(DEAD, 0),
        }
        pending = sum(states.get(s, 0) for s in PENDING)
        deliveries = accepted + sum(refused.values())
        days.append(
            WebhookDay(
                day=d,
                deliveries=deliveries,
                accepted=accepted,
                refused=refused,
                pending=pending,
                success_rate=_rate(accepted, deliveries),
            )
        )
        totals["accepted"] += accepted
        totals["pending"] += pending
        for reason, n in refused.items():
            totals[reason] += n
    refused_total = {r: totals[r] for r in REFUSAL_REASONS}
    deliveries = totals["accepted"] + sum(refused_total.values())
    rate = _rate(totals["accepted"], deliveries)
    return WebhookSuccess(
        definition=text.WEBHOOK,
        target=Target("> 99 %", TARGET_WEBHOOK_SUCCESS, None if rate is None else rate > 0.99),
        deliveries=deliveries,
        accepted=totals["accepted"],
        refused=refused_total,
        pending=totals["pending"],
        success_rate=rate,
        days=tuple(days),
        refused_events=tuple(_refused_events(conn, ctx)),
        refused_limit=REFUSED_LIMIT,
    )


def _refused_events(conn: Connection, ctx: Context) -> list[RefusedEvent]:
    found = [
        RefusedEvent(
            reason=row.state,
            received_at=_utc(row.received_at),
            event_id=row.id,
            booking_id=row.key,
            detail=row.last_error,
        )
        for row in conn.execute(
            select(
                events.c.id, events.c.key, events.c.state, events.c.received_at, events.c.last_error
            )
            .where(*_booking_events(ctx), events.c.state.in_((DEAD, QUARANTINED)))
            .order_by(events.c.received_at.desc(), events.c.seq.desc())
            .limit(REFUSED_LIMIT)
        )
    ]
    if ctx.filters.event_type is None:
        found += [
            RefusedEvent(
                reason="invalid",
                received_at=_utc(row.received_at),
                event_id=None,
                booking_id=None,
                detail=f"HTTP {row.status}: {row.detail or ''}".strip(),
            )
            for row in conn.execute(
                select(refusals)
                .where(_in_period(refusals.c.received_at, ctx))
                .order_by(refusals.c.received_at.desc(), refusals.c.id.desc())
                .limit(REFUSED_LIMIT)
            )
        ]
    found.sort(key=lambda e: e.received_at, reverse=True)
    return found[:REFUSED_LIMIT]


# -- sync time -----------------------------------------------------------------------


def _percentile(ordered: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of sorted values (the value below which ``share`` lie)."""
    permille = round(share * 1000)
    rank = max(1, -(-permille * len(ordered) // 1000))  # ceil, in integers
    return ordered[min(rank, len(ordered)) - 1]


def sync_stats(values: Iterable[float]) -> SyncStats:
    ordered = sorted(values)
    if not ordered:
        return SyncStats(count=0, p50=None, mean=None, p95=None, p99=None, max=None)
    return SyncStats(
        count=len(ordered),
        p50=round(_percentile(ordered, 0.50), 3),
        mean=round(statistics.fmean(ordered), 3),
        p95=round(_percentile(ordered, 0.95), 3),
        p99=round(_percentile(ordered, 0.99), 3),
        max=round(ordered[-1], 3),
    )


def sync_time(conn: Connection, ctx: Context) -> SyncTime:
    day = sql.day(events.c.received_at)
    took = sql.seconds(events.c.received_at, events.c.synced_at)
    per_day: dict[str, list[float]] = defaultdict(list)
    everything: list[float] = []
    result = conn.execute(
        select(day, took).where(
            *_booking_events(ctx), events.c.state == SYNCED, events.c.synced_at.is_not(None)
        )
    )
    for d, seconds in result:
        value = max(float(seconds), 0.0)
        per_day[d].append(value)
        everything.append(value)
    overall = sync_stats(everything)
    return SyncTime(
        definition=text.SYNC,
        target=Target(
            "< 2 s",
            TARGET_SYNC_MEAN_SECONDS,
            None if overall.mean is None else overall.mean < TARGET_SYNC_MEAN_SECONDS,
        ),
        overall=overall,
        days=tuple(
            SyncDay(day=d, stats=sync_stats(per_day.get(d.isoformat(), ()))) for d in _days(ctx)
        ),
    )


# -- follow-ups ----------------------------------------------------------------------


def expected_tasks(mapping: MappingConfig, event_type: str, status: str) -> tuple[str, ...]:
    """The task keys a booking of ``event_type`` in ``status`` must have in the CRM.

    The event type's tasks, and for a cancelled or no-show booking the lifecycle's
    tasks too (the event type's stay in the CRM, cancelled). ``skip_if_past`` tasks
    are left out: the mapping itself may rightly skip them.
    """
    if event_type not in mapping.event_types:
        return ()
    resolved = mapping.event_type(event_type)
    tasks = list(resolved.tasks)
    if status == "cancelled":
        tasks += resolved.lifecycle.on_cancel.tasks
    elif status == "no_show":
        tasks += resolved.lifecycle.on_no_show.tasks
    return tuple(t.key for t in tasks if not t.skip_if_past)


def _task_count(ctx: Context, conn: Connection, keys: Sequence[str]) -> Any:
    """A correlated count of the booking's CRM tasks among ``keys``."""
    if ctx.backend == "hubspot":
        from adapter.backends.hubspot.store import hubspot_objects as ho

        return (
            select(func.count())
            .where(
                ho.c.object_type == "task",
                ho.c.natural_key.in_([bookings.c.booking_id + f"|{k}" for k in keys]),
                ho.c.hubspot_id.is_not(None),
            )
            .scalar_subquery()
        )
    from adapter.backends.local.models import tasks

    return (
        select(func.count())
        .where(tasks.c.booking_id == bookings.c.booking_id, tasks.c.key.in_(keys))
        .scalar_subquery()
    )


def follow_ups(conn: Connection, ctx: Context) -> FollowUps:
    pending = (
        select(events.c.seq)
        .where(events.c.key == bookings.c.booking_id, events.c.state.in_(PENDING))
        .exists()
    )
    groups = conn.execute(
        select(bookings.c.event_type, bookings.c.status, func.count().label("n"))
        .where(*_period_bookings(ctx), ~pending)
        .group_by(bookings.c.event_type, bookings.c.status)
    ).all()
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    keys_of_type: dict[str, set[str]] = defaultdict(set)
    missing: list[MissingFollowUp] = []
    for group in groups:
        keys = expected_tasks(ctx.mapping, group.event_type, group.status)
        if not keys:
            continue
        keys_of_type[group.event_type].update(keys)
        short = (
            conn.execute(
                select(bookings.c.booking_id)
                .where(
                    *_period_bookings(ctx),
                    ~pending,
                    bookings.c.event_type == group.event_type,
                    bookings.c.status == group.status,
                    _task_count(ctx, conn, keys) < len(keys),
                )
                .order_by(bookings.c.received_at.desc())
            )
            .scalars()
            .all()
        )
        per_type[group.event_type][0] += group.n
        per_type[group.event_type][1] += group.n - len(short)
        for booking_id in short[: max(0, MISSING_LIMIT - len(missing))]:
            missing.append(
                MissingFollowUp(
                    booking_id=booking_id,
                    event_type=group.event_type,
                    missing_keys=_missing_keys(conn, ctx, booking_id, keys),
                )
            )
    rows = tuple(
        FollowUpsByType(
            event_type=name,
            bookings=total,
            complete=done,
            share=_rate(done, total),
            expected_keys=tuple(sorted(keys_of_type[name])),
        )
        for name, (total, done) in sorted(per_type.items())
    )
    total = sum(r.bookings for r in rows)
    done = sum(r.complete for r in rows)
    share = _rate(done, total)
    return FollowUps(
        definition=text.FOLLOW_UPS,
        target=Target("= 100 %", TARGET_FOLLOW_UPS, None if share is None else done == total),
        bookings=total,
        complete=done,
        share=share,
        per_event_type=rows,
        missing=tuple(missing),
        missing_limit=MISSING_LIMIT,
    )


def _missing_keys(
    conn: Connection, ctx: Context, booking_id: str, keys: Sequence[str]
) -> tuple[str, ...]:
    if ctx.backend == "hubspot":
        from adapter.backends.hubspot.store import hubspot_objects as ho

        present = {
            key.split("|")[-1]
            for key in conn.execute(
                select(ho.c.natural_key).where(
                    ho.c.object_type == "task",
                    ho.c.natural_key.in_([f"{booking_id}|{k}" for k in keys]),
                    ho.c.hubspot_id.is_not(None),
                )
            ).scalars()
        }
    else:
        from adapter.backends.local.models import tasks

        present = set(
            conn.execute(
                select(tasks.c.key).where(tasks.c.booking_id == booking_id, tasks.c.key.in_(keys))
            ).scalars()
        )
    return tuple(k for k in keys if k not in present)


# -- response time -------------------------------------------------------------------


# A sales action: a task completed, a meeting completed, or a deal's stage changed.
def _is_action() -> Any:
    return or_(
        and_(crm_changes.c.field == "status", crm_changes.c.new_value == "done"),
        and_(crm_changes.c.field == "outcome", crm_changes.c.new_value == "COMPLETED"),
        crm_changes.c.field == "stage",
    )


def _owner(conn: Connection) -> Any:
    """The booking's owner: the local CRM's meeting owner, else the round robin's choice."""
    from adapter.backends.local.models import activities
    from adapter.owners.store import assignments

    local = (
        select(activities.c.owner_email)
        .where(activities.c.booking_id == bookings.c.booking_id)
        .scalar_subquery()
    )
    rotated = (
        select(assignments.c.owner_email)
        .where(assignments.c.booking_id == bookings.c.booking_id)
        .scalar_subquery()
    )
    return func.coalesce(local, rotated, literal(""))


def response_time(conn: Connection, ctx: Context) -> ResponseTime:
    first = (
        select(func.min(crm_changes.c.changed_at))
        .where(
            crm_changes.c.booking_id == bookings.c.booking_id,
            crm_changes.c.changed_at >= bookings.c.received_at,
            _is_action(),
        )
        .scalar_subquery()
    )
    judged_after = ctx.now - timedelta(seconds=TARGET_RESPONSE_SECONDS)
    rows = conn.execute(
        select(
            _owner(conn).label("owner"),
            sql.seconds(bookings.c.received_at, first).label("took"),
            (bookings.c.received_at <= judged_after).label("old"),
        ).where(*_period_bookings(ctx))
    ).all()
    per_owner: dict[str, list[tuple[float | None, bool]]] = defaultdict(list)
    for row in rows:
        per_owner[str(row.owner or "").lower()].append(
            (None if row.took is None else float(row.took), bool(row.old))
        )
    overall = _response_stats(v for values in per_owner.values() for v in values)
    return ResponseTime(
        definition=text.RESPONSE,
        target=Target(
            "< 24 h",
            TARGET_RESPONSE_SECONDS,
            None if overall.median is None else overall.median < TARGET_RESPONSE_SECONDS,
        ),
        overall=overall,
        per_owner=tuple(
            OwnerResponse(owner=owner, stats=_response_stats(values))
            for owner, values in sorted(per_owner.items())
        ),
    )


def _response_stats(values: Iterable[tuple[float | None, bool]]) -> ResponseStats:
    judged = 0
    answered: list[float] = []
    for took, old in values:
        if took is not None:
            answered.append(took)
            judged += 1
        elif old:
            judged += 1  # 24 hours passed without a sales action
    under = sum(1 for v in answered if v < TARGET_RESPONSE_SECONDS)
    return ResponseStats(
        bookings=judged,
        answered=len(answered),
        median=round(statistics.median(answered), 3) if answered else None,
        under_24h=under,
        share_under_24h=_rate(under, judged),
    )


# -- funnel and cancellations -----------------------------------------------------------


def _won_stages(mapping: MappingConfig) -> tuple[str, ...]:
    """The stage tokens that mean won: ``WON``, and HubSpot's deal stage id for it (the
    mapping's, else ``closedwon``) for a stage recorded before it could be mapped back."""
    return tuple(
        dict.fromkeys(("WON", mapping.defaults.hubspot.deal_stages.get("WON", "closedwon")))
    )


def _not_progress_stages(mapping: MappingConfig) -> tuple[str, ...]:
    """Stages that are not a step forward: the stages a booking itself sets (its lead
    stage, the cancel and no-show stages) and their deal stage ids."""
    names: set[str | None] = {mapping.defaults.lead.stage, "LOST"}
    for name in mapping.event_types:
        resolved = mapping.event_type(name)
        names.add(resolved.lead.stage)
        names.add(resolved.lifecycle.on_cancel.lead_stage)
        names.add(resolved.lifecycle.on_no_show.lead_stage)
    stages = {n for n in names if n is not None}
    deal_ids = {mapping.defaults.hubspot.deal_stages.get(n) for n in stages}
    return tuple(sorted(stages | {d for d in deal_ids if d}))


def _facts(ctx: Context) -> Any:
    """One row per booking of the period: cohort, event type, weekday, outcome, funnel flags."""
    outcome_at = (
        select(crm_changes.c.booking_id, func.max(crm_changes.c.changed_at).label("at"))
        .where(crm_changes.c.field == "outcome")
        .group_by(crm_changes.c.booking_id)
        .subquery("outcome_at")
    )
    last = crm_changes.alias("last_outcome")
    crm_outcome = (
        select(
            last.c.booking_id,
            func.max(last.c.new_value).label("outcome"),
            func.max(last.c.changed_at).label("at"),
        )
        .join(
            outcome_at,
            and_(
                outcome_at.c.booking_id == last.c.booking_id,
                outcome_at.c.at == last.c.changed_at,
            ),
        )
        .where(last.c.field == "outcome")
        .group_by(last.c.booking_id)
        .subquery("crm_outcome")
    )
    won = _won_stages(ctx.mapping)
    stage = (
        select(
            crm_changes.c.booking_id,
            func.max(
                case(
                    (crm_changes.c.new_value.not_in(_not_progress_stages(ctx.mapping)), 1),
                    else_=0,
                )
            ).label("progressed"),
            func.min(
                case((crm_changes.c.new_value.in_(won), crm_changes.c.changed_at), else_=None)
            ).label("won_at"),
        )
        .where(crm_changes.c.field == "stage")
        .group_by(crm_changes.c.booking_id)
        .subquery("stage")
    )
    outcome = case(
        (
            and_(crm_outcome.c.at.is_not(None), crm_outcome.c.at >= bookings.c.snapshot_at),
            crm_outcome.c.outcome,
        ),
        (bookings.c.status == "cancelled", literal("CANCELED")),
        (bookings.c.status == "no_show", literal("NO_SHOW")),
        else_=literal("SCHEDULED"),
    )
    held = and_(outcome.not_in(("CANCELED", "NO_SHOW")), bookings.c.start_at <= ctx.now)
    consulted = and_(held, or_(outcome == "COMPLETED", stage.c.progressed == 1))
    is_won = and_(held, stage.c.won_at.is_not(None))
    return (
        select(
            sql.month(bookings.c.received_at).label("month"),
            bookings.c.event_type,
            sql.weekday(bookings.c.start_at).label("weekday"),
            outcome.label("outcome"),
            case((held, 1), else_=0).label("held"),
            case((consulted, 1), else_=0).label("consulted"),
            case((is_won, 1), else_=0).label("won"),
            case((is_won, sql.seconds(bookings.c.received_at, stage.c.won_at)), else_=None).label(
                "to_won"
            ),
        )
        .select_from(bookings)
        .outerjoin(crm_outcome, crm_outcome.c.booking_id == bookings.c.booking_id)
        .outerjoin(stage, stage.c.booking_id == bookings.c.booking_id)
        .where(*_period_bookings(ctx))
        .subquery("facts")
    )


def _funnel_row(
    month: str, event_type: str, counts: Sequence[int], to_won: Sequence[float]
) -> FunnelRow:
    booked, held, consulted, won = counts
    return FunnelRow(
        month=month,
        event_type=event_type,
        bookings=booked,
        held=held,
        consultations=consulted,
        won=won,
        conversion={
            "held": _rate(held, booked),
            "consultations": _rate(consulted, held),
            "won": _rate(won, consulted),
        },
        won_rate=_rate(won, booked),
        median_days_to_won=round(statistics.median(to_won) / DAY, 2) if to_won else None,
    )


def funnel(conn: Connection, ctx: Context) -> Funnel:
    facts = _facts(ctx)
    grouped = conn.execute(
        select(
            facts.c.month,
            facts.c.event_type,
            func.count(),
            func.sum(facts.c.held),
            func.sum(facts.c.consulted),
            func.sum(facts.c.won),
        )
        .group_by(facts.c.month, facts.c.event_type)
        .order_by(facts.c.month, facts.c.event_type)
    ).all()
    to_won: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in conn.execute(
        select(facts.c.month, facts.c.event_type, facts.c.to_won).where(facts.c.won == 1)
    ):
        to_won[(row.month, row.event_type)].append(max(float(row.to_won), 0.0))
    rows = []
    totals = [0, 0, 0, 0]
    for month, event_type, *counts in grouped:
        numbers = [int(n or 0) for n in counts]
        rows.append(_funnel_row(month, event_type, numbers, to_won[(month, event_type)]))
        totals = [a + b for a, b in zip(totals, numbers, strict=True)]
    return Funnel(
        definition=text.FUNNEL,
        steps=FUNNEL_STEPS,
        totals=_funnel_row("", "", totals, [v for vs in to_won.values() for v in vs]),
        rows=tuple(rows),
    )


def cancellations(conn: Connection, ctx: Context) -> Cancellations:
    facts = _facts(ctx)
    grouped = conn.execute(
        select(
            facts.c.event_type,
            facts.c.weekday,
            func.count(),
            func.sum(case((facts.c.outcome == "CANCELED", 1), else_=0)),
            func.sum(case((facts.c.outcome == "NO_SHOW", 1), else_=0)),
        ).group_by(facts.c.event_type, facts.c.weekday)
    ).all()
    rows = sorted(
        (
            CancellationRow(
                event_type=event_type,
                weekday=WEEKDAYS[(int(dow) + 6) % 7],  # SQL's 0 is Sunday
                bookings=int(n),
                cancelled=int(c or 0),
                no_show=int(s or 0),
            )
            for event_type, dow, n, c, s in grouped
        ),
        key=lambda r: (r.event_type, WEEKDAYS.index(r.weekday)),
    )
    total = sum(r.bookings for r in rows)
    cancelled = sum(r.cancelled for r in rows)
    no_show = sum(r.no_show for r in rows)
    return Cancellations(
        definition=text.CANCELLATIONS,
        bookings=total,
        cancelled=cancelled,
        no_show=no_show,
        cancel_rate=_rate(cancelled, total),
        no_show_rate=_rate(no_show, total),
        rows=tuple(rows),
    )


# -- the report ----------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def event_types(conn: Connection, mapping: MappingConfig) -> tuple[str, ...]:
    seen = set(conn.execute(select(bookings.c.event_type).distinct()).scalars())
    return tuple(sorted(seen | set(mapping.event_types)))


def compute(
    engine: Engine,
    filters: Filters,
    *,
    mapping: MappingConfig,
    backend: str,
    duplicates: Callable[[], Duplicates],
    now: datetime | None = None,
) -> Report:
    """The whole report for ``filters``; ``duplicates`` runs (or recalls) the CRM's check."""
    now = now or datetime.now(UTC)
    ctx = Context(filters=filters, now=now, mapping=mapping, backend=backend)
    timings: dict[str, float] = {}

    def timed(name: str, part: Callable[[], _T]) -> _T:
        began = time.perf_counter()
        try:
            return part()
        finally:
            timings[name] = round(time.perf_counter() - began, 4)

    timed("projection", lambda: catch_up(engine, now=now))
    with engine.connect() as conn:
        webhook = timed("webhook", lambda: webhook_success(conn, ctx))
        sync = timed("sync", lambda: sync_time(conn, ctx))
        follow = timed("followUps", lambda: follow_ups(conn, ctx))
        response = timed("response", lambda: response_time(conn, ctx))
        fun = timed("funnel", lambda: funnel(conn, ctx))
        cancel = timed("cancellations", lambda: cancellations(conn, ctx))
        types = event_types(conn, mapping)
    dups = timed("duplicates", duplicates)
    return Report(
        filters=filters,
        generated_at=now,
        backend=backend,
        event_types=types,
        webhook=webhook,
        sync=sync,
        duplicates=dups,
        follow_ups=follow,
        response=response,
        funnel=fun,
        cancellations=cancel,
        timings=timings,
    )


def build_report(services: Services, filters: Filters, *, now: datetime | None = None) -> Report:
    """The report for the running service: its database, mapping and CRM backend."""
    backend = services.settings.crm_backend
    return compute(
        services.engine,
        filters,
        mapping=services.mappings.current,
        backend=backend,
        duplicates=lambda: duplicates_report(services, now=now),
        now=now,
    )
