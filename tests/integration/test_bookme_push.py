"""Both directions with the local CRM, over real HTTP: the service served by uvicorn on
loopback, the fake BookMe on loopback posting its own signed webhooks back to it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapter.api.app import create_app
from adapter.changes import PUSH_KIND, changes_for_booking
from adapter.changes.store import crm_changes
from adapter.services import Services, build_services
from adapter.settings import Settings
from outbox.schema import events
from tests.conftest import ADMIN_TOKEN, SIGNING_SECRET, LiveServer, sign
from tests.fakes.bookme import FakeBookMe, iso_ms

BOOKME_TOKEN = "fake-bookme-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
START = (datetime.now(UTC) + timedelta(days=10)).replace(hour=8, minute=30, second=0, microsecond=0)
MOVED = START + timedelta(days=1, hours=2)


def resource(booking_id: str = "bk_rt", start: datetime = START, **extra: Any) -> dict[str, Any]:
    """BookMe's resource for a consultation."""
    return {
        "id": booking_id,
        "eventType": "30min-consultation",
        "name": "Anna Lindqvist",
        "email": f"{booking_id}@example.com",
        "company": f"Company {booking_id}",
        "scheduledStart": iso_ms(start),
        "duration": 30,
        "createdAt": iso_ms(datetime.now(UTC) - timedelta(days=1)),
        **extra,
    }


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


@dataclass
class Loop:
    """The running service, the fake BookMe that answers it and posts back to it."""

    services: Services
    bookme: FakeBookMe
    live: LiveServer
    http: httpx.Client

    def book(self, booking_id: str = "bk_rt", start: datetime = START) -> dict[str, Any]:
        """BookMe has the booking and posts booking.created; returns the synced answer."""
        held = self.bookme.add_booking(resource(booking_id, start))
        body = json.dumps(self.bookme.webhook_body(held, "booking.created")).encode()
        answer = self.http.post("/api/bookings/incoming", content=body, headers=sign(body))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "synced"
        return dict(answer.json())

    def patch_meeting(self, activity_id: str, **body: Any) -> httpx.Response:
        return self.http.patch(
            f"/api/activities/{activity_id}",
            json=body,
            headers={**AUTH, "X-Actor": "ada@example.com"},
        )

    def meeting(self, activity_id: str) -> dict[str, Any]:
        found = self.http.get("/api/activities", headers=AUTH, params={"type": "MEETING"})
        return next(m for m in found.json() if m["id"] == activity_id)

    def tasks(self, booking_id: str) -> list[dict[str, Any]]:
        answer = self.http.get("/api/tasks", headers=AUTH, params={"bookingId": booking_id})
        return list(answer.json())

    def changes(self, booking_id: str) -> list[Any]:
        with self.services.engine.connect() as conn:
            return changes_for_booking(conn, booking_id)

    def jobs(self, kind: str) -> list[Any]:
        with self.services.engine.connect() as conn:
            return list(conn.execute(select(events).where(events.c.kind == kind)))

    def settled(self) -> bool:
        """Nothing pending in the outbox and BookMe's webhooks all delivered."""
        self.bookme.wait_for_webhooks()
        counts = self.services.store.counts()
        return counts["queued"] == 0 and counts["retrying"] == 0


@pytest.fixture
def make_loop(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Loop]]:
    """Build the loop with settings overrides; everything is stopped afterwards."""
    stack: list[Callable[[], None]] = []

    def build(**overrides: Any) -> Loop:
        bookme = FakeBookMe(token=BOOKME_TOKEN, signing_secret=SIGNING_SECRET)
        bookme.start()
        stack.append(bookme.stop)
        settings = make_settings(
            bookme_api_url=bookme.url,
            bookme_api_token=BOOKME_TOKEN,
            bookme_push_timeout_seconds=2.0,
            outbox_retry_base_seconds=0.05,
            outbox_retry_cap_seconds=0.2,
            **overrides,
        )
        services = build_services(settings)
        stack.append(services.close)
        live = LiveServer(create_app(services=services, embedded_workers=2))
        live.__enter__()
        stack.append(lambda: live.__exit__(None, None, None))
        bookme.webhook_url = f"{live.url}/api/bookings/incoming"
        http = httpx.Client(base_url=live.url, timeout=10)
        stack.append(http.close)
        return Loop(services, bookme, live, http)

    yield build
    for stop in reversed(stack):
        stop()


