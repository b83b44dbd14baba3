"""BookMe's booking resource becomes the webhook body, validated like a webhook."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapter.booking import parse_booking
from adapter.bookme import BookMeMalformed
from adapter.bookme.resource import to_booking, webhook_body
from tests.conftest import SAMPLES

FULL = {
    "id": "bk_9f3a21",
    "eventType": "30min-consultation",
    "name": "Anna Lindqvist",
    "email": "anna.lindqvist@nordkap.se",
    "phone": "+46 70 123 45 67",
    "company": "Nordkap Konsult AB",
    "scheduledStart": "2027-03-04T09:30:00+01:00",
    "duration": 30,
    "meetingUrl": "https://meet.example.com/abc-defg-hij",
    "notes": "Vill prata om AI-strategi för säljteamet.",
    "createdAt": "2026-11-23T14:02:11.000Z",
    "status": "confirmed",
    "updatedAt": "2026-11-23T14:02:11.000Z",
    "hostId": "usr_42",
}


def test_the_full_resource_is_the_sample_webhook() -> None:
    """Every resource field lands under its webhook name; the sample webhook parses the same."""
    booking, body = to_booking(FULL)
    sample = json.loads((SAMPLES / "consultation-with-company.json").read_text())
    expected = parse_booking(sample)
    assert body["bookingId"] == "bk_9f3a21"
    assert body["scheduledDate"] == "2027-03-04T09:30:00+01:00"
    assert body["source"] == "bookme"
    assert body["event"] == "booking.created"
    assert "hostId" not in body
    skip = {"timezone", "updated_at"}  # the sample has a zone; the resource an updatedAt
    assert booking.model_dump(exclude=skip) == expected.model_dump(exclude=skip)


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (None, "booking.created"),
        ("created", "booking.created"),
        ("Confirmed", "booking.created"),
        ("rescheduled", "booking.rescheduled"),
        ("updated", "booking.updated"),
        ("cancelled", "booking.cancelled"),
        ("canceled", "booking.cancelled"),
        ("booking.cancelled", "booking.cancelled"),
        ("no-show", "booking.no_show"),
        ("no_show", "booking.no_show"),
    ],
)
def test_status_maps_onto_the_webhook_event(status: str | None, event: str) -> None:
    """BookMe's status (absent: live) becomes the webhook's lifecycle event."""
    resource = {**FULL, "status": status}
    booking, _ = to_booking(resource)
    assert booking.event == event


def test_a_numeric_id_is_the_same_booking_as_its_string() -> None:
    """An integer id is taken as its decimal string, as the webhook would carry it."""
    assert webhook_body({**FULL, "id": 12345})["bookingId"] == "12345"


def test_timezone_and_cancellation_reason_are_kept_when_present() -> None:
    """Fields outside the documented resource but in the webhook pass through."""
    resource = {**FULL, "status": "cancelled", "timezone": "Europe/Stockholm"}
    booking, _ = to_booking({**resource, "cancellationReason": "Budget frozen"})
    assert booking.timezone == "Europe/Stockholm"
    assert booking.cancellation_reason == "Budget frozen"


def test_malformed_fields_are_named_as_bookme_names_them() -> None:
    """Errors name the resource's fields (id, scheduledStart, status), not the webhook's."""
    bad: dict[str, Any] = {
        **FULL,
        "scheduledStart": "next tuesday",
        "email": "not-an-email",
        "status": "exploded",
    }
    del bad["id"]
    with pytest.raises(BookMeMalformed) as caught:
        to_booking(bad)
    fields = sorted(d.field for d in caught.value.details)
    assert fields == ["email", "id", "scheduledStart", "status"]
    message = caught.value.message
    assert message.startswith("BookMe's booking is malformed: ")
    assert "id: is required" in message
    assert "status: unknown status 'exploded'" in message


def test_a_resource_that_is_not_an_object_is_malformed() -> None:
    """A list or a string where a booking belongs is malformed, with a body detail."""
    with pytest.raises(BookMeMalformed) as caught:
        to_booking(["bk_1"])
    assert [d.field for d in caught.value.details] == ["body"]
