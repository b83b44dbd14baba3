"""The worker decides retry, dead-letter or quarantine by the error's type alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, update

from adapter.backends.base import (
    ActivityRef,
    ContactRef,
    LeadRef,
    Settle,
    SyncJob,
    SyncResult,
)
from adapter.booking import parse_booking
from adapter.db import make_engine, upgrade
from adapter.errors import (
    AdapterError,
    CrmValidationError,
    MappingError,
    PausedError,
    RateLimitedError,
    RetryableError,
)
from adapter.ingest import accept_booking
from adapter.mapping import MappingConfig, load_mapping
from adapter.metrics import Metrics
from adapter.worker import Worker
from outbox.exceptions import LeaseLost
from outbox.retry import RetryPolicy
from outbox.schema import events
from outbox.store import OutboxStore
from tests.conftest import DEFAULT_MAPPING, seed_booking

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class FakeBackend:
    """An in-memory CRM: remembers applied plans; fails jobs as told."""

    name = "fake"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.applied: dict[str, SyncJob] = {}
        self.fail_with: dict[str, AdapterError] = {}
        self.explode: Exception | None = None
        self.batches: list[int] = []
        self.stolen: dict[str, Callable[[], object]] = {}

    def apply(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        if self.explode is not None:
            raise self.explode
        self.batches.append(len(jobs))
        failures: dict[str, AdapterError] = {}
        for job in jobs:
            error = self.fail_with.get(job.booking_id)
            if error is not None:
                failures[job.event_id] = error
                continue
            result = SyncResult(
                lead=LeadRef(id="L", title=job.plan.lead.title),
                contact=ContactRef(id="C", email=job.plan.contact.email),
                company=None,
                activity=ActivityRef(id=f"A-{job.booking_id}"),
                tasks=[],
            )
            if job.booking_id in self.stolen:
                self.stolen[job.booking_id]()  # another worker takes the event over
            try:
                with self.engine.begin() as conn:
                    settle(conn, job, result)
            except LeaseLost:
                continue  # rolled back: the Protocol says report nothing for it
            self.applied[job.booking_id] = job
        return failures

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> OutboxStore:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(engine)
    return OutboxStore(engine, retry=RetryPolicy(max_attempts=3, base_seconds=0.001))


@pytest.fixture
def mapping() -> MappingConfig:
    return load_mapping(DEFAULT_MAPPING)


@pytest.fixture
def backend(store: OutboxStore) -> FakeBackend:
    return FakeBackend(store.engine)


def worker_for(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig, **kw: object
) -> tuple[Worker, list[str]]:
    settled: list[str] = []
    worker = Worker(
        store,
        backend,
        lambda: mapping,
        clock=lambda: NOW,
        on_settled=settled.append,
        **kw,  # type: ignore[arg-type]
    )
    return worker, settled


def run_until_settled(
    worker: Worker, settled: list[str], stop: threading.Event, timeout: float = 5
) -> None:
    """``worker.run`` on a thread until something settles (or ``timeout``), then stopped."""
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    while not settled and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)


def enqueue(store: OutboxStore, mapping: MappingConfig, **overrides: object) -> Callable[[], str]:
    body = seed_booking(**overrides)
    event, _ = accept_booking(store, parse_booking(body), body, mapping)
    return lambda: store.get(event.id).state  # type: ignore[union-attr]


def test_success_is_settled_and_notified(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """A synced event carries the backend's result; the waiter is told."""
    state = enqueue(store, mapping)
    worker, settled = worker_for(store, backend, mapping)
    assert worker.drain() == 1
    assert state() == "synced"
    assert len(settled) == 1
    assert backend.applied["test-123"].plan.lead.title == "workshop - Test Person"