def test_a_reschedule_goes_to_bookme_once_and_its_webhook_converges_without_ping_pong(
    make_loop: Callable[..., Loop],
) -> None:
    """PATCH → one BookMe reschedule → BookMe's signed booking.rescheduled webhook to the
    running service → synced: the CRM shows BookMe's time, nothing is pushed again."""
    loop = make_loop()
    activity_id = loop.book()["activity"]["id"]

    answer = loop.patch_meeting(activity_id, activityDate=iso_ms(MOVED), durationMinutes=45)
    assert answer.status_code == 200, answer.text
    assert answer.json()["activityDate"] == iso_ms(MOVED)

    wait_for(lambda: loop.bookme.deliveries, what="BookMe's webhook")
    wait_for(loop.settled, what="the outbox to settle")
    time.sleep(0.5)  # a second push would have been queued by now
    wait_for(loop.settled, what="the outbox to settle again")

    assert loop.bookme.calls["POST reschedule"] == 1
    assert loop.bookme.applied == 1
    (request,) = loop.bookme.requests
    assert request.body == {"scheduledStart": iso_ms(MOVED), "duration": 45}
    assert loop.bookme.deliveries == [("booking.rescheduled", 200)]
    assert len(loop.jobs(PUSH_KIND)) == 1
    rescheduled = loop.jobs("booking.rescheduled")
    assert [row.state for row in rescheduled] == ["synced"]

    meeting = loop.meeting(activity_id)
    assert (meeting["activityDate"], meeting["durationMinutes"]) == (iso_ms(MOVED), 45)
    assert meeting["outcome"] == "RESCHEDULED"
    recorded = loop.changes("bk_rt")
    assert [(c.field, c.new_value, c.state) for c in recorded] == [
        ("start", iso_ms(MOVED), "pushed"),
        ("duration", "45", "pushed"),
    ]
    assert {c.source for c in recorded} == {"api"}
    assert {c.actor for c in recorded} == {"ada@example.com"}
    assert recorded[0].old_value == iso_ms(START)
    # The consultation's summary task moved with BookMe's snapshot.
    (summary,) = [t for t in loop.tasks("bk_rt") if t["key"] == "summary"] or [None]
    if summary is not None:
        assert summary["dueDate"] > iso_ms(MOVED)


@pytest.mark.postgres
def test_the_round_trip_and_a_refusal_on_postgresql(
    make_loop: Callable[..., Loop], pg_url: str
) -> None:
    """On PostgreSQL: the accepted reschedule converges with one call; a refused one is
    reverted with its task."""
    loop = make_loop(database_url=pg_url)
    activity_id = loop.book()["activity"]["id"]
    assert loop.patch_meeting(activity_id, activityDate=iso_ms(MOVED)).status_code == 200
    wait_for(lambda: loop.bookme.deliveries, what="BookMe's webhook")
    wait_for(loop.settled)
    assert loop.bookme.calls["POST reschedule"] == 1
    assert loop.meeting(activity_id)["activityDate"] == iso_ms(MOVED)

    taken = MOVED + timedelta(days=1)
    loop.bookme.take_slot(taken, 30)
    assert loop.patch_meeting(activity_id, activityDate=iso_ms(taken)).status_code == 200
    wait_for(lambda: [c for c in loop.changes("bk_rt") if c.state == "refused"], what="the refusal")
    wait_for(lambda: loop.meeting(activity_id)["activityDate"] == iso_ms(MOVED), what="revert")
    wait_for(loop.settled)
    assert loop.bookme.calls["POST reschedule"] == 2
    assert any(t["key"].startswith("bookme-refused-") for t in loop.tasks("bk_rt"))
    assert [c.state for c in loop.changes("bk_rt")] == ["pushed", "refused"]


