"""Calendar feeds with CRM_BACKEND=hubspot: meetings from the outbox's newest synced snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from adapter.backends.hubspot import HubSpotBackend, run_setup
from adapter.calendar import TokenStore
from adapter.mapping import load_mapping
from adapter.owners import assignments
from adapter.services import Services
from adapter.settings import Settings
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, seed_booking
from tests.fakes.hubspot import FakeHubSpot
from tests.integration.test_calendar_feed import both

HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}
OWNERS = "  owner:\n    round_robin: [ada@example.com, bo@example.com]\n"


@pytest.fixture
def hubspot(
    fake: FakeHubSpot, make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[TestClient, Services]]:
    """The app on the fake HubSpot, bookings round-robined over two of its owners."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    mapping = tmp_path / "owners.yaml"
    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    mapping.write_text(text.replace("\ndefaults:\n", f"\ndefaults:\n{OWNERS}", 1), encoding="utf-8")
    for email in ("ada@example.com", "bo@example.com"):
        fake.add_owner(email)
    services = build_services(
        make_settings(
            crm_backend="hubspot",
            hubspot_access_token=fake.token,
            hubspot_base_url=fake.url,
            mappings_path=mapping,
        )
    )
    try:
        assert isinstance(services.backend, HubSpotBackend)
        assert run_setup(services.backend.api, load_mapping(mapping)).ok
        with TestClient(create_app(services=services, embedded_workers=1)) as client:
            yield client, services
    finally:
        services.close()


def book(client: TestClient, **fields: Any) -> None:
    answer = client.post("/api/bookings/incoming", json=seed_booking(**fields), headers=HOOK)
    assert answer.status_code == 200, answer.text


def test_a_hubspot_feed_follows_a_booking_through_reschedule_and_cancel(
    hubspot: tuple[TestClient, Services],
) -> None:
    """The meeting HubSpot was told about, by both parsers: moved with SEQUENCE 1, then
    STATUS:CANCELLED with SEQUENCE 2; no tasks (they are closed in HubSpot, unseen here)."""
    client, services = hubspot
    path = f"/calendar/{TokenStore(services.engine).create('hs')[1]}.ics"
    uid = "booking-test-123@bookme-crm"
    book(client, updatedAt="2026-11-01T10:00:00Z", meetingUrl="https://meet.example.com/x")
    created = both(client.get(path).text)
    assert set(created) == {uid}
    assert created[uid]["start"] == datetime(2027, 2, 15, 10, tzinfo=UTC)
    assert (created[uid]["sequence"], created[uid]["status"]) == (0, "CONFIRMED")
    book(
        client,
        event="booking.rescheduled",
        scheduledDate="2027-03-01T10:00:00Z",
        updatedAt="2026-11-02T10:00:00Z",
    )
    moved = both(client.get(path).text)
    assert moved[uid]["start"] == datetime(2027, 3, 1, 10, tzinfo=UTC)
    assert moved[uid]["sequence"] == 1
    book(client, event="booking.cancelled", updatedAt="2026-11-03T10:00:00Z")
    cancelled = both(client.get(path).text)
    assert (cancelled[uid]["sequence"], cancelled[uid]["status"]) == (2, "CANCELLED")


def test_a_hubspot_owner_feed_has_only_that_owners_meetings(
    hubspot: tuple[TestClient, Services],
) -> None:
    """Round-robined bookings: each owner's feed lists exactly the bookings assigned to them."""
    client, services = hubspot
    secret = TokenStore(services.engine).create("hs")[1]
    for number in range(4):
        book(client, bookingId=f"h{number}", email=f"p{number}@example.com")
    with services.engine.connect() as conn:
        rows = conn.execute(select(assignments.c.booking_id, assignments.c.owner_email))
        assigned = {booking_id: email for booking_id, email in rows}
    assert sorted(set(assigned.values())) == ["ada@example.com", "bo@example.com"]
    for owner in ("ada@example.com", "bo@example.com"):
        mine = both(client.get(f"/calendar/{secret}/owner/{owner}.ics").text)
        expected = {f"booking-{b}@bookme-crm" for b, who in assigned.items() if who == owner}
        assert set(mine) == expected
    assert len(both(client.get(f"/calendar/{secret}.ics").text)) == 4
