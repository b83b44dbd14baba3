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
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
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
from sqlalchemy import text as sql_text

from adapter.insights import definitions as text
from adapter.insights import sql
from adapter.insights.days import DayFigures, merged, per_day, percentile_ms
from adapter.insights.days import refresh as refresh_days
from adapter.insights.duplicates import duplicates_report
from adapter.insights.project import BOOKING_KINDS, catch_up, catch_up_changes, fill_owners
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
from adapter.insights.tables import bookings, refusals
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


def webhook_success(
    conn: Connection, ctx: Context, figures: Mapping[date, DayFigures]
) -> WebhookSuccess:
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
        states = figures[d].states if d in figures else Counter[str]()
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


def sync_stats(figures: DayFigures) -> SyncStats:
    """p50/mean/p95/p99/max in seconds from a day's (or merged days') histogram."""
    histogram = figures.sync_ms
    count = sum(histogram.values())
    if not count:
        return SyncStats(count=0, p50=None, mean=None, p95=None, p99=None, max=None)

    def at(share: float) -> float | None:
        value = percentile_ms(histogram, share)
        return None if value is None else value / 1000

    return SyncStats(
        count=count,
        p50=at(0.50),
        mean=round(figures.sync_sum / count, 3),
        p95=at(0.95),
        p99=at(0.99),
        max=max(histogram) / 1000,
    )