def test_a_refused_reschedule_puts_the_meeting_back_and_tells_the_owner(
    make_loop: Callable[..., Loop],
) -> None:
    """BookMe answers 409 (slot taken): the change is refused with BookMe's reason, the
    meeting goes back to BookMe's time, and a task says why; BookMe's next event for
    the booking keeps that task."""
    loop = make_loop()
    activity_id = loop.book()["activity"]["id"]
    loop.bookme.take_slot(MOVED, 60)

    answer = loop.patch_meeting(activity_id, activityDate=iso_ms(MOVED))
    assert answer.status_code == 200, answer.text
    wait_for(lambda: [c for c in loop.changes("bk_rt") if c.state == "refused"], what="the refusal")
    wait_for(lambda: loop.meeting(activity_id)["activityDate"] == iso_ms(START), what="revert")
    wait_for(loop.settled)

    (change,) = loop.changes("bk_rt")
    reason = f"the slot at {iso_ms(MOVED)} is already booked"
    assert (change.state, change.detail) == ("refused", reason)
    refused = [t for t in loop.tasks("bk_rt") if t["key"] == f"bookme-refused-{change.id}"]
    assert [t["title"] for t in refused] == [f"BookMe refused the reschedule: {reason}"]
    assert refused[0]["status"] == "todo"
    assert loop.bookme.applied == 0
    assert loop.bookme.booking("bk_rt")["scheduledStart"] == iso_ms(START)

    # BookMe's own later update of the booking: the refusal task is still there.
    later = {**loop.bookme.booking("bk_rt"), "notes": "Bring the numbers"}
    later["updatedAt"] = iso_ms(datetime.now(UTC))
    body = json.dumps(loop.bookme.webhook_body(later, "booking.updated")).encode()
    assert loop.http.post("/api/bookings/incoming", content=body, headers=sign(body)).is_success
    wait_for(loop.settled)
    keys = {t["key"] for t in loop.tasks("bk_rt")}
    assert f"bookme-refused-{change.id}" in keys
    assert loop.bookme.calls["POST reschedule"] == 1


def test_a_cancellation_in_the_crm_cancels_in_bookme_and_converges(
    make_loop: Callable[..., Loop],
) -> None:
    """outcome CANCELED with a reason → BookMe's cancel with that reason → its
    booking.cancelled webhook → the meeting and tasks cancelled, no second push."""
    loop = make_loop()
    activity_id = loop.book()["activity"]["id"]

    answer = loop.patch_meeting(activity_id, outcome="CANCELED", reason="Customer called")
    assert answer.status_code == 200, answer.text
    wait_for(lambda: loop.bookme.deliveries, what="BookMe's webhook")
    wait_for(loop.settled)

    assert loop.bookme.calls["POST cancel"] == 1
    assert loop.bookme.requests[0].body == {"reason": "Customer called"}
    assert loop.bookme.booking("bk_rt")["status"] == "cancelled"
    assert loop.bookme.deliveries == [("booking.cancelled", 200)]
    assert [row.state for row in loop.jobs("booking.cancelled")] == ["synced"]
    assert len(loop.jobs(PUSH_KIND)) == 1
    assert loop.meeting(activity_id)["outcome"] == "CANCELED"
    assert {t["status"] for t in loop.tasks("bk_rt")} <= {"cancelled"}
    assert [(c.field, c.new_value, c.state) for c in loop.changes("bk_rt")] == [
        ("outcome", "CANCELED", "pushed")
    ]


def test_5xx_then_success_is_one_reschedule_with_one_idempotency_key(
    make_loop: Callable[..., Loop],
) -> None:
    """BookMe fails with 503 once: the outbox retries with the same Idempotency-Key, and
    BookMe applies the reschedule once."""
    loop = make_loop()
    activity_id = loop.book()["activity"]["id"]
    loop.bookme.fail(503)

    assert loop.patch_meeting(activity_id, activityDate=iso_ms(MOVED)).status_code == 200
    wait_for(lambda: loop.bookme.deliveries, what="BookMe's webhook")
    wait_for(loop.settled)

    assert loop.bookme.calls["POST reschedule"] == 2
    assert loop.bookme.applied == 1
    keys = {r.headers["idempotency-key"] for r in loop.bookme.requests}
    (change,) = loop.changes("bk_rt")
    assert keys == {f"bookme-crm:change:{change.id}"}
    assert change.state == "pushed"
    (job,) = loop.jobs(PUSH_KIND)
    assert (job.state, job.attempts) == ("synced", 2)
    metrics = loop.http.get("/metrics", headers=AUTH).text
    assert 'bookme_pushes_total{outcome="unavailable"} 1.0' in metrics
    assert 'bookme_pushes_total{outcome="pushed"} 1.0' in metrics


