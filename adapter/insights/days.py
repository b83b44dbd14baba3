"""Per-day figures of the booking events: states and sync-time histograms, kept in
``insights_days`` for closed days so that a year is 365 small rows, not 500,000 events.

A day is *closed* once it ended more than ``SETTLE_MARGIN`` ago; its row is written
then, and written again whenever one of its events changes (a retry settles, a replay):
the outbox stamps every change in ``updated_at``, and each refresh rereads the days of
the events changed since the last one (minus the margin, for commits that land late).
Open days (today) are computed live from the outbox. Sync times are kept as a
histogram in whole milliseconds, so the percentiles of any set of days are exact to
the millisecond and the mean is exact (from the sum).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine, Integer, cast, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from adapter.db import upsert_insert
from adapter.insights import sql
from adapter.insights.project import BOOKING_KINDS, SETTLE_MARGIN
from adapter.insights.tables import bookings, days, state
from outbox.schema import events
from outbox.store import SYNCED

_MARK = "days_at"
UNKNOWN = ""  # the event type of an event whose booking the projection does not hold


@dataclass
class DayFigures:
    """One day's (one event type's, or several merged) events by state and sync time."""

    states: Counter[str] = field(default_factory=Counter)
    sync_ms: Counter[int] = field(default_factory=Counter)  # whole ms -> events
    sync_sum: float = 0.0  # seconds

    def add(self, other: DayFigures) -> None:
        self.states.update(other.states)
        self.sync_ms.update(other.sync_ms)
        self.sync_sum += other.sync_sum


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _grouped(
    conn: Connection, start: datetime, end: datetime, event_type: str | None = None
) -> dict[tuple[str, str], DayFigures]:
    """(day, event type) -> figures, from the outbox, for events received in [start, end)."""
    day = sql.day(events.c.received_at)
    took = sql.seconds(events.c.received_at, events.c.synced_at)
    kind = func.coalesce(bookings.c.event_type, UNKNOWN)
    ms = cast(func.round(took * 1000.0), Integer)
    query = (
        select(day, kind, events.c.state, ms, func.count(), func.sum(took))
        .select_from(events.outerjoin(bookings, bookings.c.booking_id == events.c.key))
        .where(
            events.c.kind.in_(BOOKING_KINDS),
            events.c.received_at >= start,
            events.c.received_at < end,
        )
        .group_by(day, kind, events.c.state, ms)
    )
    if event_type is not None:
        query = query.where(bookings.c.event_type == event_type)
    found: dict[tuple[str, str], DayFigures] = {}
    for d, k, st, millis, count, total in conn.execute(query):
        figures = found.setdefault((d, k), DayFigures())
        figures.states[st] += count
        if st == SYNCED and millis is not None:
            figures.sync_ms[max(int(millis), 0)] += count
            figures.sync_sum += max(float(total or 0.0), 0.0)
    return found


def _mark(conn: Connection) -> datetime | None:
    value = conn.execute(select(state.c.value).where(state.c.name == _MARK)).scalar()
    return datetime.fromisoformat(value) if value else None


def _closed_before(now: datetime) -> date:
    """The first day that is not closed yet."""
    return (now - SETTLE_MARGIN).date()


def _dirty_days(conn: Connection, since: datetime | None, closed_before: date) -> list[date]:
    day = sql.day(events.c.received_at)
    query = select(day).where(events.c.kind.in_(BOOKING_KINDS)).distinct()
    if since is not None:
        query = query.where(events.c.updated_at > since - SETTLE_MARGIN)
    found = {date.fromisoformat(d) for d in conn.execute(query).scalars()}
    return sorted(d for d in found if d < closed_before)


def refresh(engine: Engine, *, now: datetime | None = None) -> int:
    """Write the rows of closed days whose events changed since the last refresh;
    returns how many days were (re)computed."""
    now = now or datetime.now(UTC)
    closed_before = _closed_before(now)
    with engine.connect() as conn:
        since = _mark(conn)
        dirty = set(_dirty_days(conn, since, closed_before))
    if since is not None:
        # Days that closed since the last refresh are written whether or not their
        # events changed after it (they were open, so read live, until now).
        day = _closed_before(since)
        while day < closed_before:
            dirty.add(day)
            day += timedelta(days=1)
    # Consecutive dirty days are read in one query (the first refresh reads the history).
    runs: list[tuple[date, date]] = []
    for d in sorted(dirty):
        if runs and runs[-1][1] == d and (d - runs[-1][0]).days < 31:
            runs[-1] = (runs[-1][0], d + timedelta(days=1))
        else:
            runs.append((d, d + timedelta(days=1)))
    for first, end in runs:
        # Another process writing these days at the same moment: theirs stand.
        with contextlib.suppress(IntegrityError):
            _rewrite(engine, first, end, now)
    with engine.begin() as conn:
        stmt = upsert_insert(conn, state).values(name=_MARK, value=now.isoformat())
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[state.c.name], set_={"value": now.isoformat()}
            )
        )
    return len(dirty)


def _rewrite(engine: Engine, first: date, end: date, now: datetime) -> None:
    """Replace the rows of the days [first, end) with what the outbox holds now."""
    with engine.begin() as conn:
        grouped = _grouped(conn, _start(first), _start(end))
        conn.execute(
            delete(days).where(days.c.day >= first.isoformat(), days.c.day < end.isoformat())
        )
        rows = [
            {
                "day": d,
                "event_type": k,
                "states": json.dumps(dict(f.states)),
                "sync_ms": json.dumps({str(m): n for m, n in f.sync_ms.items()}),
                "sync_sum": f.sync_sum,
                "computed_at": now,
            }
            for (d, k), f in grouped.items()
        ]
        if rows:
            conn.execute(insert(days), rows)


def per_day(
    conn: Connection,
    start: date,
    end: date,
    *,
    event_type: str | None,
    now: datetime,
) -> dict[date, DayFigures]:
    """Each day of [start, end) -> its figures: closed days from ``insights_days``, the
    others live from the outbox."""
    closed_before = min(max(_closed_before(now), start), end)
    result: dict[date, DayFigures] = {}
    if start < closed_before:
        query = select(days).where(
            days.c.day >= start.isoformat(), days.c.day < closed_before.isoformat()
        )
        if event_type is not None:
            query = query.where(days.c.event_type == event_type)
        for row in conn.execute(query):
            figures = DayFigures(
                Counter({k: int(v) for k, v in json.loads(row.states).items()}),
                Counter({int(k): int(v) for k, v in json.loads(row.sync_ms).items()}),
                float(row.sync_sum),
            )
            result.setdefault(date.fromisoformat(row.day), DayFigures()).add(figures)
    if closed_before < end:
        live = _grouped(conn, _start(closed_before), _start(end), event_type)
        for (d, _kind), figures in live.items():
            result.setdefault(date.fromisoformat(d), DayFigures()).add(figures)
    return result


def merged(figures: Iterable[DayFigures]) -> DayFigures:
    total = DayFigures()
    for f in figures:
        total.add(f)
    return total


def percentile_ms(histogram: Counter[int], share: float) -> int | None:
    """The nearest-rank percentile of a histogram of whole milliseconds."""
    count = sum(histogram.values())
    if not count:
        return None
    permille = round(share * 1000)
    rank = max(1, -(-permille * count // 1000))  # ceil, in integers
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)
