"""HubSpot app webhooks into the running service (real HTTP), and the poll beside them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from adapter.backends.hubspot import HubSpotBackend, run_setup
from adapter.changes import PUSH_KIND, changes_for_booking
from adapter.changes.store import crm_changes
from adapter.hubspot_sync import DELIVERY_KIND
from adapter.mapping import load_mapping
from adapter.services import Services
from adapter.settings import Settings
from outbox.store import SYNCED
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, LiveServer, seed_booking
from tests.fakes.bookme import FakeBookMe
from tests.fakes.hubspot import CLIENT_SECRET, FakeHubSpot, post_webhook

HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}
BOOKME_TOKEN = "fake-bookme-token"
# The seed booking (tests.conftest.seed_booking) as BookMe's API holds it.
BOOKME_BOOKING = {
    "id": "test-123",
    "eventType": "workshop",
    "name": "Test Person",
    "email": "test@example.com",
    "scheduledStart": "2027-02-15T10:00:00.000Z",
    "duration": 120,
}


@dataclass
class Service:
    fake: FakeHubSpot
    services: Services
    url: str
    bookme: FakeBookMe

    @property
    def hook_url(self) -> str:
        return f"{self.url}/api/hubspot/webhooks"

    def book(self, **fields: Any) -> None:
        answer = httpx.post(
            f"{self.url}/api/bookings/incoming", json=seed_booking(**fields), headers=HOOK
        )
        assert answer.status_code == 200, answer.text

    def meeting(self, booking_id: str = "test-123") -> dict[str, Any]:
        (meeting,) = self.fake.find("meetings", bookme_booking_id=booking_id)
        return meeting

    def deliveries(self) -> list[Any]:
        return [e for e in self.services.store.list(limit=1000) if e.kind == DELIVERY_KIND]

    def pushes(self) -> list[Any]:
        return [e for e in self.services.store.list(limit=1000) if e.kind == PUSH_KIND]

    def changes(self, booking_id: str = "test-123") -> list[Any]:
        with self.services.engine.connect() as conn:
            return changes_for_booking(conn, booking_id)

    def wait_pushed(self, timeout: float = 15.0) -> list[Any]:
        """The booking's changes once none is pending a push to BookMe any more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.changes()
            if found and all(c.state != "pending" for c in found):
                return found
            time.sleep(0.05)
        raise AssertionError(f"pushes still pending: {self.changes()}")

    def settled(self, timeout: float = 15.0) -> None:
        """Nothing pending in the outbox, and BookMe's webhooks all delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.bookme.wait_for_webhooks()
            counts = self.services.store.counts()
            if counts["queued"] == counts["retrying"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"outbox not settled: {self.services.store.counts()}")

    def wait_deliveries_synced(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.deliveries()
            if found and all(e.state == SYNCED for e in found):
                return
            time.sleep(0.05)
        raise AssertionError(f"deliveries not synced: {self.deliveries()}")


@pytest.fixture
def service(fake: FakeHubSpot, make_settings: Callable[..., Settings]) -> Iterator[Service]:
    """The service on the fake HubSpot behind real HTTP, one worker, no poll thread."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    fake.configure(search_lag=0.0)
    bookme = FakeBookMe(token=BOOKME_TOKEN, shared_secret=WEBHOOK_SECRET)
    bookme.start()
    bookme.add_booking(BOOKME_BOOKING)
    services = build_services(
        make_settings(
            crm_backend="hubspot",
            hubspot_access_token=fake.token,
            hubspot_base_url=fake.url,
            hubspot_client_secret=CLIENT_SECRET,
            hubspot_poll_seconds=0,
            hubspot_search_lag_seconds=5,
            bookme_api_url=bookme.url,
            bookme_api_token=BOOKME_TOKEN,
        )
    )
    try:
        assert isinstance(services.backend, HubSpotBackend)
        assert run_setup(services.backend.api, load_mapping(DEFAULT_MAPPING)).ok
        with LiveServer(create_app(services=services, embedded_workers=1)) as server:
            bookme.webhook_url = f"{server.url}/api/bookings/incoming"
            yield Service(fake, services, server.url, bookme)
    finally:
        bookme.stop()
        services.close()


