"""Calendar feeds over HTTP: tokens, a booking's lifecycle read by two parsers, 304s, owners."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import icalendar
import pytest
import vobject
from fastapi.testclient import TestClient

from adapter.booking import parse_booking
from adapter.calendar import FeedCache, TokenStore, build_feed
from adapter.ingest import accept_booking
from adapter.services import Services
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, DEFAULT_MAPPING, WEBHOOK_SECRET, seed_booking

HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UID = "booking-test-123@bookme-crm"
PREP_UID = "task-test-123-prep-info@bookme-crm"


def book(client: TestClient, **fields: Any) -> None:
    answer = client.post("/api/bookings/incoming", json=seed_booking(**fields), headers=HOOK)
    assert answer.status_code == 200, answer.text


def token(services: Services) -> str:
    return TokenStore(services.engine).create("test")[1]


def feed(client: TestClient, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/calendar")
    return answer.text


def by_icalendar(text: str) -> dict[str, dict[str, Any]]:
    """The feed's VEVENTs by UID, as the ``icalendar`` library (the builder) reads them."""
    calendar = icalendar.Calendar.from_ical(text)
    return {
        str(event["uid"]): {
            "start": event.decoded("dtstart"),
            "end": event.decoded("dtend"),
            "sequence": int(event["sequence"]),
            "status": str(event["status"]),
            "summary": str(event["summary"]),
        }
        for event in calendar.walk("VEVENT")
    }


def by_vobject(text: str) -> dict[str, dict[str, Any]]:
    """The same, read by ``vobject``, a parser written independently of ``icalendar``."""
    calendar = vobject.readOne(text)
    return {
        event.uid.value: {
            "start": event.dtstart.value,
            "end": event.dtend.value,
            "sequence": int(event.sequence.value),
            "status": event.status.value,
            "summary": event.summary.value,
        }
        for event in calendar.contents.get("vevent", [])
    }


def both(text: str) -> dict[str, dict[str, Any]]:
    """The VEVENTs, after checking that both parsers read the feed the same way."""
    first, second = by_icalendar(text), by_vobject(text)
    assert first == second
    return first


def test_a_booking_reschedule_and_cancel_move_one_event_with_a_growing_sequence(
    client: TestClient, services: Services
) -> None:
    """Create → reschedule → cancel: one UID, UTC times that follow, SEQUENCE 0/1/2,
    STATUS:CANCELLED at the end, and the open tasks move and then leave, for both parsers."""
    path = f"/calendar/{token(services)}.ics"
    book(client, meetingUrl="https://meet.example.com/abc", updatedAt="2026-11-01T10:00:00Z")
    created = both(feed(client, path))
    assert created[UID]["start"] == datetime(2027, 2, 15, 10, tzinfo=UTC)
    assert created[UID]["end"] == datetime(2027, 2, 15, 12, tzinfo=UTC)
    assert (created[UID]["sequence"], created[UID]["status"]) == (0, "CONFIRMED")
    assert created[PREP_UID]["start"] == datetime(2027, 2, 8, 10, tzinfo=UTC)
    assert created[PREP_UID]["summary"].startswith("Task: Send workshop prep info")
    assert "https://meet.example.com/abc" in feed(client, path)

    book(
        client,
        event="booking.rescheduled",
        scheduledDate="2027-03-01T09:30:00+01:00",
        meetingUrl="https://meet.example.com/abc",
        updatedAt="2026-11-02T10:00:00Z",
    )
    moved = both(feed(client, path))
    assert moved[UID]["start"] == datetime(2027, 3, 1, 8, 30, tzinfo=UTC)
    assert (moved[UID]["sequence"], moved[UID]["status"]) == (1, "CONFIRMED")
    assert moved[PREP_UID]["start"] == datetime(2027, 2, 22, 8, 30, tzinfo=UTC)
    assert moved[PREP_UID]["sequence"] == 1
    assert set(moved) == set(created)

    book(client, event="booking.cancelled", updatedAt="2026-11-03T10:00:00Z")
    cancelled = both(feed(client, path))
    assert set(cancelled) == {UID}  # its tasks are cancelled, so they leave
    assert (cancelled[UID]["sequence"], cancelled[UID]["status"]) == (2, "CANCELLED")


