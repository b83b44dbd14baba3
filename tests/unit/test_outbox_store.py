"""The outbox store on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from adapter.settings import Settings
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


def new(key: str = "bk1", body: str = "a", webhook_id: str | None = None, at: int = 0) -> NewEvent:
    return NewEvent(
        key=key,
        kind="booking.created",
        payload={"bookingId": key, "body": body},
        body_hash=f"hash-{body}",
        snapshot_at=datetime(2026, 11, 23, tzinfo=UTC) + timedelta(hours=at),
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


def test_claim_coalesces_a_keys_pending_events_into_the_newest(store: OutboxStore) -> None:
    """Of one key's pending events only the newest snapshot is applied; older ones supersede."""
    a_new, _ = put(store, new("A", "2", at=2))
    a_old, _ = put(store, new("A", "1", at=1))  # arrives later, but is an older snapshot
    b1, _ = put(store, new("B", "1"))
    claims = store.claim("w1", limit=10, lease_seconds=30)
    assert sorted(c.event.id for c in claims) == sorted([a_new, b1])
    old = store.get(a_old)
    assert old is not None
    assert old.state == "superseded"
    assert old.last_error == f"coalesced into newer snapshot {a_new}"


def test_a_key_has_at_most_one_event_in_flight(store: OutboxStore) -> None:
    """A newer event waits while its key's older one is leased, then is handed out."""
    a1, _ = put(store, new("A", "1", at=1))
    (first,) = store.claim("w1", limit=10, lease_seconds=30)
    a2, _ = put(store, new("A", "2", at=2))
    assert store.claim("w2", limit=10, lease_seconds=30) == []
    with store.transaction() as conn:
        store.mark_synced(conn, a1, first.token, {"ok": True})
    (second,) = store.claim("w2", limit=10, lease_seconds=30)
    assert second.event.id == a2
    synced = store.get(a1)
    assert synced is not None
    assert (synced.state, synced.result) == ("synced", {"ok": True})


@pytest.mark.parametrize("late_at", [1, 2], ids=["older", "same-time"])
def test_snapshot_not_newer_than_the_applied_one_is_superseded(
    store: OutboxStore, late_at: int
) -> None:
    """A late older (or equal) snapshot changes nothing and ends superseded."""
    applied, _ = put(store, new("A", "2", at=2))
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    with store.transaction() as conn:
        store.mark_synced(conn, applied, claim.token, {})
    late, _ = put(store, new("A", "late", at=late_at))
    assert store.claim("w", limit=1, lease_seconds=30) == []
    event = store.get(late)
    assert event is not None
    assert event.state == "superseded"
    assert event.last_error == "not newer than the snapshot already applied"


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


def test_many_settles_in_one_statement_are_fenced_together(store: OutboxStore) -> None:
    """``mark_synced_many`` marks every claim synced; one token fenced out raises
    ``LeaseLost`` and, rolled back, leaves every event as it was."""
    for key in ("bk1", "bk2", "bk3"):
        put(store, new(key))
    claims = store.claim("w1", limit=3, lease_seconds=30)
    marks = [(claim.event.id, claim.token, {"n": i}) for i, claim in enumerate(claims)]
    stale = [*marks[:2], (marks[2][0], "not-the-token", {})]
    with pytest.raises(LeaseLost), store.transaction() as conn:
        store.mark_synced_many(conn, stale)
    assert {store.get(claim.event.id).state for claim in claims} == {"queued"}  # type: ignore[union-attr]

    with store.transaction() as conn:
        store.mark_synced_many(conn, marks)
    synced = [store.get(claim.event.id) for claim in claims]
    assert [(e.state, e.result) for e in synced] == [  # type: ignore[union-attr]
        ("synced", {"n": 0}),
        ("synced", {"n": 1}),
        ("synced", {"n": 2}),
    ]


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


def test_postpone_waits_until_the_time_given_and_never_counts_towards_dead(
    store: OutboxStore, clock: Clock
) -> None:
    """Postponed ten times (max_attempts 3), the event waits each time and then claims as new."""
    event_id, _ = put(store, new())
    for _ in range(10):
        (claim,) = store.claim("w", limit=1, lease_seconds=30)
        until = clock() + timedelta(hours=2)
        event = store.postpone(event_id, claim.token, until, "HubSpotPaused: migration")
        assert (event.state, event.attempts, event.next_attempt_at) == ("retrying", 0, until)
        assert event.last_error == "HubSpotPaused: migration"
        clock.advance(7199)
        assert store.claim("w", limit=1, lease_seconds=30) == []
        clock.advance(1)
    (claim,) = store.claim("w", limit=1, lease_seconds=30)
    assert claim.event.attempts == 1
    store.release(event_id, claim.token)
    with pytest.raises(LeaseLost):
        store.postpone(event_id, claim.token, clock(), "too late: released")


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