def test_a_change_seen_by_webhook_and_by_the_poll_is_recorded_once(service: Service) -> None:
    """A reschedule delivered by HubSpot's webhook is one change and one push; the poll
    that then reads the same meeting adds nothing, nor does HubSpot's retry."""
    service.book()
    for name in ("hs_meeting_start_time", "hs_meeting_end_time", "hs_timestamp"):
        service.fake.subscribe("meetings", name)
    service.fake.webhook_queue.clear()  # our own create's events are not the point here
    service.fake.reschedule_meeting(service.meeting()["id"], "2027-02-16T13:30:00Z")
    assert len(service.fake.webhook_queue) == 3
    event = service.fake.webhook_queue[0]
    assert event["subscriptionType"] == "object.propertyChange"
    assert (event["objectTypeId"], event["changeSource"]) == ("0-47", "CRM_UI")

    assert service.fake.deliver_webhooks(service.hook_url) == [200]
    service.wait_deliveries_synced()

    (change,) = service.changes()
    assert (change.field, change.source) == ("start", "webhook")
    assert change.new_value == "2027-02-16T13:30:00.000Z"
    assert len(service.pushes()) == 1
    (change,) = service.wait_pushed()
    assert change.state == "pushed"

    poller = service.services.hubspot_poller()
    assert poller is not None
    poller.poll_once()
    assert len(service.changes()) == 1
    assert len(service.pushes()) == 1
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'bookme_hubspot_changes_total{source="webhook",state="recorded"} 1.0' in metrics
    assert 'bookme_hubspot_polls_total{outcome="done"} 1.0' in metrics

    # HubSpot delivers the same events again (a retry): the same job, nothing new.
    retry = [{**e, "attemptNumber": 1} for e in service.fake.webhook_deliveries[0]["events"]]
    assert post_webhook(service.hook_url, retry, CLIENT_SECRET) == 200
    assert len(service.deliveries()) == 1
    assert len(service.changes()) == 1


def test_a_change_the_poll_saw_first_is_not_recorded_again_by_its_webhook(
    service: Service,
) -> None:
    """Poll first, webhook after: the deal stage change is one row."""
    service.book()
    service.fake.subscribe("deals", "dealstage")
    (deal,) = service.fake.objects("deals")
    service.fake.webhook_queue.clear()
    service.fake.set_deal_stage(deal["id"], "closedlost")
    poller = service.services.hubspot_poller()
    assert poller is not None
    poller.poll_once()
    assert service.fake.deliver_webhooks(service.hook_url) == [200]
    service.wait_deliveries_synced()
    (change,) = service.changes()
    assert (change.object_type, change.new_value, change.source) == ("deal", "LOST", "poll")
    assert service.deliveries()[0].payload["events"][0]["objectType"] == "deals"


def _stored(service: Service) -> int:
    with service.services.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(crm_changes)).scalar_one())


@pytest.mark.parametrize(
    ("secret", "age_seconds"),
    [
        ("not-the-app-secret-0123456789", 0),  # forged
        (CLIENT_SECRET, 301),  # stale: more than five minutes old
        (CLIENT_SECRET, -600),  # from the future
    ],
)
def test_a_forged_or_stale_delivery_is_401_and_stores_nothing(
    service: Service, secret: str, age_seconds: int
) -> None:
    """Signed with another secret, or too old: 401, no job, no change; HubSpot keeps
    the events to retry."""
    service.book()
    service.fake.subscribe("meetings", "hs_meeting_start_time")
    service.fake.webhook_queue.clear()
    service.fake.reschedule_meeting(service.meeting()["id"], "2027-02-16T13:30:00Z")
    stamp = int((time.time() - age_seconds) * 1000)
    statuses = service.fake.deliver_webhooks(service.hook_url, secret=secret, timestamp_ms=stamp)
    assert statuses == [401]
    assert service.deliveries() == []
    assert _stored(service) == 0
    assert service.fake.webhook_queue[0]["attemptNumber"] == 1