def test_the_utc_times_are_written_with_a_z(client: TestClient, services: Services) -> None:
    """DTSTART/DTEND are UTC date-times (``...Z``), so no calendar guesses a zone."""
    path = f"/calendar/{token(services)}.ics"
    book(client, scheduledDate="2027-02-15T11:00:00+01:00")
    text = feed(client, path)
    assert "DTSTART:20270215T100000Z" in text
    assert "DTEND:20270215T120000Z" in text


def test_a_task_done_by_hand_leaves_the_feed(client: TestClient, services: Services) -> None:
    """PATCH /api/tasks/{id} done: that task's VEVENT is gone (the cached feed is not served
    again), the meeting's stays."""
    path = f"/calendar/{token(services)}.ics"
    book(client)
    assert PREP_UID in both(feed(client, path))  # served once, so the cache holds it
    (prep,) = [
        task
        for task in client.get("/api/tasks?bookingId=test-123", headers=ADMIN).json()
        if task["key"] == "prep-info"
    ]
    done = client.patch(f"/api/tasks/{prep['id']}", json={"status": "done"}, headers=ADMIN)
    assert done.status_code == 200, done.text
    assert PREP_UID not in both(feed(client, path))
    assert UID in both(feed(client, path))


def test_unknown_and_revoked_tokens_are_404(client: TestClient, services: Services) -> None:
    """A made-up token and a revoked one get 404; the feed answered 200 before revocation."""
    store = TokenStore(services.engine)
    made, secret = store.create("revoke me")
    assert client.get(f"/calendar/{secret}.ics").status_code == 200
    assert client.get(f"/calendar/{secret}/owner/a@example.com.ics").status_code == 200
    assert client.get("/calendar/bcal_not-a-token.ics").status_code == 404
    assert client.get("/calendar/nonsense.ics").status_code == 404
    store.revoke(made.id)
    assert client.get(f"/calendar/{secret}.ics").status_code == 404
    assert client.get(f"/calendar/{secret}/owner/a@example.com.ics").status_code == 404


def test_only_a_hash_of_the_token_is_stored(services: Services) -> None:
    """The database holds the token's SHA-256, never the token itself."""
    _made, secret = TokenStore(services.engine).create("hash")
    with services.engine.connect() as conn:
        dump = "\n".join(conn.connection.iterdump())  # type: ignore[attr-defined]
    assert secret not in dump


def test_etag_and_last_modified_answer_304_until_a_booking_changes(
    client: TestClient, services: Services
) -> None:
    """A poll with the ETag (or the Last-Modified) gets an empty 304; after a reschedule, 200."""
    path = f"/calendar/{token(services)}.ics"
    book(client, updatedAt="2026-11-01T10:00:00Z")
    first = client.get(path)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == etag
    assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get(path, headers={"If-Modified-Since": "garbage"}).status_code == 200

    book(
        client,
        event="booking.rescheduled",
        scheduledDate="2027-03-01T10:00:00Z",
        updatedAt="2026-11-02T10:00:00Z",
    )
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


OWNERS = "  owner:\n    round_robin: [ada@example.com, bo@example.com]\n"


