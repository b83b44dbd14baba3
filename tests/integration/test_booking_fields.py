"""The booking-form extensions (answers, utm, locale, attendees) on the real webhook."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.bookme.resource import to_booking
from adapter.services import Services
from tests.conftest import WEBHOOK_SECRET, seed_booking

URL = "/api/bookings/incoming"
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}

EXTENSIONS: dict[str, Any] = {
    "answers": {"budget": 25000, "interests": ["crm", "ai"], "newsletter": True, "role": "CTO"},
    "utm": {"source": "linkedin", "medium": "cpc", "campaign": "spring-27"},
    "locale": "sv_se",
    "attendees": [{"name": "Guest One", "email": "guest@example.com"}],
}


def test_a_booking_with_every_extension_syncs(client: TestClient, services: Services) -> None:
    """A booking carrying answers, utm, locale and attendees is accepted and stored whole."""
    response = client.post(URL, json=seed_booking(**EXTENSIONS), headers=SECRET)
    assert response.status_code == 200, response.text
    event = services.store.get(response.json()["eventId"])
    assert event is not None
    assert event.payload["answers"] == EXTENSIONS["answers"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"answers": {"budget": {"min": 1}}}, "answers.budget"),
        ({"answers": {"budget": "x" * 2001}}, "answers.budget"),
        ({"answers": {"tags": ["a", 2]}}, "answers.tags"),
        ({"answers": {f"q{i}": i for i in range(51)}}, "answers"),
        ({"answers": ["not", "an", "object"]}, "answers"),
        ({"utm": {"campaign": 7}}, "utm.campaign"),
        ({"utm": "spring"}, "utm"),
        ({"locale": "Swedish please"}, "locale"),
        ({"attendees": [{"name": "Guest", "email": "not-an-email"}]}, "attendees.0.email"),
        ({"attendees": [{"email": "g@example.com"}]}, "attendees.0.name"),
        ({"attendees": [{"name": "G", "email": "g@example.com"}] * 21}, "attendees"),
    ],
)
def test_a_bad_extension_is_a_400_naming_the_field(
    client: TestClient, services: Services, extra: dict[str, Any], field: str
) -> None:
    """Each invalid extension value is a 400 whose details name the field, and nothing is stored."""
    response = client.post(URL, json=seed_booking(**extra), headers=SECRET)
    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["details"]] == [field]
    assert sum(services.store.counts().values()) == 0


def test_the_openapi_schema_shows_the_extensions(client: TestClient) -> None:
    """The webhook's OpenAPI request body lists the extensions, with no dangling $ref."""
    schema = client.get("/openapi.json").json()
    body = schema["paths"][URL]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"answers", "utm", "locale", "attendees"} <= set(body["properties"])
    assert "$ref" not in str(body)


def test_the_bookme_import_takes_the_extensions() -> None:
    """A booking read from BookMe's API keeps its answers, utm, locale and attendees."""
    resource = {
        "id": "bm-1",
        "eventType": "workshop",
        "name": "Test Person",
        "email": "test@example.com",
        "scheduledStart": "2027-02-15T10:00:00Z",
        "duration": 60,
        **EXTENSIONS,
    }
    booking, body = to_booking(resource)
    assert booking.answers == EXTENSIONS["answers"]
    assert booking.utm is not None
    assert booking.utm.campaign == "spring-27"
    assert booking.locale == "sv-SE"
    assert body["attendees"] == EXTENSIONS["attendees"]