def _meeting_moved(event_id: int) -> bytes:
    """A delivery body: meeting 1001's start time changed, now."""
    event = {
        "eventId": event_id,
        "subscriptionType": "object.propertyChange",
        "objectTypeId": "0-47",
        "objectId": 1001,
        "occurredAt": int(time.time() * 1000),
        "propertyName": "hs_meeting_start_time",
        "propertyValue": "1",
    }
    return json.dumps([event]).encode()


def test_an_unsigned_or_tampered_delivery_is_401(service: Service) -> None:
    """No signature headers, or a body changed after signing: 401, nothing stored."""
    body = _meeting_moved(1)
    unsigned = httpx.post(
        service.hook_url, content=body, headers={"content-type": "application/json"}
    )
    assert unsigned.status_code == 401
    from tests.fakes.hubspot import webhook_headers

    headers = webhook_headers(CLIENT_SECRET, service.hook_url, body)
    tampered = httpx.post(service.hook_url, content=body.replace(b"1001", b"1002"), headers=headers)
    assert tampered.status_code == 401
    assert unsigned.json() == {"error": "Unauthorized"}
    assert service.deliveries() == []


def test_behind_a_proxy_the_signature_is_checked_over_hubspot_webhook_url(
    service: Service,
) -> None:
    """HubSpot signs the target URL it was given; behind a proxy the service sees
    another one. Signed over the public URL: 401 until ``HUBSPOT_WEBHOOK_URL`` names
    it, then accepted and stored."""
    from tests.fakes.hubspot import webhook_headers

    public = "https://crm.example.com/api/hubspot/webhooks"
    body = _meeting_moved(7)
    headers = webhook_headers(CLIENT_SECRET, public, body)
    assert httpx.post(service.hook_url, content=body, headers=headers).status_code == 401
    assert service.deliveries() == []
    services = service.services
    services.settings = services.settings.model_copy(update={"hubspot_webhook_url": public})
    assert httpx.post(service.hook_url, content=body, headers=headers).status_code == 200
    assert len(service.deliveries()) == 1


def test_a_signed_delivery_of_another_shape_is_400_naming_the_field(service: Service) -> None:
    """Authentic but not HubSpot's shape: 400 with the field; other event kinds are ignored."""
    body = json.dumps([{"subscriptionType": "object.propertyChange", "objectId": "x"}]).encode()
    from tests.fakes.hubspot import webhook_headers

    answer = httpx.post(
        service.hook_url,
        content=body,
        headers=webhook_headers(CLIENT_SECRET, service.hook_url, body),
    )
    assert answer.status_code == 400
    fields = {d["field"] for d in answer.json()["details"]}
    assert fields == {"[0].objectId", "[0].occurredAt"}
    other = [{"subscriptionType": "contact.creation", "objectId": 5, "occurredAt": 1, "eventId": 9}]
    assert post_webhook(service.hook_url, other, CLIENT_SECRET) == 200
    assert service.deliveries() == []


def test_the_webhook_route_is_in_the_openapi_schema(service: Service) -> None:
    """The OpenAPI document lists the route, its signature headers and its answers."""
    schema = httpx.get(f"{service.url}/openapi.json").json()
    operation = schema["paths"]["/api/hubspot/webhooks"]["post"]
    assert {p["name"] for p in operation["parameters"]} >= {
        "X-HubSpot-Signature-v3",
        "X-HubSpot-Request-Timestamp",
    }
    assert {"200", "400", "401"} <= set(operation["responses"])


def test_webhooks_for_the_services_own_writes_record_nothing(service: Service) -> None:
    """HubSpot also notifies the app of its own writes: read back, they are echoes."""
    for name in ("hs_meeting_start_time", "hs_meeting_end_time", "hs_meeting_outcome"):
        service.fake.subscribe("meetings", name)
    service.fake.subscribe("deals", "dealstage")
    service.book()
    service.book(event="booking.rescheduled", scheduledDate="2027-02-20T09:00:00Z")
    assert service.fake.webhook_queue  # the creates and the reschedule, by our app
    assert {e["changeSource"] for e in service.fake.webhook_queue} == {"INTEGRATION"}
    assert set(service.fake.deliver_webhooks(service.hook_url)) == {200}
    service.wait_deliveries_synced()
    assert service.changes() == []
    assert service.pushes() == []
    assert service.deliveries()[0].result is not None
    assert service.deliveries()[0].result["read"] >= 1


