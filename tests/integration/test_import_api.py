"""POST /api/bookings/import over the app, with BookMe's API on respx and the local CRM."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from adapter.services import Services, build_services
from adapter.settings import Settings
from tests.conftest import SAMPLES, WEBHOOK_SECRET
from tests.integration.test_bookme_import import TOKEN, crm_rows, event_count, resource

IMPORT = "/api/bookings/import"


@pytest.fixture
def services(bookme_services: Services) -> Services:
    return bookme_services


def test_import_needs_the_admin_token(
    client: TestClient, bookme: respx.MockRouter, admin: dict[str, str]
) -> None:
    """Without the admin bearer token: 401 (even for a broken body), and BookMe is not asked."""
    route = bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        answer = client.post(IMPORT, json={"bookingId": "bk_9f3a21"}, headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"error": "Unauthorized"}
    garbage = client.post(IMPORT, content=b"\xff{", headers={"content-type": "application/json"})
    assert garbage.status_code == 401  # credentials are checked before the body is read
    assert route.call_count == 0


def test_import_of_a_new_booking_answers_with_the_crm_records(
    client: TestClient, bookme: respx.MockRouter, admin: dict[str, str]
) -> None:
    """A booking only BookMe knows is synced and answered 200 with the CRM's ids."""
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    answer = client.post(IMPORT, json={"bookingId": "bk_9f3a21"}, headers=admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["success"], body["status"], body["new"]) == (True, "synced", True)
    assert body["bookingId"] == "bk_9f3a21"
    assert body["lead"]["title"] == "30min-consultation - Nordkap Konsult AB"
    assert body["contact"]["email"] == "anna.lindqvist@nordkap.se"
    status = client.get(f"/api/bookings/events/{body['eventId']}", headers=admin).json()
    assert status["status"] == "synced"


def test_import_after_the_webhook_changes_nothing_in_the_crm(
    client: TestClient, services: Services, bookme: respx.MockRouter, admin: dict[str, str]
) -> None:
    """The webhook's booking imported: new=false, the webhook's event, every CRM row as it was."""
    sample = json.loads((SAMPLES / "consultation-with-company.json").read_text())
    delivered = client.post(
        "/api/bookings/incoming", json=sample, headers={"X-Webhook-Secret": WEBHOOK_SECRET}
    )
    assert delivered.status_code == 200, delivered.text
    before, events = crm_rows(services.engine), event_count(services)
    leads = client.get("/api/leads", headers=admin).json()
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())

    answer = client.post(IMPORT, json={"bookingId": "bk_9f3a21"}, headers=admin)

    assert answer.status_code == 200
    body = answer.json()
    assert (body["new"], body["status"]) == (False, "synced")
    assert body["eventId"] == delivered.json()["eventId"]
    assert body["lead"] == delivered.json()["lead"]
    services.new_worker().drain()
    assert event_count(services) == events
    assert crm_rows(services.engine) == before
    assert client.get("/api/leads", headers=admin).json() == leads


def test_an_unplaceable_booking_is_answered_quarantined(
    client: TestClient, bookme: respx.MockRouter, admin: dict[str, str]
) -> None:
    """An event type outside the mapping: 202 quarantined, with the status Location."""
    bookme.get("/api/bookings/bk_yoga").respond(200, json=resource(id="bk_yoga", eventType="yoga"))
    answer = client.post(IMPORT, json={"bookingId": "bk_yoga"}, headers=admin)
    assert answer.status_code == 202
    assert answer.json()["status"] == "quarantined"
    assert answer.headers["location"] == f"/api/bookings/events/{answer.json()['eventId']}"


@pytest.mark.parametrize(
    "payload",
    [{}, {"bookingId": ""}, {"bookingId": 42}, {"bookingId": "x" * 201}, {"bookingId": "   "}],
    ids=["missing", "empty", "number", "too-long", "blank"],
)
def test_a_bad_request_is_400_and_asks_bookme_nothing(
    client: TestClient, bookme: respx.MockRouter, admin: dict[str, str], payload: object
) -> None:
    """A missing, empty, non-string, over-long or blank bookingId: 400 with details."""
    answer = client.post(IMPORT, json=payload, headers=admin)
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"][0]["field"] == "bookingId"
    assert bookme.calls.call_count == 0


def test_a_booking_bookme_does_not_have_is_404(
    client: TestClient, services: Services, bookme: respx.MockRouter, admin: dict[str, str]
) -> None:
    """BookMe's 404: our 404 naming the booking; nothing stored."""
    bookme.get("/api/bookings/bk_gone").respond(404)
    answer = client.post(IMPORT, json={"bookingId": "bk_gone"}, headers=admin)
    assert answer.status_code == 404
    assert answer.json() == {"error": "BookMe has no booking 'bk_gone'"}
    assert event_count(services) == 0


@pytest.mark.parametrize(
    ("answer", "message", "fields"),
    [
        (httpx.Response(503), "BookMe is unavailable (HTTP 503) after 4 attempts", []),
        (httpx.ConnectError("refused"), "BookMe is unavailable (cannot connect", []),
        (httpx.Response(401), "check BOOKME_API_TOKEN", []),
        (
            httpx.Response(200, json=resource(id="bk_1", scheduledStart="soon")),
            "BookMe's booking 'bk_1' is malformed: scheduledStart:",
            ["scheduledStart"],
        ),
    ],
    ids=["5xx", "unreachable", "token", "malformed"],
)
def test_bookme_failing_is_502_with_a_clear_message(
    client: TestClient,
    services: Services,
    bookme: respx.MockRouter,
    admin: dict[str, str],
    answer: httpx.Response | Exception,
    message: str,
    fields: list[str],
) -> None:
    """BookMe down, refusing or sending a malformed booking: 502 saying which; nothing stored."""
    route = bookme.get("/api/bookings/bk_1")
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    reply = client.post(IMPORT, json={"bookingId": "bk_1"}, headers=admin)
    assert reply.status_code == 502
    assert message in reply.json()["error"]
    assert [d["field"] for d in reply.json()["details"]] == fields
    assert TOKEN not in reply.text
    assert event_count(services) == 0


def test_import_without_bookme_configured_is_503(
    make_settings: Callable[..., Settings], admin: dict[str, str]
) -> None:
    """No BOOKME_API_URL: 503 naming the setting, so ops know what to set."""
    from adapter.api.app import create_app

    services = build_services(make_settings())
    try:
        with TestClient(create_app(services=services, embedded_workers=0)) as client:
            answer = client.post(IMPORT, json={"bookingId": "bk_1"}, headers=admin)
        assert answer.status_code == 503
        assert "BOOKME_API_URL" in answer.json()["error"]
    finally:
        services.close()