@pytest.fixture
def owners_client(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[TestClient]:
    """The app with bookings round-robined over Ada and Bo."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    mapping = tmp_path / "owners.yaml"
    mapping.write_text(text.replace("\ndefaults:\n", f"\ndefaults:\n{OWNERS}", 1), encoding="utf-8")
    services = build_services(make_settings(mappings_path=mapping))
    try:
        with TestClient(create_app(services=services, embedded_workers=1)) as test_client:
            test_client.app.state.test_services = services  # type: ignore[attr-defined]
            yield test_client
    finally:
        services.close()


def test_an_owner_feed_lists_that_owners_bookings_and_no_one_elses(
    owners_client: TestClient,
) -> None:
    """Four bookings over Ada and Bo: each owner feed has exactly its owner's meetings and
    tasks (email matched case-insensitively); the full feed has all four; a stranger's is empty."""
    services: Services = owners_client.app.state.test_services  # type: ignore[attr-defined]
    secret = token(services)
    for number in range(4):
        book(owners_client, bookingId=f"b{number}", email=f"p{number}@example.com")
    owners = {
        task["bookingId"]: task["ownerEmail"]
        for task in owners_client.get("/api/tasks", headers=ADMIN).json()
    }
    assert sorted(set(owners.values())) == ["ada@example.com", "bo@example.com"]
    everything = both(feed(owners_client, f"/calendar/{secret}.ics"))
    assert {f"booking-b{n}@bookme-crm" for n in range(4)} <= set(everything)
    for owner in ("ada@example.com", "bo@example.com"):
        mine = both(feed(owners_client, f"/calendar/{secret}/owner/{owner.upper()}.ics"))
        expected = {booking for booking, who in owners.items() if who == owner}
        assert {uid.split("-")[1].split("@")[0] for uid in mine} == expected
        assert len(mine) == 3 * len(expected)  # the meeting and its two tasks
    assert both(feed(owners_client, f"/calendar/{secret}/owner/eve@example.com.ics")) == {}


def test_malformed_tokens_are_404_and_an_overlong_owner_a_400_naming_the_field(
    client: TestClient, services: Services
) -> None:
    """A token of any length or shape is just unknown (404, checked first); with a live token,
    an owner email over 320 characters is a 400 naming ``email``."""
    assert client.get(f"/calendar/bcal_{'x' * 500}.ics").status_code == 404
    assert client.get(f"/calendar/{'x' * 500}/owner/{'a' * 400}.ics").status_code == 404
    answer = client.get(f"/calendar/{token(services)}/owner/{'a' * 400}@example.com.ics")
    assert answer.status_code == 400
    assert answer.json()["details"] == [
        {"field": "email", "message": "at most 320 characters, without NUL"}
    ]


@pytest.mark.postgres
def test_the_lifecycle_feed_on_postgresql(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """The same create → reschedule → cancel sequences and statuses on PostgreSQL."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    services = build_services(make_settings(database_url=pg_url))
    try:
        with TestClient(create_app(services=services, embedded_workers=1)) as client:
            path = f"/calendar/{token(services)}.ics"
            book(client, updatedAt="2026-11-01T10:00:00Z")
            assert both(feed(client, path))[UID]["sequence"] == 0
            book(
                client,
                event="booking.rescheduled",
                scheduledDate="2027-03-01T10:00:00Z",
                updatedAt="2026-11-02T10:00:00Z",
            )
            moved = both(feed(client, path))
            assert (moved[UID]["sequence"], moved[UID]["start"]) == (
                1,
                datetime(2027, 3, 1, 10, tzinfo=UTC),
            )
            book(client, event="booking.cancelled", updatedAt="2026-11-03T10:00:00Z")
            final = both(feed(client, path))
            assert (set(final), final[UID]["status"], final[UID]["sequence"]) == (
                {UID},
                "CANCELLED",
                2,
            )
    finally:
        services.close()


def test_a_cancelled_meeting_stays_30_days_and_old_meetings_leave_after_90(
    client: TestClient, services: Services
) -> None:
    """STATUS:CANCELLED is served for 30 days after the cancellation, then the meeting leaves;
    a meeting leaves 90 days after its start."""
    book(client, bookingId="gone", updatedAt="2026-11-01T10:00:00Z")
    book(client, bookingId="gone", event="booking.cancelled", updatedAt="2026-11-02T10:00:00Z")
    book(client, bookingId="kept", scheduledDate="2027-01-10T10:00:00Z")
    cancelled_uid, kept_uid = "booking-gone@bookme-crm", "booking-kept@bookme-crm"
    day = datetime.now(UTC)
    assert (
        both(build_feed(services.engine, now=day + timedelta(days=29)).body.decode())[
            cancelled_uid
        ]["status"]
        == "CANCELLED"
    )
    later = both(build_feed(services.engine, now=day + timedelta(days=31)).body.decode())
    assert cancelled_uid not in later
    assert kept_uid in later
    start = datetime(2027, 1, 10, 10, tzinfo=UTC)
    assert kept_uid in both(
        build_feed(services.engine, now=start + timedelta(days=89)).body.decode()
    )
    assert kept_uid not in both(
        build_feed(services.engine, now=start + timedelta(days=92)).body.decode()
    )


def test_the_feed_cache_answers_an_unchanged_feed_without_building_it(services: Services) -> None:
    """Twice with nothing changed: the very same Feed object; after a booking, a new one."""
    cache = FeedCache()
    first = cache.get(services.engine)
    assert cache.get(services.engine) is first
    assert cache.get(services.engine, owner="ada@example.com") is not first
    body = seed_booking()
    accept_booking(services.store, parse_booking(body), body, services.mappings.current)
    assert services.new_worker().drain() == 1
    changed = cache.get(services.engine)
    assert changed is not first
    assert UID in both(changed.body.decode())
