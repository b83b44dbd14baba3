"""Snapshots are ordered by instant, whatever offset their ``updatedAt`` was written with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine

from outbox.store import SUPERSEDED, SYNCED, NewEvent, OutboxStore

CET = timezone(timedelta(hours=1))


@pytest.fixture
def engine(outbox_engine: Engine) -> Engine:
    return outbox_engine


def snapshot(body: str, at: datetime) -> NewEvent:
    return NewEvent(
        key="bk1",
        kind="booking.updated",
        payload={"bookingId": "bk1", "body": body},
        body_hash=f"hash-{body}",
        snapshot_at=at,
    )


def test_an_offset_snapshot_keeps_its_instant(engine: Engine) -> None:
    """10:30+01:00 is stored and read back as 09:30Z, not as 10:30 wall-clock."""
    store = OutboxStore(engine)
    with store.transaction() as conn:
        event, _ = store.enqueue(conn, snapshot("a", datetime(2026, 11, 30, 10, 30, tzinfo=CET)))
    assert event.snapshot_at == datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    assert event.snapshot_at.utcoffset() == timedelta(0)


def test_an_older_snapshot_with_a_later_wall_clock_is_superseded(engine: Engine) -> None:
    """Applied 09:45Z, then 10:30+01:00 (09:30Z) arrives: it is older and changes nothing."""
    store = OutboxStore(engine)
    with store.transaction() as conn:
        newer, _ = store.enqueue(conn, snapshot("new", datetime(2026, 11, 30, 9, 45, tzinfo=UTC)))
    [claim] = store.claim("w", limit=5, lease_seconds=60)
    with store.transaction() as conn:
        store.mark_synced(conn, claim.event.id, claim.token, {})
    with store.transaction() as conn:
        older, _ = store.enqueue(conn, snapshot("old", datetime(2026, 11, 30, 10, 30, tzinfo=CET)))
    assert store.claim("w", limit=5, lease_seconds=60) == []
    assert [store.get(e.id).state for e in (newer, older)] == [SYNCED, SUPERSEDED]  # type: ignore[union-attr]
