"""The bookings projection: one ``insights_bookings`` row per booking, from the outbox
and from ``crm_changes``.

Each report first reads the booking events stored since the last one (by ``seq``) and
merges them in: the first receipt of any event is the booking's cohort, the newest
snapshot (``snapshot_at``, then ``seq``) gives its event type, start and status. A merge
is idempotent and order-free, so events are read again harmlessly: the high-water mark
only moves past events older than ``SETTLE_MARGIN``, because on PostgreSQL a lower
``seq`` can commit after a higher one.

Changes made in the CRM are merged the same way (by ``crm_changes.id``, append-only):
the first sales action, the newest meeting outcome, the first move beyond the stages a
booking sets itself (judged with the mapping of the moment the change is read), and the
first move to WON. So the funnel, cancellations and response time read one row per
booking instead of grouping every change again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, case, func, or_, select, text, update

from adapter.db import upsert_insert
from adapter.insights.tables import bookings, crm_changes, state
from outbox.schema import events

BOOKING_KINDS = (
    "booking.created",
    "booking.rescheduled",
    "booking.updated",
    "booking.cancelled",
    "booking.no_show",
)
STATUS_OF_KIND = {"booking.cancelled": "cancelled", "booking.no_show": "no_show"}
SETTLE_MARGIN = timedelta(minutes=2)
BATCH = 5000
ANALYZE_AFTER = 20_000
_MARK = "bookings_seq"
_CHANGES_MARK = "changes_id"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _mark(conn: Connection, name: str = _MARK) -> int:
    value = conn.execute(select(state.c.value).where(state.c.name == name)).scalar()
    return int(value) if value is not None else 0


def _set_mark(conn: Connection, seq: int, name: str = _MARK) -> None:
    stmt = upsert_insert(conn, state).values(name=name, value=str(seq))
    stmt = stmt.on_conflict_do_update(index_elements=[state.c.name], set_={"value": str(seq)})
    conn.execute(stmt)


def _parse(row: Any) -> dict[str, Any] | None:
    try:
        payload = json.loads(row.payload)
        start = datetime.fromisoformat(str(payload["scheduledDate"]).replace("Z", "+00:00"))
        event_type = str(payload["eventType"])[:200]
    except (ValueError, KeyError, TypeError):
        return None  # stored events are validated bookings; a stray job body is skipped
    return {
        "booking_id": row.key,
        "event_type": event_type,
        "received_at": _utc(row.received_at),
        "start_at": _utc(start),
        "status": STATUS_OF_KIND.get(row.kind, "live"),
        "snapshot_at": _utc(row.snapshot_at),
        "snapshot_seq": row.seq,
    }


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["snapshot_at"], a["snapshot_seq"]) > (b["snapshot_at"], b["snapshot_seq"])


def _merge(conn: Connection, parsed: Sequence[dict[str, Any]]) -> None:
    """Upsert the batch; the database keeps the earliest receipt and the newest snapshot,
    so no row is read first (and two processes merging at once agree)."""
    merged: dict[str, dict[str, Any]] = {}
    for row in parsed:
        have = merged.get(row["booking_id"])
        if have is None:
            merged[row["booking_id"]] = dict(row)
            continue
        first = min(have["received_at"], row["received_at"])
        if _newer(row, have):
            have.update(row)
        have["received_at"] = first
    if not merged:
        return
    stmt = upsert_insert(conn, bookings)
    new, old = stmt.excluded, bookings.c
    newer = or_(
        new.snapshot_at > old.snapshot_at,
        and_(new.snapshot_at == old.snapshot_at, new.snapshot_seq > old.snapshot_seq),
    )
    snapshot = ("event_type", "start_at", "status", "snapshot_at", "snapshot_seq")
    stmt = stmt.on_conflict_do_update(
        index_elements=[bookings.c.booking_id],
        set_={
            "received_at": case(
                (new.received_at < old.received_at, new.received_at), else_=old.received_at
            ),
            **{name: case((newer, new[name]), else_=old[name]) for name in snapshot},
        },
    )
    conn.execute(stmt, list(merged.values()))


def _analyze(engine: Engine, read: int) -> None:
    """After a large catch-up (the first one reads the history), refresh the planner's
    statistics: PostgreSQL otherwise plans for the empty table it last analysed."""
    if read >= ANALYZE_AFTER:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE insights_bookings"))


def catch_up(engine: Engine, *, now: datetime | None = None) -> int:
    """Merge the booking events stored since the last call; returns how many were read."""
    now = now or datetime.now(UTC)
    settled_before = now - SETTLE_MARGIN
    read = 0
    with engine.connect() as conn:
        cursor = _mark(conn)
    holding = False  # a recent event was read: the stored mark stays before it
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(
                    events.c.seq,
                    events.c.key,
                    events.c.kind,
                    events.c.payload,
                    events.c.received_at,
                    events.c.snapshot_at,
                )
                .where(events.c.seq > cursor, events.c.kind.in_(BOOKING_KINDS))
                .order_by(events.c.seq)
                .limit(BATCH)
            ).all()
            if not rows:
                break
            _merge(conn, [p for p in map(_parse, rows) if p is not None])
            read += len(rows)
            # The mark passes only events old enough that no lower seq can still commit.
            if not holding:
                prefix = 0
                for row in rows:
                    if _utc(row.received_at) >= settled_before:
                        holding = True
                        break
                    prefix += 1
                if prefix:
                    _set_mark(conn, rows[prefix - 1].seq)
            cursor = rows[-1].seq
    _analyze(engine, read)  # outside the batch's transaction: SQLite has one writer
    return read


# -- changes made in the CRM --------------------------------------------------------

_PROGRESS = ("first_action_at", "crm_outcome", "crm_outcome_at", "advanced_at", "won_at")


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _absorb(
    have: dict[str, Any], change: Any, *, not_progress: frozenset[str], won: frozenset[str]
) -> None:
    at = _utc(change.changed_at)
    field, value = change.field, change.new_value
    if (
        (field == "status" and value == "done")
        or (field == "outcome" and value == "COMPLETED")
        or field == "stage"
    ):
        have["first_action_at"] = _earliest(have["first_action_at"], at)
    if field == "outcome" and (have["crm_outcome_at"] is None or at >= have["crm_outcome_at"]):
        have["crm_outcome"], have["crm_outcome_at"] = (value or "")[:32], at
    if field == "stage" and value is not None:
        if value in won:
            have["won_at"] = _earliest(have["won_at"], at)
        if value not in not_progress:
            have["advanced_at"] = _earliest(have["advanced_at"], at)


def catch_up_changes(
    engine: Engine,
    *,
    not_progress: frozenset[str],
    won: frozenset[str],
    now: datetime | None = None,
) -> int:
    """Merge the CRM changes recorded since the last call; returns how many were read.

    Run after ``catch_up``: every stored booking event is then in the projection, so a
    change naming a booking it does not hold names none of ours and is passed over.
    """
    now = now or datetime.now(UTC)
    settled_before = now - SETTLE_MARGIN
    read = 0
    with engine.connect() as conn:
        cursor = _mark(conn, _CHANGES_MARK)
    holding = False
    fields = ("status", "outcome", "stage")
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(
                    crm_changes.c.id,
                    crm_changes.c.booking_id,
                    crm_changes.c.field,
                    crm_changes.c.new_value,
                    crm_changes.c.changed_at,
                    crm_changes.c.recorded_at,
                )
                .where(crm_changes.c.id > cursor, crm_changes.c.field.in_(fields))
                .order_by(crm_changes.c.id)
                .limit(BATCH)
            ).all()
            if not rows:
                return read
            keys = list({row.booking_id for row in rows})
            held: dict[str, dict[str, Any]] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for old in conn.execute(
                    select(bookings.c.booking_id, *(bookings.c[n] for n in _PROGRESS)).where(
                        bookings.c.booking_id.in_(chunk)
                    )
                ):
                    held[old.booking_id] = {
                        n: (
                            _utc(old._mapping[n])
                            if n.endswith("_at") and old._mapping[n]
                            else old._mapping[n]
                        )
                        for n in _PROGRESS
                    }
            for row in rows:
                if row.booking_id in held:
                    _absorb(held[row.booking_id], row, not_progress=not_progress, won=won)
            if held:
                conn.execute(
                    update(bookings)
                    .where(bookings.c.booking_id == bindparam("b_id"))
                    .values({n: bindparam(f"b_{n}") for n in _PROGRESS}),
                    [
                        {"b_id": key, **{f"b_{n}": values[n] for n in _PROGRESS}}
                        for key, values in held.items()
                    ],
                )
            read += len(rows)
            if not holding:
                prefix = 0
                for row in rows:
                    if _utc(row.recorded_at) >= settled_before:
                        holding = True
                        break
                    prefix += 1
                if prefix:
                    _set_mark(conn, rows[prefix - 1].id, _CHANGES_MARK)
            cursor = rows[-1].id


# -- owners ------------------------------------------------------------------------


def fill_owners(engine: Engine, *, now: datetime | None = None) -> int:
    """Read the owner of each booking written to the CRM since the last call: the local
    CRM's meeting owner, else the round robin's choice, else ``''``. A booking still in
    the queue (or received within the margin) is read on a later call."""
    from adapter.backends.local.models import activities
    from adapter.owners.store import assignments
    from outbox.store import PENDING

    now = now or datetime.now(UTC)
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
    waiting = (
        select(events.c.seq)
        .where(events.c.key == bookings.c.booking_id, events.c.state.in_(PENDING))
        .exists()
    )
    with engine.begin() as conn:
        result = conn.execute(
            update(bookings)
            .where(
                bookings.c.owner.is_(None),
                bookings.c.received_at < now - SETTLE_MARGIN,
                ~waiting,
            )
            .values(owner=func.lower(func.coalesce(local, rotated, "")))
        )
    return int(result.rowcount or 0)