def test_concurrent_claimers_keep_one_in_flight_per_key_and_order(engine: Engine) -> None:
    """Four threads claiming while events arrive: never two of a key at once, snapshots rise."""
    import threading

    store = OutboxStore(engine)
    keys, per_key = 12, 6
    in_flight: set[str] = set()
    applied: dict[str, list[datetime]] = {}
    guard = threading.Lock()
    violations: list[str] = []
    done_producing = threading.Event()

    def produce() -> None:
        for n in range(per_key):
            for k in range(keys):
                put(store, new(f"K{k}", f"{k}-{n}", at=n))
        done_producing.set()

    def consume() -> None:
        idle = 0
        while idle < 20:
            claims = store.claim(threading.current_thread().name, limit=3, lease_seconds=30)
            if not claims:
                idle = idle + 1 if done_producing.is_set() else 0
                threading.Event().wait(0.01)
                continue
            idle = 0
            for claim in claims:
                key = claim.event.key
                with guard:
                    if key in in_flight:
                        violations.append(key)
                    in_flight.add(key)
                threading.Event().wait(0.002)
                with guard:
                    applied.setdefault(key, []).append(claim.event.snapshot_at)
                    in_flight.discard(key)
                with store.transaction() as conn:
                    store.mark_synced(conn, claim.event.id, claim.token, {})

    threads = [threading.Thread(target=produce)] + [
        threading.Thread(target=consume, name=f"w{i}") for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert violations == []
    assert sorted(applied) == sorted(f"K{k}" for k in range(keys))
    for key, snapshots in applied.items():
        assert snapshots == sorted(set(snapshots)), key
        assert snapshots[-1] == datetime(2026, 11, 23, tzinfo=UTC) + timedelta(hours=per_key - 1)
    counts = store.counts()
    assert counts["queued"] == counts["retrying"] == 0
    assert counts["synced"] + counts["superseded"] == keys * per_key


def test_postgres_claim_race_on_one_key_is_closed(pg_url: str) -> None:
    """A claim of a key's newer event waits out another worker's uncommitted claim of the key."""
    import threading

    from sqlalchemy import event

    engine = make_engine(pg_url)
    outbox_metadata.create_all(engine)
    store = OutboxStore(engine)
    put(store, new("A", "1", at=1))
    paused, resume = threading.Event(), threading.Event()
    slow_thread: list[int] = []

    @event.listens_for(engine, "after_cursor_execute")
    def pause_after_lease(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if (
            threading.get_ident() in slow_thread
            and "attempts=(outbox_events.attempts +" in statement
        ):
            paused.set()
            resume.wait(10)

    first: list[object] = []

    def slow_claim() -> None:
        slow_thread.append(threading.get_ident())
        first.extend(store.claim("slow", limit=5, lease_seconds=30))

    worker = threading.Thread(target=slow_claim)
    worker.start()
    try:
        assert paused.wait(10)
        put(store, new("A", "2", at=2))  # a newer snapshot arrives while that claim is open
        assert store.claim("fast", limit=5, lease_seconds=30) == []
    finally:
        resume.set()
        worker.join(10)
        engine.dispose()
    assert len(first) == 1


def test_default_retry_schedule_spans_about_a_day() -> None:
    """Issue 5: by default an event is retried for about a day before it is dead."""
    policy = RetryPolicy()
    settings_default = Settings.model_fields["outbox_max_attempts"].default
    assert policy.max_attempts == settings_default
    waits = range(1, policy.max_attempts)  # the last attempt is not followed by a wait
    shortest = sum(policy.delay(n, _Fixed(0.5)) for n in waits) / 3600
    longest = sum(policy.delay(n, _Fixed(1.0)) for n in waits) / 3600
    assert 12 <= shortest < 24 < longest <= 30, (shortest, longest)


class _Fixed(random.Random):
    """A ``Random`` whose ``uniform`` always answers one value: the jitter's bounds."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return self.value