def sync_time(ctx: Context, figures: Mapping[date, DayFigures]) -> SyncTime:
    overall = sync_stats(merged(figures.values()))
    return SyncTime(
        definition=text.SYNC,
        target=Target(
            "< 2 s",
            TARGET_SYNC_MEAN_SECONDS,
            None if overall.mean is None else overall.mean < TARGET_SYNC_MEAN_SECONDS,
        ),
        overall=overall,
        days=tuple(
            SyncDay(day=d, stats=sync_stats(figures.get(d, DayFigures()))) for d in _days(ctx)
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


def _live_in_hubspot(ho: Any) -> Any:
    """The row names a HubSpot object that exists: created (not an interrupted create's
    intent) and not the one found deleted there (until the next event recreates it)."""
    return and_(
        ho.c.hubspot_id.is_not(None),
        or_(ho.c.deleted_id.is_(None), ho.c.deleted_id != ho.c.hubspot_id),
    )


def _task_in(ctx: Context, keys: Sequence[str]) -> tuple[Any, Any]:
    """(the CRM's task table, a clause: the task is the booking's, with one of ``keys``)."""
    if ctx.backend == "hubspot":
        from adapter.backends.hubspot.store import hubspot_objects as ho

        return ho, and_(
            ho.c.object_type == "task",
            ho.c.natural_key.in_([bookings.c.booking_id + f"|{k}" for k in keys]),
            _live_in_hubspot(ho),
        )
    from adapter.backends.local.models import tasks

    return tasks, and_(tasks.c.booking_id == bookings.c.booking_id, tasks.c.key.in_(keys))


def follow_ups(conn: Connection, ctx: Context) -> FollowUps:
    # Bookings with an event still in the queue are left out (a handful at any time).
    waiting = set(
        conn.execute(select(events.c.key).where(events.c.state.in_(PENDING)).distinct()).scalars()
    )
    totals: Counter[tuple[str, str]] = Counter()
    expected: dict[tuple[str, str], tuple[str, ...]] = {}
    for event_type, status, count in conn.execute(
        select(bookings.c.event_type, bookings.c.status, func.count())
        .where(*_period_bookings(ctx))
        .group_by(bookings.c.event_type, bookings.c.status)
    ):
        keys = expected_tasks(ctx.mapping, event_type, status)
        if keys:
            expected[(event_type, status)] = keys
            totals[(event_type, status)] += count
    if waiting:
        for event_type, status in conn.execute(
            select(bookings.c.event_type, bookings.c.status).where(
                *_period_bookings(ctx), bookings.c.booking_id.in_(waiting)
            )
        ):
            if (event_type, status) in totals:
                totals[(event_type, status)] -= 1
    # One pass: the bookings whose expected tasks are not all in the CRM.
    short: list[tuple[str, str, str]] = []
    if expected:
        # One join of the period's bookings to their tasks (any expected key), grouped
        # per booking; a booking is short when fewer of its own group's keys are there.
        every = sorted({k for keys in expected.values() for k in keys})
        table, joined = _task_in(ctx, every)
        present = or_(
            *(
                and_(bookings.c.event_type == t, bookings.c.status == st, _task_in(ctx, keys)[1])
                for (t, st), keys in expected.items()
            )
        )
        wanted = case(
            *(
                (and_(bookings.c.event_type == t, bookings.c.status == st), len(keys))
                for (t, st), keys in expected.items()
            ),
            else_=0,
        )
        short = [
            (booking_id, event_type, status)
            for booking_id, event_type, status, _received in conn.execute(
                select(
                    bookings.c.booking_id,
                    bookings.c.event_type,
                    bookings.c.status,
                    bookings.c.received_at,
                )
                .select_from(bookings.outerjoin(table, joined))
                .where(*_period_bookings(ctx))
                .group_by(
                    bookings.c.booking_id,
                    bookings.c.event_type,
                    bookings.c.status,
                    bookings.c.received_at,
                )
                .having(func.count(case((present, 1))) < wanted)
                .order_by(bookings.c.received_at.desc())
            )
            if booking_id not in waiting
        ]
    incomplete: Counter[str] = Counter(event_type for _, event_type, _ in short)
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    keys_of_type: dict[str, set[str]] = defaultdict(set)
    for (event_type, status), count in totals.items():
        per_type[event_type][0] += count
        keys_of_type[event_type].update(expected[(event_type, status)])
    for event_type, row in per_type.items():
        row[1] = row[0] - incomplete[event_type]
    missing = [
        MissingFollowUp(
            booking_id=booking_id,
            event_type=event_type,
            missing_keys=_missing_keys(conn, ctx, booking_id, expected[(event_type, status)]),
        )
        for booking_id, event_type, status in short[:MISSING_LIMIT]
    ]
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
                    _live_in_hubspot(ho),
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


def response_time(conn: Connection, ctx: Context) -> ResponseTime:
    owner = func.coalesce(bookings.c.owner, literal(""))
    answered = bookings.c.first_action_at.is_not(None)
    took = sql.seconds(bookings.c.received_at, bookings.c.first_action_at)
    judged_after = ctx.now - timedelta(seconds=TARGET_RESPONSE_SECONDS)
    counts = conn.execute(
        select(
            owner.label("owner"),
            func.sum(case((or_(answered, bookings.c.received_at <= judged_after), 1), else_=0)),
            func.sum(case((and_(answered, took < TARGET_RESPONSE_SECONDS), 1), else_=0)),
        )
        .where(*_period_bookings(ctx))
        .group_by(owner)
    ).all()
    values: dict[str, list[float]] = defaultdict(list)
    for name, seconds in conn.execute(select(owner, took).where(*_period_bookings(ctx), answered)):
        values[name].append(max(float(seconds), 0.0))
    per_owner = [
        OwnerResponse(
            owner=name,
            stats=_response_stats(int(judged or 0), int(under or 0), values.get(name, [])),
        )
        for name, judged, under in sorted(counts, key=lambda row: row[0])
    ]
    overall = _response_stats(
        sum(o.stats.bookings for o in per_owner),
        sum(o.stats.under_24h for o in per_owner),
        [v for vs in values.values() for v in vs],
    )
    return ResponseTime(
        definition=text.RESPONSE,
        target=Target(
            "< 24 h",
            TARGET_RESPONSE_SECONDS,
            None if overall.median is None else overall.median < TARGET_RESPONSE_SECONDS,
        ),
        overall=overall,
        per_owner=tuple(p for p in per_owner if p.stats.bookings),
    )


def _response_stats(judged: int, under: int, answered: Sequence[float]) -> ResponseStats:
    return ResponseStats(
        bookings=judged,
        answered=len(answered),
        median=round(statistics.median(answered), 3) if answered else None,
        under_24h=under,
        share_under_24h=_rate(under, judged),
    )


# -- funnel and cancellations -----------------------------------------------------------


def won_stages(mapping: MappingConfig) -> frozenset[str]:
    """The stage tokens that mean won: ``WON``, and HubSpot's deal stage id for it (the
    mapping's, else ``closedwon``) for a stage recorded before it could be mapped back."""
    return frozenset(("WON", mapping.defaults.hubspot.deal_stages.get("WON", "closedwon")))


def not_progress_stages(mapping: MappingConfig) -> frozenset[str]:
    """Stages that are not a step forward: the stages a booking itself sets (its lead
    stage, the cancel and no-show stages), LOST, and their deal stage ids."""
    names: set[str | None] = {mapping.defaults.lead.stage, "LOST"}
    for name in mapping.event_types:
        resolved = mapping.event_type(name)
        names.add(resolved.lead.stage)
        names.add(resolved.lifecycle.on_cancel.lead_stage)
        names.add(resolved.lifecycle.on_no_show.lead_stage)
    stages = {n for n in names if n is not None}
    deal_ids = {mapping.defaults.hubspot.deal_stages.get(n) for n in stages}
    return frozenset(stages | {d for d in deal_ids if d})


def _outcome() -> Any:
    """The meeting's outcome: the newest of BookMe's status and the outcome set in the CRM."""
    b = bookings.c
    return case(
        (and_(b.crm_outcome_at.is_not(None), b.crm_outcome_at >= b.snapshot_at), b.crm_outcome),
        (b.status == "cancelled", literal("CANCELED")),
        (b.status == "no_show", literal("NO_SHOW")),
        else_=literal("SCHEDULED"),
    )


@dataclass(frozen=True)
class BookingGroup:
    """Bookings sharing a cohort month, event type, meeting weekday and outcome."""

    month: str
    event_type: str
    weekday: int  # SQL's: 0 = Sunday
    outcome: str
    bookings: int
    held: int
    consulted: int
    won: int


def _held(ctx: Context) -> Any:
    return and_(_outcome().not_in(("CANCELED", "NO_SHOW")), bookings.c.start_at <= ctx.now)


def booking_groups(conn: Connection, ctx: Context) -> list[BookingGroup]:
    """The period's bookings in groups: what the funnel and the cancellations count."""
    outcome = _outcome()
    held = _held(ctx)
    consulted = and_(held, or_(outcome == "COMPLETED", bookings.c.advanced_at.is_not(None)))
    won = and_(held, bookings.c.won_at.is_not(None))
    month = sql.month(bookings.c.received_at)
    weekday = sql.weekday(bookings.c.start_at)
    rows = conn.execute(
        select(
            month,
            bookings.c.event_type,
            weekday,
            outcome,
            func.count(),
            func.sum(case((held, 1), else_=0)),
            func.sum(case((consulted, 1), else_=0)),
            func.sum(case((won, 1), else_=0)),
        )
        .where(*_period_bookings(ctx))
        .group_by(month, bookings.c.event_type, weekday, outcome)
    ).all()
    return [
        BookingGroup(m, t, int(w), str(o), int(n), int(h or 0), int(c or 0), int(x or 0))
        for m, t, w, o, n, h, c, x in rows
    ]


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


def funnel(conn: Connection, ctx: Context, groups: Sequence[BookingGroup]) -> Funnel:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for g in groups:
        row = counts[(g.month, g.event_type)]
        for index, n in enumerate((g.bookings, g.held, g.consulted, g.won)):
            row[index] += n
    to_won: dict[tuple[str, str], list[float]] = defaultdict(list)
    month = sql.month(bookings.c.received_at)
    for m, kind, seconds in conn.execute(
        select(
            month, bookings.c.event_type, sql.seconds(bookings.c.received_at, bookings.c.won_at)
        ).where(*_period_bookings(ctx), _held(ctx), bookings.c.won_at.is_not(None))
    ):
        to_won[(m, kind)].append(max(float(seconds), 0.0))
    rows = tuple(
        _funnel_row(m, kind, numbers, to_won[(m, kind)])
        for (m, kind), numbers in sorted(counts.items())
    )
    totals = [sum(r[i] for r in counts.values()) for i in range(4)]
    return Funnel(
        definition=text.FUNNEL,
        steps=FUNNEL_STEPS,
        totals=_funnel_row("", "", totals, [v for vs in to_won.values() for v in vs]),
        rows=rows,
    )


def cancellations(groups: Sequence[BookingGroup]) -> Cancellations:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for g in groups:
        row = counts[(g.event_type, WEEKDAYS[(g.weekday + 6) % 7])]  # SQL's 0 is Sunday
        row[0] += g.bookings
        row[1] += g.bookings if g.outcome == "CANCELED" else 0
        row[2] += g.bookings if g.outcome == "NO_SHOW" else 0
    rows = tuple(
        CancellationRow(event_type=kind, weekday=day, bookings=n, cancelled=c, no_show=x)
        for (kind, day), (n, c, x) in sorted(
            counts.items(), key=lambda item: (item[0][0], WEEKDAYS.index(item[0][1]))
        )
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
        rows=rows,
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
    timed("owners", lambda: fill_owners(engine, now=now))
    timed(
        "changes",
        lambda: catch_up_changes(
            engine,
            not_progress=not_progress_stages(mapping),
            won=won_stages(mapping),
            now=now,
        ),
    )
    timed("days", lambda: refresh_days(engine, now=now))
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # These reads are many small index probes; PostgreSQL's JIT spent 200 ms
            # compiling each for queries that then ran in 100 ms.
            conn.execute(sql_text("SET LOCAL jit = off"))
        figures = timed(
            "events",
            lambda: per_day(
                conn, filters.start, filters.end, event_type=filters.event_type, now=now
            ),
        )
        webhook = timed("webhook", lambda: webhook_success(conn, ctx, figures))
        sync = timed("sync", lambda: sync_time(ctx, figures))
        follow = timed("followUps", lambda: follow_ups(conn, ctx))
        response = timed("response", lambda: response_time(conn, ctx))
        groups = timed("bookings", lambda: booking_groups(conn, ctx))
        fun = timed("funnel", lambda: funnel(conn, ctx, groups))
        cancel = timed("cancellations", lambda: cancellations(groups))
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