def test_retryable_error_retries_then_dead_letters(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """A retryable error goes to retrying; after the last attempt it is dead with the reason."""
    state = enqueue(store, mapping)
    backend.fail_with["test-123"] = RetryableError("CRM timed out")
    worker, _ = worker_for(store, backend, mapping)
    worker.run_once()
    assert state() == "retrying"
    # Each retry waits its (millisecond) backoff in real time: run until it settles.
    deadline = time.monotonic() + 5
    while state() == "retrying" and time.monotonic() < deadline:
        worker.run_once()
        time.sleep(0.002)
    event = store.list()[0]
    assert (event.state, event.attempts) == ("dead", 3)
    assert event.last_error == "gave up after 3 attempts: RetryableError: CRM timed out"


def test_rate_limit_hint_delays_the_retry(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """A 429's Retry-After is honoured when longer than the backoff."""
    enqueue(store, mapping)
    backend.fail_with["test-123"] = RateLimitedError("slow down", retry_after=120)
    worker, _ = worker_for(store, backend, mapping)
    worker.run_once()
    event = store.list()[0]
    assert event.state == "retrying"
    wait = (event.next_attempt_at - event.received_at).total_seconds()
    assert wait >= 119


def test_a_crm_pause_postpones_the_event_without_spending_attempts(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """Paused five times (max_attempts 3): retrying, no attempt spent, due when the pause ends."""
    state = enqueue(store, mapping)
    metrics = Metrics()
    worker, settled = worker_for(store, backend, mapping, metrics=metrics)
    for _ in range(5):
        until = datetime.now(UTC) + timedelta(hours=2)
        backend.fail_with["test-123"] = PausedError("migrating", until=until, reason="migration")
        with store.transaction() as conn:  # due again, as once the last pause has passed
            conn.execute(update(events).values(next_attempt_at=NOW - timedelta(days=1)))
        assert worker.run_once() == 1
        event = store.list()[0]
        assert (event.state, event.attempts) == ("retrying", 0)
        assert event.next_attempt_at == until
        assert worker.run_once() == 0
    assert state() == "retrying"
    assert metrics.settled.labels("postponed")._value.get() == 5
    assert len(settled) == 5


def test_a_503s_retry_after_delays_the_retry(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """Any retryable error's hint (a 503's Retry-After) is honoured, not only a 429's."""
    enqueue(store, mapping)
    backend.fail_with["test-123"] = RetryableError("HubSpot answered 503", retry_after=600)
    worker, _ = worker_for(store, backend, mapping)
    worker.run_once()
    event = store.list()[0]
    assert (event.next_attempt_at - event.received_at).total_seconds() >= 599


def test_permanent_error_dead_letters_at_once(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """The CRM's validation message is kept as the reason."""
    state = enqueue(store, mapping)
    backend.fail_with["test-123"] = CrmValidationError("Property values were not valid: email")
    worker, _ = worker_for(store, backend, mapping)
    worker.run_once()
    assert state() == "dead"
    assert store.list()[0].last_error == (
        "CrmValidationError: Property values were not valid: email"
    )


def test_mapping_error_from_the_backend_quarantines(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """A backend that cannot place a booking quarantines it instead of dead-lettering."""
    state = enqueue(store, mapping)
    backend.fail_with["test-123"] = MappingError("no pipeline stage 'CONTACTED'")
    worker, _ = worker_for(store, backend, mapping)
    worker.run_once()
    assert state() == "quarantined"


def test_event_type_removed_from_the_mapping_quarantines(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig, tmp_path: Path
) -> None:
    """A booking accepted under one mapping and unplaceable under the reloaded one is kept."""
    state = enqueue(store, mapping, eventType="30min-consultation")
    text = DEFAULT_MAPPING.read_text()
    cut = text.index("  30min-consultation:")
    smaller = tmp_path / "smaller.yaml"
    smaller.write_text(text[:cut])
    worker, _ = worker_for(store, backend, load_mapping(smaller))
    worker.run_once()
    assert state() == "quarantined"
    assert backend.applied == {}


def test_a_backend_crash_retries_the_whole_batch(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """An unexpected exception is treated as retryable for every job of the batch."""
    states = [enqueue(store, mapping, bookingId=f"b{n}") for n in range(3)]
    backend.explode = ConnectionResetError("peer reset")
    worker, _ = worker_for(store, backend, mapping)
    worker.run_once()
    assert [state() for state in states] == ["retrying"] * 3
    assert "ConnectionResetError" in (store.list()[0].last_error or "")


def test_batches_carry_one_event_per_booking(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """Pending bookings are applied in batches of at most batch_size."""
    for n in range(7):
        enqueue(store, mapping, bookingId=f"b{n}")
    worker, _ = worker_for(store, backend, mapping, batch_size=3)
    assert worker.drain() == 7
    assert backend.batches == [3, 3, 1]


def test_a_lease_lost_mid_apply_is_neither_counted_nor_announced(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """When settle is fenced out, the worker neither reports a sync nor wakes a waiter."""
    from adapter.metrics import Metrics

    state = enqueue(store, mapping)
    metrics = Metrics()
    worker, settled = worker_for(store, backend, mapping, metrics=metrics)

    def steal() -> None:
        with store.transaction() as conn:
            conn.exec_driver_sql(
                "UPDATE outbox_events SET lease_token = 'someone-else', lease_owner = 'other'"
            )

    backend.stolen["test-123"] = steal
    worker.run_once()
    assert state() == "queued"
    assert settled == []
    synced = metrics.registry.get_sample_value("bookme_outbox_settled_total", {"result": "synced"})
    assert not synced


class SlowBackend(FakeBackend):
    """Works on its batch for several leases; meanwhile a rival worker tries to claim."""

    def __init__(self, store: OutboxStore) -> None:
        super().__init__(store.engine)
        self.store = store
        self.rival_claims: list[object] = []

    def apply(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        for _ in range(4):
            time.sleep(0.3)  # a lease is 0.3 s here: four leases pass while we work
            self.rival_claims += self.store.claim("rival", limit=10, lease_seconds=60)
        return super().apply(jobs, settle)


def test_a_live_batch_slower_than_its_lease_keeps_it(
    store: OutboxStore, mapping: MappingConfig
) -> None:
    """The worker renews its batch's leases while the backend works, so no other worker
    takes the events over (and writes to the CRM beside it); the event syncs once."""
    state = enqueue(store, mapping)
    backend = SlowBackend(store)
    worker, settled = worker_for(store, backend, mapping, lease_seconds=0.3)
    assert worker.drain() == 1
    assert backend.rival_claims == []
    assert state() == "synced"
    assert len(settled) == 1
    (event,) = store.list(limit=10)
    assert event.attempts == 1


def test_batches_share_one_lease_renewer_thread(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """Every batch's leases are renewed by one thread, not a thread started per batch."""
    for n in range(7):
        enqueue(store, mapping, bookingId=f"b{n}")
    seen: list[threading.Thread] = []  # held, so that no two are one reused object
    apply = backend.apply

    def watched(jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        seen.extend(t for t in threading.enumerate() if t.name == "lease-renewer")
        return apply(jobs, settle)

    backend.apply = watched  # type: ignore[method-assign]
    worker, _ = worker_for(store, backend, mapping, batch_size=2)
    assert worker.drain() == 7
    assert len(seen) >= 4
    assert len({id(thread) for thread in seen}) == 1


def test_a_worker_yields_to_webhooks_waiting_for_their_commit_but_not_for_long(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """While webhooks wait for their commit a batch waits, at most ``yield_limit()``
    (YIELD_SECONDS before any batch); once none waits the batch starts at once."""
    enqueue(store, mapping)
    busy = [True]
    asked: list[float] = []

    def writer_busy() -> int:
        asked.append(time.monotonic())
        return int(busy[0])

    worker, settled = worker_for(store, backend, mapping, yield_to=writer_busy)
    stop = threading.Event()
    started = time.monotonic()
    worker._yield(stop)
    waited = time.monotonic() - started
    assert Worker.YIELD_SECONDS <= waited < Worker.YIELD_SECONDS + 0.5, waited
    assert len(asked) > 3  # it looked again and again, sleeping between
    busy[0] = False
    started = time.monotonic()
    worker._yield(stop)
    assert time.monotonic() - started < 0.01
    run_until_settled(worker, settled, stop)
    assert len(settled) == 1  # the run loop yields, then syncs


def test_under_a_burst_the_worker_takes_its_share_of_the_cpu_and_no_more(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """The longest wait grows with the CPU the last batch took, so that batches back to
    back with webhooks waiting take about BURST_SHARE of the process; never past YIELD_MAX,
    never under YIELD_SECONDS."""
    worker, _ = worker_for(store, backend, mapping, yield_to=lambda: 1)
    assert worker.yield_limit() == Worker.YIELD_SECONDS  # no batch yet
    worker._batch_seconds = 0.03
    limit = worker.yield_limit()
    assert limit == pytest.approx(0.03 * (1 / Worker.BURST_SHARE - 1))
    assert 0.03 / (0.03 + limit) == pytest.approx(Worker.BURST_SHARE)
    worker.burst_share = 0.5  # WORKER_BURST_SHARE=0.5: as long a wait as a batch
    worker._batch_seconds = 0.2
    assert worker.yield_limit() == pytest.approx(0.2)
    worker.burst_share = Worker.BURST_SHARE
    worker._batch_seconds = 0.001
    assert worker.yield_limit() == Worker.YIELD_SECONDS
    worker._batch_seconds = 10.0
    assert worker.yield_limit() == Worker.YIELD_MAX


def test_the_run_loop_measures_its_batches_in_cpu_time(
    store: OutboxStore, mapping: MappingConfig
) -> None:
    """A batch that sleeps (a CRM answering slowly: no CPU, no GIL) leaves the wait short;
    the batch's own CPU is what the share is of."""

    class Sleepy(FakeBackend):
        def apply(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
            time.sleep(0.3)
            return super().apply(jobs, settle)

    enqueue(store, mapping)
    worker, settled = worker_for(store, Sleepy(store.engine), mapping, yield_to=lambda: 0)
    run_until_settled(worker, settled, threading.Event(), timeout=10)
    assert len(settled) == 1
    assert 0 < worker._batch_seconds < 0.3
    assert worker.yield_limit() < 0.3 * (1 / Worker.BURST_SHARE - 1)


def test_a_crowd_most_of_the_time_is_a_burst_and_instants_of_none_do_not_end_the_wait(
    store: OutboxStore, backend: FakeBackend, mapping: MappingConfig
) -> None:
    """Between two group commits of a burst no webhook waits for an instant; the wait goes
    on to its limit while recent looks mostly found a crowd. At a steady rate (one waiting
    now and then) the first empty look ends it, and once a burst ends the crowd fades."""
    from itertools import cycle

    def looks(pattern: list[int]) -> tuple[Callable[[], int], list[int]]:
        seen: list[int] = []
        values = cycle(pattern)

        def look() -> int:
            seen.append(next(values))
            return seen[-1]

        return look, seen

    stop = threading.Event()
    steady, steady_seen = looks([1, 2, 0, 1])
    worker, _ = worker_for(store, backend, mapping, yield_to=steady)
    worker._yield(stop)
    assert steady_seen == [1, 2, 0]

    burst, burst_seen = looks([12, 20, 15, 14, 30, 0, 18, 25, 0, 16])  # 80% crowded
    worker.yield_to = burst
    for _ in range(4):  # the first looks of a burst, ended by its first empty ones
        worker._yield(stop)
    burst_seen.clear()
    started = time.monotonic()
    worker._yield(stop)
    assert time.monotonic() - started >= Worker.YIELD_SECONDS
    assert burst_seen.count(0) > 2  # it saw the empty instants and went on waiting

    after, after_seen = looks([0])
    worker.yield_to = after
    worker._yield(stop)
    assert 1 <= len(after_seen) < 20  # the burst's crowd fades within a few looks


def test_a_failing_booking_in_a_local_batch_leaves_the_others_synced(
    store: OutboxStore, mapping: MappingConfig
) -> None:
    """The local backend writes a batch in one transaction; when one booking of it fails,
    the others are synced all the same and only that one is retried."""
    from adapter.backends.local import LocalBackend

    states = {n: enqueue(store, mapping, bookingId=f"b{n}") for n in range(3)}

    def hook(conn: object, plan: object, payload: dict[str, object]) -> None:
        if payload["bookingId"] == "b1":
            raise RetryableError("b1's follow-up could not be scheduled")

    worker, settled = worker_for(
        store, LocalBackend(store.engine), mapping, batch_size=3, plan_hooks=[hook]
    )
    assert worker.run_once() == 3
    assert {n: state() for n, state in states.items()} == {0: "synced", 1: "retrying", 2: "synced"}
    assert sorted(settled) == sorted(store.for_key(f"b{n}")[0].id for n in range(3))


def test_a_lease_lost_between_a_local_batch_and_its_retry_is_not_reported_synced(
    store: OutboxStore, mapping: MappingConfig
) -> None:
    """A booking settled in a batch that then failed as a whole, and whose lease is lost
    before the batch is retried one by one, is neither synced nor reported synced."""
    from adapter.backends.local import LocalBackend

    states = {n: enqueue(store, mapping, bookingId=f"b{n}") for n in range(3)}
    calls: list[object] = []

    def hook(conn: Connection, plan: object, payload: dict[str, object]) -> None:
        calls.append(payload["bookingId"])
        if calls == ["b0", "b1", "b2"]:
            raise RetryableError("the batch fails once, after b1 was settled")
        if calls[3:] == ["b0"]:  # the retry, one by one: b1 is taken over before its turn
            conn.execute(
                update(events).where(events.c.key == "b1").values(lease_token="someone-else")
            )

    metrics = Metrics()
    worker, settled = worker_for(
        store, LocalBackend(store.engine), mapping, batch_size=3, plan_hooks=[hook],
        metrics=metrics,
    )  # fmt: skip
    assert worker.run_once() == 3
    assert calls == ["b0", "b1", "b2", "b0", "b2"]
    assert {n: state() for n, state in states.items()} == {0: "synced", 1: "queued", 2: "synced"}
    assert store.for_key("b1")[0].id not in settled
    synced = metrics.registry.get_sample_value("bookme_outbox_settled_total", {"result": "synced"})
    assert synced == 2
