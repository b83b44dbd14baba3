"""The dashboard's edits (Reschedule…, Cancel meeting, the stage picker, a task done) and each
booking's changes in both directions, with the fake BookMe answering on loopback."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from adapter.api.app import create_app
from adapter.changes.store import crm_changes
from adapter.services import Services, build_services
from adapter.settings import Settings
from adapter.ui.display import local_time
from outbox.schema import events
from tests.fakes.bookme import FakeBookMe, iso_ms
from tests.integration.test_dashboard import ADMIN, book, log_in, page_csrf

TOKEN = "fake-bookme-token"
START = (datetime.now(UTC) + timedelta(days=12)).replace(hour=9, minute=0, second=0, microsecond=0)


@pytest.fixture
def bookme() -> Iterator[FakeBookMe]:
    with FakeBookMe(token=TOKEN) as fake:
        fake.add_booking(
            {
                "id": "test-123",
                "eventType": "workshop",
                "name": "Test Person",
                "email": "test@example.com",
                "scheduledStart": iso_ms(START),
                "duration": 120,
            }
        )
        yield fake


@pytest.fixture
def services(make_settings: Callable[..., Settings], bookme: FakeBookMe) -> Iterator[Services]:
    svc = build_services(
        make_settings(
            bookme_api_url=bookme.url,
            bookme_api_token=TOKEN,
            outbox_retry_base_seconds=0.05,
            sync_wait_ms=0,  # no worker runs in these apps: the tests drain by hand
        )
    )
    yield svc
    svc.close()


@pytest.fixture
def ui(services: Services) -> Iterator[TestClient]:
    app = create_app(services=services, embedded_workers=0)
    with TestClient(app, base_url="https://testserver") as client:
        assert log_in(client).status_code == 303
        yield client


def changes(services: Services) -> list[Any]:
    with services.engine.connect() as conn:
        return list(conn.execute(select(crm_changes).order_by(crm_changes.c.id)))


def booked(ui: TestClient, services: Services) -> dict[str, Any]:
    event_id = book(ui, scheduledDate=iso_ms(START))["eventId"]
    services.new_worker().drain()
    status = ui.get(f"/api/bookings/events/{event_id}", headers=ADMIN).json()
    assert status["status"] == "synced", status
    result: dict[str, Any] = status["result"]
    return result


def post(ui: TestClient, path: str, page: str, **fields: str) -> Any:
    return ui.post(path, data={"csrf": page_csrf(ui, page), **fields}, follow_redirects=False)


def test_reschedule_from_the_lead_page_is_recorded_pushed_and_shown(
    ui: TestClient, services: Services, bookme: FakeBookMe
) -> None:
    """The "Reschedule…" form moves the meeting (date and time on the dashboard's clock),
    records the change as the dashboard's, and BookMe gets the reschedule; the lead page
    lists the booking's events from BookMe and its changes towards BookMe."""
    body = booked(ui, services)
    lead_page = f"/ui/leads/{body['lead']['id']}"
    page = ui.get(lead_page).text
    assert "Reschedule…" in page
    assert "Cancel meeting" in page
    assert 'id="stage-picker"' in page

    moved = START + timedelta(days=1)
    answer = post(
        ui,
        f"/ui/meetings/{body['activity']['id']}/reschedule",
        lead_page,
        date=f"{moved:%Y-%m-%d}",
        time=f"{moved:%H:%M}",
        duration="90",
        next=lead_page,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == lead_page
    services.new_worker().drain()

    assert [(c.field, c.new_value, c.source, c.state) for c in changes(services)] == [
        ("start", iso_ms(moved), "dashboard", "pushed"),
        ("duration", "90", "dashboard", "pushed"),
    ]
    assert bookme.booking("test-123")["scheduledStart"] == iso_ms(moved)
    page = html.unescape(ui.get(lead_page).text)
    assert "BookMe → CRM" in page
    assert "booking.created" in page
    assert "CRM → BookMe" in page
    utc = ZoneInfo("UTC")
    assert f"start: {local_time(START, utc)} → {local_time(moved, utc)}" in page
    assert "duration: 120 min → 90 min" in page
    assert "BookMe moved the booking to" in page


def test_cancel_meeting_sends_the_reason_to_bookme(
    ui: TestClient, services: Services, bookme: FakeBookMe
) -> None:
    """ "Cancel meeting" with a reason: the meeting is cancelled and BookMe is told why."""
    body = booked(ui, services)
    lead_page = f"/ui/leads/{body['lead']['id']}"
    answer = post(
        ui,
        f"/ui/meetings/{body['activity']['id']}/cancel",
        lead_page,
        reason="Moved to next quarter",
        next=lead_page,
    )
    assert answer.status_code == 303
    services.new_worker().drain()
    assert bookme.requests[0].body == {"reason": "Moved to next quarter"}
    assert [(c.field, c.new_value, c.state) for c in changes(services)] == [
        ("outcome", "CANCELED", "pushed")
    ]
    assert "Reschedule…" not in ui.get(lead_page).text  # a cancelled meeting stays so


def test_a_bad_form_or_a_missing_csrf_token_changes_nothing(
    ui: TestClient, services: Services, bookme: FakeBookMe
) -> None:
    """A form without the session's CSRF token is 403; an unreadable date is refused with
    the field named; nothing is recorded or pushed."""
    body = booked(ui, services)
    lead_page = f"/ui/leads/{body['lead']['id']}"
    path = f"/ui/meetings/{body['activity']['id']}/reschedule"
    forged = ui.post(
        path,
        data={"csrf": "forged", "date": "2030-01-01", "time": "10:00", "duration": "30"},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    bad = post(ui, path, lead_page, date="someday", time="10:00", duration="30", next=lead_page)
    assert bad.status_code == 303
    assert "date: give a date" in html.unescape(ui.get(lead_page).text)
    past = post(ui, path, lead_page, date="2020-01-01", time="10:00", duration="30")
    assert past.status_code == 303
    stage = ui.post(
        f"/ui/leads/{body['lead']['id']}/stage",
        data={"csrf": "forged", "stage": "WON"},
        follow_redirects=False,
    )
    assert stage.status_code == 403
    assert changes(services) == []
    with services.engine.connect() as conn:
        assert conn.execute(select(events).where(events.c.kind == "bookme.push")).first() is None


def test_the_stage_picker_and_a_task_done_are_recorded_as_the_dashboard_s(
    ui: TestClient, services: Services
) -> None:
    """The stage picker sets the lead's stage by hand; the task checkbox records a status
    change; both are progress, nothing is pushed."""
    body = booked(ui, services)
    lead_id = body["lead"]["id"]
    lead_page = f"/ui/leads/{lead_id}"
    assert post(ui, f"/ui/leads/{lead_id}/stage", lead_page, stage="WON").status_code == 303
    assert ui.get(f"/api/leads/{lead_id}", headers=ADMIN).json()["stage"] == "WON"
    task_id = body["tasks"][0]["id"]
    assert post(ui, f"/ui/tasks/{task_id}/done", "/ui").status_code == 303
    assert [(c.object_type, c.new_value, c.source, c.state) for c in changes(services)] == [
        ("deal", "WON", "dashboard", "recorded"),
        ("task", "done", "dashboard", "recorded"),
    ]


def test_the_sync_page_lists_refused_pushes_with_bookme_s_reason(
    ui: TestClient, services: Services, bookme: FakeBookMe
) -> None:
    """A refused reschedule appears under "Refused or failed pushes" with BookMe's reason,
    and in the recent changes."""
    body = booked(ui, services)
    moved = START + timedelta(days=2)
    bookme.take_slot(moved, 30)
    lead_page = f"/ui/leads/{body['lead']['id']}"
    post(
        ui,
        f"/ui/meetings/{body['activity']['id']}/reschedule",
        lead_page,
        date=f"{moved:%Y-%m-%d}",
        time=f"{moved:%H:%M}",
        duration="120",
    )
    services.new_worker().drain()
    page = html.unescape(ui.get("/ui/sync").text)
    problems = page.split('id="crm-problems"', 1)[1].split("</ul>", 1)[0]
    assert "refused" in problems
    assert f"the slot at {iso_ms(moved)} is already booked" in problems
    assert 'id="crm-recent"' in page
    lead = html.unescape(ui.get(lead_page).text)
    assert "BookMe refused the reschedule" in lead  # the task, on the lead page