def test_bookme_down_dead_letters_the_push_with_its_reason_and_a_replay_pushes_it(
    make_loop: Callable[..., Loop],
) -> None:
    """503 on every attempt: the job is dead with BookMe's answer, the change failed;
    once BookMe is back, the dashboard's (admin API's) replay pushes it."""
    loop = make_loop(outbox_max_attempts=3)
    activity_id = loop.book()["activity"]["id"]
    loop.bookme.fail(503, times=None)

    assert loop.patch_meeting(activity_id, activityDate=iso_ms(MOVED)).status_code == 200
    (job,) = wait_for(
        lambda: [j for j in loop.jobs(PUSH_KIND) if j.state == "dead"], what="dead push"
    )
    assert "503" in job.last_error
    assert "gave up after 3 attempts" in job.last_error
    (change,) = loop.changes("bk_rt")
    assert change.state == "failed"
    assert "503" in (change.detail or "")

    loop.bookme.clear_faults()
    replayed = loop.http.post(f"/admin/outbox/{job.id}/replay", headers=AUTH)
    assert replayed.status_code == 200, replayed.text
    wait_for(lambda: loop.changes("bk_rt")[0].state == "pushed", what="the replayed push")
    wait_for(loop.settled)
    assert loop.bookme.applied == 1


def test_a_slow_bookme_does_not_hold_up_webhooks_or_the_edit(
    make_loop: Callable[..., Loop],
) -> None:
    """BookMe takes 3 s to answer a push: the PATCH answers at once, and a new booking's
    webhook is answered (synced) while the push is still waiting."""
    loop = make_loop()
    activity_id = loop.book()["activity"]["id"]
    loop.bookme.slow(1.5)

    began = time.monotonic()
    assert loop.patch_meeting(activity_id, activityDate=iso_ms(MOVED)).status_code == 200
    assert time.monotonic() - began < 1.0
    wait_for(lambda: loop.bookme.requests, what="the push to reach BookMe")

    began = time.monotonic()
    other = loop.book("bk_other", START + timedelta(days=3))
    elapsed = time.monotonic() - began
    assert other["status"] == "synced"
    assert elapsed < 1.0, elapsed
    assert loop.bookme.applied == 0  # still waiting for BookMe
    wait_for(lambda: loop.changes("bk_rt")[0].state == "pushed", what="the slow push")
    wait_for(loop.settled)


@dataclass
class ByHand:
    """The app with no worker of its own (the test drains), and the fake BookMe."""

    services: Services
    bookme: FakeBookMe
    client: Any  # TestClient

    def post(self, held: dict[str, Any], event: str) -> None:
        body = json.dumps(self.bookme.webhook_body(held, event)).encode()
        answer = self.client.post("/api/bookings/incoming", content=body, headers=sign(body))
        assert answer.is_success, answer.text

    def drain(self) -> None:
        self.services.new_worker().drain()

    def meeting(self) -> dict[str, Any]:
        (meeting,) = self.client.get("/api/activities", headers=AUTH).json()
        return dict(meeting)

    def move(self, start: datetime) -> None:
        answer = self.client.patch(
            f"/api/activities/{self.meeting()['id']}",
            json={"activityDate": iso_ms(start)},
            headers=AUTH,
        )
        assert answer.status_code == 200, answer.text

    def changes(self) -> list[Any]:
        with self.services.engine.connect() as conn:
            return list(conn.execute(select(crm_changes).order_by(crm_changes.c.id)))


@pytest.fixture
def by_hand(make_settings: Callable[..., Settings]) -> Iterator[ByHand]:
    from fastapi.testclient import TestClient

    with FakeBookMe(token=BOOKME_TOKEN) as bookme:
        services = build_services(
            make_settings(
                bookme_api_url=bookme.url,
                bookme_api_token=BOOKME_TOKEN,
                sync_wait_ms=0,
                outbox_retry_base_seconds=0.05,
                outbox_retry_cap_seconds=0.05,
            )
        )
        try:
            with TestClient(create_app(services=services, embedded_workers=0)) as client:
                yield ByHand(services, bookme, client)
        finally:
            services.close()


def later(seconds: float = 1) -> str:
    return iso_ms(datetime.now(UTC) + timedelta(seconds=seconds))


