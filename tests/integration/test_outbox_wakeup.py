"""Workers of another process woken by PostgreSQL's NOTIFY, not only by their poll."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from adapter.services import build_services
from adapter.settings import Settings
from outbox.store import NewEvent, OutboxStore
from outbox.wakeup import Listener
from tests.conftest import seed_booking


def _new(key: str) -> NewEvent:
    return NewEvent(
        key=key,
        kind="booking.created",
        payload={"bookingId": key},
        body_hash=key,
        snapshot_at=datetime(2026, 11, 29, tzinfo=UTC),
    )


def _wait(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return done()


def test_a_group_commit_notifies_the_listeners_of_other_connections(
    outbox_engine: Engine,
) -> None:
    """On PostgreSQL each committed group wakes a listener (on its own connection) once;
    on SQLite ``announce`` sends nothing and the commit is the same."""
    store = OutboxStore(outbox_engine)
    if outbox_engine.dialect.name != "postgresql":
        answers = store.enqueue_group([_new("sqlite-1")])
        assert answers[0][1] is True  # type: ignore[index]
        return
    woken = threading.Semaphore(0)
    listener = Listener(outbox_engine, woken.release).start()
    try:
        assert listener.listening.wait(10)
        assert woken.acquire(timeout=5)  # the wake-up on start
        store.enqueue_group([_new("pg-1"), _new("pg-2")])
        assert woken.acquire(timeout=5)
        store.enqueue_group([_new("pg-1")])  # a repeat: nothing new, nobody woken
        assert not woken.acquire(timeout=0.5)
    finally:
        listener.stop()
    assert not listener.listening.is_set()


def test_a_worker_process_with_a_long_poll_syncs_at_once(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The API's services (no worker) accept a booking; another Services on the same
    database, polling every 30 s, syncs it within seconds: the NOTIFY woke it."""
    api = build_services(make_settings(database_url=pg_url, sync_wait_ms=0))
    workers = build_services(
        make_settings(database_url=pg_url, sync_wait_ms=0, worker_poll_seconds=30)
    )
    try:
        workers.start_workers(1)
        assert workers.listener is not None
        assert workers.listener.listening.wait(10)
        time.sleep(0.3)  # the worker's first (empty) poll is behind it
        from adapter.booking import parse_booking
        from adapter.ingest import accept_booking

        body = seed_booking(bookingId="notify-1")
        event, _ = accept_booking(api.store, parse_booking(body), body, api.mappings.current)
        assert _wait(lambda: api.store.get(event.id).state == "synced", 5)  # type: ignore[union-attr]
    finally:
        workers.close(timeout=2)
        api.close()


def test_worker_listen_off_leaves_the_poll_alone(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    """``WORKER_LISTEN=0``: no listener (and no connection held for it); the poll syncs."""
    services = build_services(make_settings(database_url=pg_url, worker_listen=False))
    try:
        services.start_workers(1)
        assert services.listener is None
    finally:
        services.close(timeout=2)
