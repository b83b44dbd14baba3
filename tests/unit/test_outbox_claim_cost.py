"""What a claim costs: round trips per batch, and work that does not grow with history."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, update

from outbox.db import make_engine
from outbox.schema import events, outbox_metadata
from outbox.store import SYNCED, NewEvent, OutboxStore

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _new(key: str) -> NewEvent:
    return NewEvent(
        key=key, kind="booking.created", payload={"bookingId": key}, body_hash=key, snapshot_at=AT
    )


def _fill(store: OutboxStore, keys: list[str]) -> None:
    with store.transaction() as conn:
        for key in keys:
            store.enqueue(conn, _new(key))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path}/outbox.db")
    outbox_metadata.create_all(eng)
    yield eng
    eng.dispose()


def test_a_batch_claim_costs_four_statements(outbox_engine: Engine) -> None:
    """Claiming a batch reads the candidates' rows in one query, coalesces them in two
    (the older snapshots superseded, the keys' synced snapshots read) and leases them
    in one: none per event on SQLite."""
    store = OutboxStore(outbox_engine)
    _fill(store, [f"bk{i}" for i in range(10)])
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            statements.append(statement)

    event.listen(outbox_engine, "before_cursor_execute", count)
    try:
        claims = store.claim("w", limit=10, lease_seconds=60)
    finally:
        event.remove(outbox_engine, "before_cursor_execute", count)
    assert len(claims) == 10
    # PostgreSQL adds a key lock and its re-check per event.
    per_event = 0 if outbox_engine.dialect.name == "sqlite" else 2
    assert len(statements) <= 4 + per_event * 10, statements
    assert {c.event.attempts for c in claims} == {1}
    assert len({c.token for c in claims}) == 10
    with outbox_engine.connect() as conn:
        leased = conn.execute(
            events.select().where(events.c.lease_owner == "w", events.c.attempts == 1)
        ).all()
    assert {row.lease_token for row in leased} == {c.token for c in claims}


def _claim_instructions(engine: Engine, store: OutboxStore) -> int:
    """SQLite VM instructions run by one claim of one event (in steps of 100)."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    def on_connect(dbapi: sqlite3.Connection, _record: Any) -> None:
        dbapi.set_progress_handler(tick, 100)

    engine.dispose()
    event.listen(engine, "connect", on_connect)
    try:
        assert len(store.claim("w", limit=1, lease_seconds=60)) == 1
    finally:
        event.remove(engine, "connect", on_connect)
        engine.dispose()
    return steps


def test_a_claims_work_does_not_grow_with_the_synced_history(sqlite_engine: Engine) -> None:
    """A claim reads only its key's rows: 5,000 synced events of other bookings do not
    make it slower (they made every claim of a drain scan them all)."""
    store = OutboxStore(sqlite_engine)
    _fill(store, ["first"])
    small = _claim_instructions(sqlite_engine, store)
    _fill(store, [f"old{i}" for i in range(5000)] + ["second"])
    with store.transaction() as conn:
        conn.execute(update(events).where(events.c.key.like("old%")).values(state=SYNCED))
    large = _claim_instructions(sqlite_engine, store)
    assert large <= 2 * small + 5, (small, large)