def test_bookme_s_newer_snapshot_supersedes_an_unpushed_change(by_hand: ByHand) -> None:
    """The booking was moved in BookMe after the salesperson's edit, before the push ran:
    nothing is sent, the change is superseded (and says by what); BookMe's time stays."""
    held = by_hand.bookme.add_booking(resource())
    by_hand.post(held, "booking.created")
    by_hand.drain()
    by_hand.move(MOVED)
    elsewhere = START + timedelta(days=5)
    moved = {**held, "scheduledStart": iso_ms(elsewhere), "updatedAt": later()}
    by_hand.post(moved, "booking.rescheduled")
    by_hand.drain()

    assert by_hand.bookme.calls["POST reschedule"] == 0
    (change,) = by_hand.changes()
    assert change.state == "superseded"
    assert iso_ms(elsewhere) in change.detail
    assert by_hand.meeting()["activityDate"] == iso_ms(elsewhere)


def test_bookme_already_showing_the_change_counts_as_pushed_without_a_call(
    by_hand: ByHand,
) -> None:
    """BookMe's newer snapshot already has the time the salesperson chose (its answer
    was lost, its webhook came): nothing is sent again, the change is pushed."""
    held = by_hand.bookme.add_booking(resource())
    by_hand.post(held, "booking.created")
    by_hand.drain()
    by_hand.move(MOVED)
    by_hand.post(
        {**held, "scheduledStart": iso_ms(MOVED), "updatedAt": later()}, "booking.rescheduled"
    )
    by_hand.drain()

    assert by_hand.bookme.calls["POST reschedule"] == 0
    (change,) = by_hand.changes()
    assert change.state == "pushed"
    assert "BookMe already shows" in change.detail


def test_two_quick_edits_push_only_the_latest(by_hand: ByHand) -> None:
    """Moved twice before the push ran: one reschedule to the second time; the first
    change is superseded by the second."""
    held = by_hand.bookme.add_booking(resource())
    by_hand.post(held, "booking.created")
    by_hand.drain()
    first, second = MOVED, MOVED + timedelta(hours=3)
    by_hand.move(first)
    by_hand.move(second)
    by_hand.drain()

    assert by_hand.bookme.calls["POST reschedule"] == 1
    assert by_hand.bookme.booking("bk_rt")["scheduledStart"] == iso_ms(second)
    one, two = by_hand.changes()
    assert (one.new_value, one.state) == (iso_ms(first), "superseded")
    assert f"change {two.id}" in one.detail
    assert (two.old_value, two.new_value, two.state) == (iso_ms(first), iso_ms(second), "pushed")


def test_a_lost_answer_is_retried_with_the_same_key_and_applied_once(by_hand: ByHand) -> None:
    """BookMe applied the reschedule but the connection dropped before its answer: the
    outbox retries with the same Idempotency-Key, BookMe answers as the first time, and
    the booking was moved once."""
    held = by_hand.bookme.add_booking(resource())
    by_hand.post(held, "booking.created")
    by_hand.drain()
    by_hand.bookme.drop_after_commit()
    by_hand.move(MOVED)
    by_hand.drain()  # the first attempt: answer lost, retrying
    (change,) = by_hand.changes()
    assert change.state == "pending"
    assert by_hand.bookme.applied == 1
    time.sleep(0.1)  # the retry's backoff
    by_hand.drain()

    assert by_hand.bookme.calls["POST reschedule"] == 2
    assert by_hand.bookme.applied == 1
    keys = [r.headers["idempotency-key"] for r in by_hand.bookme.requests]
    assert keys == [f"bookme-crm:change:{change.id}"] * 2
    (change,) = by_hand.changes()
    assert change.state == "pushed"


def test_a_newer_bookme_snapshot_that_left_the_time_alone_does_not_stop_the_push(
    by_hand: ByHand,
) -> None:
    """BookMe's newer snapshot only changed the notes: the salesperson's move is still
    pushed (only BookMe moving or cancelling the booking wins over it)."""
    held = by_hand.bookme.add_booking(resource())
    by_hand.post(held, "booking.created")
    by_hand.drain()
    by_hand.move(MOVED)
    by_hand.post({**held, "notes": "Bring slides", "updatedAt": later()}, "booking.updated")
    by_hand.drain()

    assert by_hand.bookme.calls["POST reschedule"] == 1
    (change,) = by_hand.changes()
    assert change.state == "pushed"
    assert by_hand.bookme.booking("bk_rt")["scheduledStart"] == iso_ms(MOVED)
