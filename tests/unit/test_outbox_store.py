"""The outbox store on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from outbox.db import make_engine
from outbox.exceptions import EventNotFound, LeaseLost
from outbox.retry import RetryPolicy
from outbox.schema import outbox_metadata
from outbox.store import NewEvent, OutboxStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/outbox.db"
    else:
        url = request.getfixturevalue("pg_url")
    eng = make_engine(url)
    outbox_metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, clock: Clock) -> OutboxStore:
    return OutboxStore(
        engine, retry=RetryPolicy(max_attempts=3, base_seconds=10, cap_seconds=100), clock=clock
    )


def new(key: str = "bk1", body: str = "a", webhook_id: str | None = None) -> NewEvent:
    return NewEvent(
        key=key,
        kind="booking.created",
        payload={"bookingId": key, "body": body},
        body_hash=f"hash-{body}",
        snapshot_at=datetime(2026, 11, 23, tzinfo=UTC),
        webhook_id=webhook_id,
    )


def put(store: OutboxStore, event: NewEvent) -> tuple[str, bool]:
    with store.transaction() as conn:
        stored, created = store.enqueue(conn, event)
    return stored.id, created


def test_repeat_delivery_returns_the_first_event(store: OutboxStore) -> None:
    """Same webhook-id, or same body for the same key, stores nothing new."""
    first, created = put(store, new(body="a", webhook_id="msg1"))
    assert created
    assert put(store, new(body="a")) == (first, False)
    assert put(store, new(body="b", webhook_id="msg1")) == (first, False)
    other, created = put(store, new(body="b"))
    assert created
    assert other != first
    assert put(store, new(key="bk2", body="a"))[1]  # same body, other key: new
    assert store.counts()["queued"] == 3


def test_claim_hands_out_one_event_per_key_in_order(store: OutboxStore) -> None:
    """A key's second event waits until its first is settled."""
    a1, _ = put(store, new("A", "1"))
    a2, _ = put(store, new("A", "2"))
    b1, _ = put(store, new("B", "1"))
    claims = store.claim("w1", limit=10, lease_seconds=30)
    assert sorted(c.event.id for c in claims) == sorted([a1, b1])
    assert store.claim("w2", limit=10, lease_seconds=30) == []
    first = next(c for c in claims if c.event.id == a1)
    with store.transaction() as conn:
        store.mark_synced(conn, a1, first.token, {"ok": True})
    (second,) = store.claim("w2", limit=10, lease_seconds=30)
    assert second.event.id == a2
    assert store.get(a1).state == "synced"  # type: ignore[union-attr]
    assert store.get(a1).result == {"ok": True}  # type: ignore[union-attr]


def test_expired_lease_is_taken_over_and_old_holder_is_fenced(
    store: OutboxStore, clock: Clock
) -> None:
    """After the lease expires another worker claims it; the first cannot settle."""
    event_id, _ = put(store, new())
    (old,) = store.claim("w1", limit=1, lease_seconds=30)
    clock.advance(29)
    assert store.claim("w2", limit=1, lease_seconds=30) == []
    clock.advance(2)
    (fresh,) = store.claim("w2", limit=1, lease_seconds=30)
    assert fresh.event.id == event_id
    assert fresh.token != old.token
    with pytest.raises(LeaseLost), store.transaction() as conn:
        store.mark_synced(conn, event_id, old.token, {})
    with pytest.raises(LeaseLost):
        store.mark_failed(event_id, old.token, "late", retryable=True)
    with store.transaction() as conn:
        store.mark_synced(conn, event_id, fresh.token, {})
    assert store.get(event_id).attempts == 2  # type: ignore[union-attr]


def test_retry_backs_off_then_dead_letters(store: OutboxStore, clock: Clock) -> None:
    """Retryable failures wait with backoff; the last allowed attempt ends dead."""
    event_id, _ = put(store, new())
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    failed = store.mark_failed(event_id, claim.token, "boom", retryable=True)
    assert failed.state == "retrying"
    delay = (failed.next_attempt_at - clock.now).total_seconds()
    assert 5 <= delay <= 10
    assert store.claim("w", limit=1, lease_seconds=30) == []
    clock.advance(10)
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    store.mark_failed(event_id, claim.token, "boom", retryable=True, retry_after=50)
    assert (store.get(event_id).next_attempt_at - clock.now).total_seconds() >= 50  # type: ignore[union-attr]
    clock.advance(60)
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    dead = store.mark_failed(event_id, claim.token, "boom", retryable=True)
    assert dead.state == "dead"
    assert dead.last_error == "gave up after 3 attempts: boom"


def test_permanent_failure_dead_letters_at_once(store: OutboxStore) -> None:
    """A permanent error does not retry."""
    event_id, _ = put(store, new())
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    dead = store.mark_failed(event_id, claim.token, "invalid email", retryable=False)
    assert (dead.state, dead.last_error, dead.attempts) == ("dead", "invalid email", 1)


def test_replay_is_idempotent(store: OutboxStore) -> None:
    """Replaying a dead event queues it once; replaying again changes nothing."""
    event_id, _ = put(store, new())
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    store.quarantine(event_id, claim.token, "unknown eventType")
    assert store.get(event_id).state == "quarantined"  # type: ignore[union-attr]
    (replayed,) = store.replay([event_id])
    assert (replayed.state, replayed.attempts) == ("queued", 0)
    (again,) = store.replay([event_id])
    assert again == replayed
    with pytest.raises(EventNotFound):
        store.replay(["nope"])


def test_release_gives_the_event_back_uncounted(store: OutboxStore) -> None:
    """A released claim is claimable at once and its attempt is not counted."""
    event_id, _ = put(store, new())
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    store.release(event_id, claim.token)
    (again,) = store.claim("w", limit=1, lease_seconds=30)
    assert again.event.attempts == 1


def test_counts_and_oldest_pending_age(store: OutboxStore, clock: Clock) -> None:
    """Counts cover every state; the age is measured from receipt."""
    assert store.oldest_pending_age() is None
    put(store, new())
    clock.advance(42)
    assert store.counts() == {
        "queued": 1,
        "retrying": 0,
        "synced": 0,
        "dead": 0,
        "quarantined": 0,
        "superseded": 0,
    }
    assert store.oldest_pending_age() == pytest.approx(42)
