"""The bookings projection: one ``insights_bookings`` row per booking, from the outbox.

Each report first reads the booking events stored since the last one (by ``seq``) and
merges them in: the first receipt of any event is the booking's cohort, the newest
snapshot (``snapshot_at``, then ``seq``) gives its event type, start and status. A merge
is idempotent and order-free, so events are read again harmlessly: the high-water mark
only moves past events older than ``SETTLE_MARGIN``, because on PostgreSQL a lower
``seq`` can commit after a higher one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select

from adapter.db import upsert_insert
from adapter.insights.tables import bookings, state
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
_MARK = "bookings_seq"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _mark(conn: Connection) -> int:
    value = conn.execute(select(state.c.value).where(state.c.name == _MARK)).scalar()
    return int(value) if value is not None else 0


def _set_mark(conn: Connection, seq: int) -> None:
    stmt = upsert_insert(conn, state).values(name=_MARK, value=str(seq))
    conn.execute(
        stmt.on_conflict_do_update(index_elements=[state.c.name], set_={"value": str(seq)})
    )


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
    keys = list(merged)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        for old in conn.execute(select(bookings).where(bookings.c.booking_id.in_(chunk))):
            mine = merged[old.booking_id]
            stored = {
                "received_at": _utc(old.received_at),
                "snapshot_at": _utc(old.snapshot_at),
                "snapshot_seq": old.snapshot_seq,
            }
            if not _newer(mine, stored):
                mine.update(
                    event_type=old.event_type,
                    start_at=_utc(old.start_at),
                    status=old.status,
                    snapshot_at=stored["snapshot_at"],
                    snapshot_seq=old.snapshot_seq,
                )
            mine["received_at"] = min(mine["received_at"], stored["received_at"])
    if not merged:
        return
    stmt = upsert_insert(conn, bookings)
    stmt = stmt.on_conflict_do_update(
        index_elements=[bookings.c.booking_id],
        set_={
            name: stmt.excluded[name]
            for name in (
                "event_type",
                "received_at",
                "start_at",
                "status",
                "snapshot_at",
                "snapshot_seq",
            )
        },
    )
    conn.execute(stmt, list(merged.values()))


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
                return read
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