def test_a_reschedule_in_hubspot_goes_to_bookme_once_and_converges(service: Service) -> None:
    """Moved in HubSpot → the poll records it → one reschedule at BookMe → BookMe's own
    booking.rescheduled webhook → synced back to HubSpot; the next poll sees our own write
    (an echo) and BookMe is not called again: no ping-pong."""
    service.book()
    meeting_id = service.meeting()["id"]
    service.fake.reschedule_meeting(meeting_id, "2027-02-16T13:30:00Z")
    poller = service.services.hubspot_poller()
    assert poller is not None
    poller.poll_once()
    (change,) = service.wait_pushed()
    assert (change.source, change.state) == ("poll", "pushed")
    service.settled()

    assert service.bookme.calls["POST reschedule"] == 1
    (request,) = service.bookme.requests
    assert request.body == {"scheduledStart": "2027-02-16T13:30:00.000Z", "duration": 120}
    assert service.bookme.deliveries == [("booking.rescheduled", 200)]
    rescheduled = [e for e in service.services.store.list(limit=100) if e.key == "test-123"]
    assert [e.state for e in rescheduled if e.kind == "booking.rescheduled"] == ["synced"]
    meeting = service.meeting()
    assert meeting["properties"]["hs_meeting_outcome"] == "RESCHEDULED"

    poller.poll_once()
    service.settled()
    assert len(service.changes()) == 1
    assert len(service.pushes()) == 1
    assert service.bookme.calls["POST reschedule"] == 1


def test_a_meeting_cancelled_in_hubspot_cancels_the_booking_with_the_notes(
    service: Service,
) -> None:
    """Outcome CANCELED in HubSpot, with notes: BookMe's cancel carries them as the reason,
    and BookMe's booking.cancelled converges without another call."""
    service.book()
    service.fake.set_meeting_outcome(
        service.meeting()["id"], "CANCELED", notes="Customer postponed to spring"
    )
    poller = service.services.hubspot_poller()
    assert poller is not None
    poller.poll_once()
    (change,) = service.wait_pushed()
    service.settled()
    assert (change.field, change.new_value, change.state) == ("outcome", "CANCELED", "pushed")
    (request,) = service.bookme.requests
    assert request.path == "/api/bookings/test-123/cancel"
    assert "Customer postponed to spring" in request.body["reason"]
    assert service.bookme.deliveries == [("booking.cancelled", 200)]
    poller.poll_once()
    service.settled()
    assert len(service.changes()) == 1
    assert service.bookme.calls["POST cancel"] == 1


def test_a_reschedule_in_hubspot_that_bookme_refuses_goes_back_with_a_task(
    service: Service,
) -> None:
    """BookMe refuses (slot taken): the HubSpot meeting goes back to BookMe's time, the
    deal gets a task saying why, and the poll then records nothing new."""
    service.book()
    service.bookme.take_slot("2027-02-16T13:30:00Z", 60)
    meeting_id = service.meeting()["id"]
    service.fake.reschedule_meeting(meeting_id, "2027-02-16T13:30:00Z")
    poller = service.services.hubspot_poller()
    assert poller is not None
    poller.poll_once()
    (change,) = service.wait_pushed()
    service.settled()
    assert change.state == "refused"
    assert change.detail == "the slot at 2027-02-16T13:30:00.000Z is already booked"
    start = service.meeting()["properties"]["hs_timestamp"]
    assert start.startswith("2027-02-15T10:00:00")
    titles = [t["properties"]["hs_task_subject"] for t in service.fake.find("tasks")]
    assert f"BookMe refused the reschedule: {change.detail}" in titles
    poller.poll_once()
    service.settled()
    assert [c.state for c in service.changes()] == ["refused"]
    assert service.bookme.applied == 0
