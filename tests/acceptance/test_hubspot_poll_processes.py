"""The HubSpot poll in real ``bookme-crm worker`` processes: SIGKILLed between an edit and
the next poll, and two processes polling one portal at once (PostgreSQL, fake HubSpot process)."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from adapter.changes import PUSH_KIND
from outbox.store import OutboxStore
from tests.acceptance.test_scale_out import (  # noqa: F401 - fixtures
    Children,
    FakeHubSpotProcess,
    children,
    enqueue,
    hubspot_env,
    hubspot_setup,
    pg,
    wait_running,
    wait_until,
)
from tests.conftest import seed_booking

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

POLL_ENV = {
    "HUBSPOT_POLL_SECONDS": "0.3",
    # The fake's index lags 2 s; the poll reads back 5 s before its position.
    "HUBSPOT_SEARCH_LAG_SECONDS": "5",
}


@pytest.fixture
def lagging_hubspot(children: Children) -> Any:  # noqa: F811
    """The fake HubSpot process, its search index 2 s behind writes (the default)."""
    fake = FakeHubSpotProcess(
        children, "--rate-limit", "0", "--search-rate-limit", "0", "--search-lag", "2"
    )
    try:
        yield fake
    finally:
        fake.close()


def _meetings(fake: FakeHubSpotProcess) -> dict[str, str]:
    """Booking id -> meeting id, from the fake's state."""
    return {
        m["properties"]["bookme_booking_id"]: m["id"] for m in fake.state()["objects"]["meetings"]
    }


def _reschedule(fake: FakeHubSpotProcess, meeting_id: str, start: str, end: str) -> None:
    answer = httpx.post(
        fake.url + "/_fake/edit",
        json={
            "type": "meetings",
            "id": meeting_id,
            "properties": {
                "hs_timestamp": start,
                "hs_meeting_start_time": start,
                "hs_meeting_end_time": end,
            },
        },
        timeout=10,
    )
    answer.raise_for_status()


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), {"push": PUSH_KIND}).scalar_one())


PUSHES = "SELECT count(*) FROM outbox_events WHERE kind = :push"


def _book(engine: Engine, count: int) -> list[str]:
    ids = [f"poll-{index}" for index in range(count)]
    bodies = [
        seed_booking(bookingId=booking_id, email=f"{booking_id}@example.com") for booking_id in ids
    ]
    enqueue(OutboxStore(engine), bodies)
    return ids


def _synced(engine: Engine, count: int) -> bool:
    return (
        _count(engine, "SELECT count(*) FROM crm_field_state WHERE object_type = 'meeting'")
        >= count
    )


def test_a_worker_killed_between_an_edit_and_the_next_poll_records_it_once_after_restart(
    pg: Engine,  # noqa: F811
    pg_url: str,
    children: Children,  # noqa: F811
    lagging_hubspot: FakeHubSpotProcess,
) -> None:
    """Five rounds of: a salesperson moves a meeting while the worker dies by SIGKILL
    (before the edit: nothing can have seen it; or right after it, while its poll may be
    mid-page), then a new worker starts. Each move is recorded exactly once, with one
    push each, and the positions in the database are where the new process resumes."""
    env = hubspot_env(pg_url, lagging_hubspot, **POLL_ENV)
    hubspot_setup(children, env)
    booking_ids = _book(pg, 5)
    worker = children.worker(env, concurrency=1)
    wait_running([worker])
    wait_until("the bookings in HubSpot", lambda: _synced(pg, 5), timeout=60)
    wait_until(
        "a first poll",
        lambda: _count(pg, "SELECT count(*) FROM hubspot_poll WHERE position_ms IS NOT NULL") >= 1,
        timeout=30,
    )
    meetings = _meetings(lagging_hubspot)
    for index, booking_id in enumerate(booking_ids):
        start, end = f"2027-05-0{index + 1}T09:00:00.000Z", f"2027-05-0{index + 1}T11:00:00.000Z"
        if index % 2 == 0:  # killed, then the edit: only the next process can see it
            worker.signal(signal.SIGKILL)
            worker.proc.wait(10)
            _reschedule(lagging_hubspot, meetings[booking_id], start, end)
            assert _count(pg, "SELECT count(*) FROM crm_changes") == index
        else:  # the edit, then killed at once (its poll, every 0.3 s, may be mid-page)
            _reschedule(lagging_hubspot, meetings[booking_id], start, end)
            worker.signal(signal.SIGKILL)
            worker.proc.wait(10)
        worker = children.worker(env, concurrency=1)
        wait_running([worker])
        wait_until(
            f"change {index + 1} recorded",
            lambda n=index + 1: _count(pg, "SELECT count(*) FROM crm_changes") >= n,
            timeout=60,
        )
    time.sleep(8)  # more polls over the same window (the overlap): nothing new
    with pg.connect() as conn:
        rows = conn.execute(
            text("SELECT booking_id, field, new_value, source FROM crm_changes ORDER BY booking_id")
        ).all()
    assert [(r.booking_id, r.field, r.source) for r in rows] == [
        (booking_id, "start", "poll") for booking_id in booking_ids
    ]
    assert [r.new_value for r in rows] == [
        f"2027-05-0{index + 1}T09:00:00.000Z" for index in range(5)
    ]
    assert _count(pg, PUSHES) == 5
    worker.stop()


def test_two_worker_processes_polling_one_portal_record_each_change_once(
    pg: Engine,  # noqa: F811
    pg_url: str,
    children: Children,  # noqa: F811
    lagging_hubspot: FakeHubSpotProcess,
) -> None:
    """Two `bookme-crm worker` processes poll every 0.3 s; 12 meetings moved (and
    shortened) in HubSpot are 24 changes (start, duration) and 12 pushes, however the
    lease passes between them."""
    env = hubspot_env(pg_url, lagging_hubspot, **POLL_ENV)
    hubspot_setup(children, env)
    booking_ids = _book(pg, 12)
    workers = [children.worker(env, concurrency=2), children.worker(env, concurrency=2)]
    wait_running(workers)
    wait_until("the bookings in HubSpot", lambda: _synced(pg, 12), timeout=90)
    meetings = _meetings(lagging_hubspot)
    for index, booking_id in enumerate(booking_ids):
        _reschedule(
            lagging_hubspot,
            meetings[booking_id],
            f"2027-06-{index + 10}T09:00:00.000Z",
            f"2027-06-{index + 10}T10:00:00.000Z",
        )
    wait_until(
        "24 changes",
        lambda: _count(pg, "SELECT count(*) FROM crm_changes") >= 24,
        timeout=60,
    )
    time.sleep(8)  # both keep polling over the overlap window
    assert _count(pg, "SELECT count(*) FROM crm_changes") == 24
    per_field = "SELECT count(DISTINCT booking_id || field) FROM crm_changes"
    assert _count(pg, per_field) == 24  # one start and one duration change per booking
    assert _count(pg, PUSHES) == 12
    assert "HubSpot poll" in "".join(worker.output() for worker in workers)
    for worker in workers:
        assert worker.alive(), worker.output()
        worker.stop()
