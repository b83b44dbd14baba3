"""insights_days: closed days are summed up once and summed up again when one of their
events changes (a retry settling days later), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from adapter import db
from adapter.ingest import body_hash
from adapter.insights.days import per_day, refresh
from adapter.insights.project import catch_up
from outbox.store import NewEvent, OutboxStore
from tests.conftest import seed_booking

T0 = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=6)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (
        f"sqlite:///{tmp_path / 'd.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = db.make_engine(url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def test_a_closed_day_is_summed_again_when_an_event_settles_later(
    migrated: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Day 1: one event synced in 1.5 s, one retrying. Summed up on day 3 (1 synced,
    1 pending). The retry succeeds on day 4, 3 days after receipt: day 1 is summed up
    again (2 synced, the second taking 3 days). (The catch-up's ANALYZE runs too.)"""
    monkeypatch.setattr("adapter.insights.project.ANALYZE_AFTER", 1)
    clock = [T0]
    store = OutboxStore(migrated, clock=lambda: clock[0])
    ids = []
    for n, kind in enumerate(("workshop", "30min-consultation")):
        body = seed_booking(bookingId=f"bk-{n}", eventType=kind)
        with store.transaction() as conn:
            event, _ = store.enqueue(
                conn,
                NewEvent(
                    key=f"bk-{n}",
                    kind="booking.created",
                    payload=body,
                    body_hash=body_hash(body),
                    snapshot_at=T0,
                ),
            )
        ids.append(event.id)
    claims = {c.event.id: c for c in store.claim("test", limit=10, lease_seconds=60)}
    clock[0] = T0 + timedelta(seconds=1.5)
    with store.transaction() as conn:
        store.mark_synced(conn, ids[0], claims[ids[0]].token, {})
    store.mark_failed(ids[1], claims[ids[1]].token, "CRM down", retryable=True)

    # Summed up while day 1 is open: nothing written; it closes before the next refresh,
    # which writes it although none of its events changed in between.
    assert refresh(migrated, now=T0 + timedelta(hours=1)) == 0
    day3 = T0 + timedelta(days=2)
    catch_up(migrated, now=day3)
    assert refresh(migrated, now=day3) == 2  # day 1, and day 2 (no events) closing too
    with migrated.connect() as conn:
        first = per_day(conn, T0.date(), T0.date() + timedelta(days=1), event_type=None, now=day3)
    figures = first[T0.date()]
    assert (figures.states["synced"], figures.states["retrying"]) == (1, 1)
    assert dict(figures.sync_ms) == {1500: 1}
    assert refresh(migrated, now=day3 + timedelta(minutes=10)) == 0  # nothing changed

    clock[0] = T0 + timedelta(days=3)
    (claim,) = store.claim("test", limit=10, lease_seconds=60)
    with store.transaction() as conn:
        store.mark_synced(conn, ids[1], claim.token, {})
    day4 = T0 + timedelta(days=3, minutes=5)
    assert refresh(migrated, now=day4) == 2  # day 1 (its event settled) and day 3, closing
    with migrated.connect() as conn:
        again = per_day(conn, T0.date(), T0.date() + timedelta(days=1), event_type=None, now=day4)
        typed = per_day(
            conn, T0.date(), T0.date() + timedelta(days=1), event_type="workshop", now=day4
        )
    figures = again[T0.date()]
    assert figures.states == {"synced": 2}
    assert dict(figures.sync_ms) == {1500: 1, 3 * 86400 * 1000: 1}
    assert figures.sync_sum == pytest.approx(1.5 + 3 * 86400)
    assert typed[T0.date()].states == {"synced": 1}
