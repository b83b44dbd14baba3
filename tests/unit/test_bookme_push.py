"""BookMePusher against the fake BookMe on loopback: answers, refusals, outages, idempotency."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from adapter.bookme import (
    BookMeClient,
    BookMeNotFound,
    BookMePusher,
    BookMeRefused,
    BookMeRejected,
    BookMeUnavailable,
)
from tests.fakes.bookme import FakeBookMe

TOKEN = "fake-bookme-token"
START = datetime(2027, 3, 4, 9, 0, tzinfo=UTC)
RESOURCE = {
    "id": "bk_1",
    "eventType": "30min-consultation",
    "name": "Anna Lindqvist",
    "email": "anna@example.com",
    "scheduledStart": "2027-03-04T08:30:00.000Z",
    "duration": 30,
    "createdAt": "2026-11-23T14:02:11.000Z",
}


@pytest.fixture
def bookme() -> Iterator[FakeBookMe]:
    with FakeBookMe(token=TOKEN) as fake:
        fake.add_booking(RESOURCE)
        yield fake


@pytest.fixture
def pusher(bookme: FakeBookMe) -> Iterator[BookMePusher]:
    with BookMePusher(bookme.url, TOKEN, timeout=httpx.Timeout(1.0, connect=1.0)) as client:
        yield client


def test_reschedule_sends_the_documented_request_and_returns_the_resource(
    bookme: FakeBookMe, pusher: BookMePusher
) -> None:
    """POST …/reschedule with scheduledStart (UTC, ms) and duration, bearer token and key."""
    answer = pusher.reschedule("bk_1", start=START, duration=45, idempotency_key="k-1")
    assert answer["scheduledStart"] == "2027-03-04T09:00:00.000Z"
    assert answer["duration"] == 45
    assert answer["status"] == "rescheduled"
    (request,) = bookme.requests
    assert request.path == "/api/bookings/bk_1/reschedule"
    assert request.body == {"scheduledStart": "2027-03-04T09:00:00.000Z", "duration": 45}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["idempotency-key"] == "k-1"
    assert bookme.booking("bk_1")["scheduledStart"] == "2027-03-04T09:00:00.000Z"


def test_cancel_sends_the_reason(bookme: FakeBookMe, pusher: BookMePusher) -> None:
    """POST …/cancel with the reason typed; BookMe's booking is cancelled with it."""
    answer = pusher.cancel("bk_1", reason="Customer asked by phone", idempotency_key="k-2")
    assert answer["status"] == "cancelled"
    assert bookme.booking("bk_1")["cancellationReason"] == "Customer asked by phone"
    assert bookme.requests[0].body == {"reason": "Customer asked by phone"}


def test_a_taken_slot_is_a_refusal_with_bookme_s_reason(
    bookme: FakeBookMe, pusher: BookMePusher
) -> None:
    """409 becomes BookMeRefused carrying BookMe's message, and nothing changes there."""
    bookme.take_slot(START, 60)
    with pytest.raises(BookMeRefused) as caught:
        pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-3")
    assert caught.value.status == 409
    assert caught.value.reason == "the slot at 2027-03-04T09:00:00.000Z is already booked"
    assert bookme.booking("bk_1")["scheduledStart"] == RESOURCE["scheduledStart"]


def test_422_is_a_refusal_too(bookme: FakeBookMe, pusher: BookMePusher) -> None:
    """A 422 (BookMe cannot process it) is a refusal, not an outage."""
    bookme.refuse("Outside opening hours", status=422)
    with pytest.raises(BookMeRefused) as caught:
        pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-4")
    assert (caught.value.status, caught.value.reason) == (422, "Outside opening hours")


def test_5xx_timeouts_and_drops_are_unavailable_not_refused(
    bookme: FakeBookMe, pusher: BookMePusher
) -> None:
    """5xx, a slow answer past the timeout and a hang-up are BookMeUnavailable (retryable)."""
    bookme.fail(503)
    with pytest.raises(BookMeUnavailable, match="503"):
        pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-5")
    bookme.slow(1.5)
    with pytest.raises(BookMeUnavailable, match="in time"):
        pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-6")
    bookme.drop()
    with pytest.raises(BookMeUnavailable):
        pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-7")
    assert not isinstance(BookMeUnavailable("x"), BookMeRefused)


def test_a_lost_answer_repeated_with_the_same_key_is_one_reschedule(
    bookme: FakeBookMe, pusher: BookMePusher
) -> None:
    """BookMe applied it but the answer was lost; the repeat with the key changes nothing."""
    bookme.drop_after_commit()
    with pytest.raises(BookMeUnavailable):
        pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-8")
    stamp = bookme.booking("bk_1")["updatedAt"]
    answer = pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-8")
    assert answer["scheduledStart"] == "2027-03-04T09:00:00.000Z"
    assert bookme.applied == 1
    assert bookme.calls["POST reschedule"] == 2
    assert bookme.booking("bk_1")["updatedAt"] == stamp


def test_a_key_reused_for_another_request_is_refused(
    bookme: FakeBookMe, pusher: BookMePusher
) -> None:
    """The fake is as strict as Stripe-style keys: same key, other body → 422."""
    pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-9")
    with pytest.raises(BookMeRefused, match="Idempotency-Key"):
        pusher.reschedule("bk_1", start=START, duration=45, idempotency_key="k-9")
    assert bookme.applied == 1


def test_unknown_booking_and_bad_token(bookme: FakeBookMe) -> None:
    """404 is BookMeNotFound; a wrong token is BookMeRejected naming the setting."""
    with BookMePusher(bookme.url, TOKEN) as pusher, pytest.raises(BookMeNotFound):
        pusher.cancel("nope", reason=None, idempotency_key="k-10")
    with (
        BookMePusher(bookme.url, "wrong-token") as pusher,
        pytest.raises(BookMeRejected, match="BOOKME_API_TOKEN"),
    ):
        pusher.cancel("bk_1", reason=None, idempotency_key="k-11")


def test_a_cancelled_booking_cannot_be_rescheduled(
    bookme: FakeBookMe, pusher: BookMePusher
) -> None:
    """BookMe refuses to move a cancelled booking (409 with its reason)."""
    pusher.cancel("bk_1", reason="", idempotency_key="k-12")
    with pytest.raises(BookMeRefused, match="cancelled"):
        pusher.reschedule("bk_1", start=START, duration=30, idempotency_key="k-13")


def test_the_fake_serves_the_read_endpoints_the_client_uses(bookme: FakeBookMe) -> None:
    """The existing GET client works against the fake (one booking, the list)."""
    with BookMeClient(bookme.url, TOKEN) as client:
        assert client.get_booking("bk_1")["email"] == "anna@example.com"
        pages = list(client.pages("2026-01-01"))
        assert [item["id"] for page in pages for item in page.items] == ["bk_1"]
