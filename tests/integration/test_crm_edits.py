"""Sales staff's edits of the local CRM through the PATCH endpoints: validation naming the
field, the row and its recorded change in one transaction, progress kept by later events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from adapter.changes.store import crm_changes
from adapter.services import Services
from outbox.schema import events
from tests.conftest import seed_booking, sign

START = (datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def later() -> str:
    """An ``updatedAt`` after every snapshot so far (whole seconds: ahead of the receipt)."""
    return iso(datetime.now(UTC) + timedelta(seconds=2))


def deliver(client: TestClient, **overrides: Any) -> dict[str, Any]:
    body = json.dumps(seed_booking(scheduledDate=iso(START), **overrides)).encode()
    answer = client.post("/api/bookings/incoming", content=body, headers=sign(body))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def recorded(services: Services) -> list[Any]:
    with services.engine.connect() as conn:
        return list(conn.execute(select(crm_changes).order_by(crm_changes.c.id)))


def pushes(services: Services) -> int:
    with services.engine.connect() as conn:
        query = select(func.count()).select_from(events).where(events.c.kind == "bookme.push")
        return int(conn.execute(query).scalar_one())


@pytest.fixture
def synced(client: TestClient) -> dict[str, Any]:
    return deliver(client)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"activityDate": "tomorrow"}, "activityDate"),
        ({"activityDate": "2027-01-01T10:00:00"}, "activityDate"),
        ({"activityDate": 1800000000}, "activityDate"),
        ({"durationMinutes": 0}, "durationMinutes"),
        ({"durationMinutes": "30"}, "durationMinutes"),
        ({"durationMinutes": 1441}, "durationMinutes"),
        ({"outcome": "LATE"}, "outcome"),
        ({"outcome": "CANCELED", "reason": "x" * 1001}, "reason"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_activity_edit_is_400_naming_the_field_and_changes_nothing(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    synced: dict[str, Any],
    body: dict[str, Any],
    field: str,
) -> None:
    """Each malformed body is a 400 whose details name the field; nothing is recorded."""
    answer = client.patch(f"/api/activities/{synced['activity']['id']}", json=body, headers=admin)
    assert answer.status_code == 400, answer.text
    assert field in {detail["field"] for detail in answer.json()["details"]}
    assert recorded(services) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"activityDate": "2020-01-01T10:00:00Z"}, "activityDate"),
        ({"activityDate": iso(START + timedelta(days=1)), "outcome": "CANCELED"}, "outcome"),
        ({"outcome": "COMPLETED", "reason": "because"}, "reason"),
    ],
)
def test_an_edit_bookme_cannot_follow_is_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    services: Services,
    synced: dict[str, Any],
    body: dict[str, Any],
    field: str,
) -> None:
    """A start in the past, a move with a cancel, a reason without a cancel: 422."""
    activity_id = synced["activity"]["id"]
    answer = client.patch(f"/api/activities/{activity_id}", json=body, headers=admin)
    assert answer.status_code == 422, answer.text
    assert answer.json()["details"][0]["field"] == field
    assert recorded(services) == []
    assert pushes(services) == 0
    meeting = client.get("/api/activities", headers=admin).json()[0]
    assert meeting["activityDate"] == iso(START)


def test_a_cancelled_meeting_cannot_be_moved_or_reopened(
    client: TestClient, admin: dict[str, str], services: Services
) -> None:
    """BookMe cannot un-cancel a booking: moving or reopening a cancelled meeting is 422."""
    activity_id = deliver(client)["activity"]["id"]
    deliver(client, event="booking.cancelled", updatedAt=later())
    for body, field in (
        ({"activityDate": iso(START + timedelta(days=1))}, "activityDate"),
        ({"outcome": "SCHEDULED"}, "outcome"),
    ):
        answer = client.patch(f"/api/activities/{activity_id}", json=body, headers=admin)
        assert answer.status_code == 422, answer.text
        assert answer.json()["details"][0]["field"] == field


def test_unknown_records_are_404_and_the_token_is_required(
    client: TestClient, admin: dict[str, str]
) -> None:
    """No such activity or lead: 404; without the admin token: 401 before the body is read."""
    move = {"activityDate": iso(START)}
    assert client.patch("/api/activities/nope", json=move, headers=admin).status_code == 404
    assert client.patch("/api/leads/nope", json={"stage": "WON"}, headers=admin).status_code == 404
    assert client.patch("/api/activities/nope", content=b"{").status_code == 401
    assert client.patch("/api/leads/nope", json={"stage": "WON"}).status_code == 401


def test_a_stage_set_by_hand_is_recorded_and_kept_by_later_bookings(
    client: TestClient, admin: dict[str, str], services: Services, synced: dict[str, Any]
) -> None:
    """PATCH stage → the lead is WON, the change is progress (recorded, no push), and the
    booking's next event does not derive the stage back."""
    lead_id = synced["lead"]["id"]
    bad = client.patch(f"/api/leads/{lead_id}", json={"stage": "W O N"}, headers=admin)
    assert bad.status_code == 400
    assert bad.json()["details"][0]["field"] == "stage"

    answer = client.patch(
        f"/api/leads/{lead_id}", json={"stage": "won"}, headers={**admin, "X-Actor": "bo@x.se"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["stage"] == "WON"
    (change,) = recorded(services)
    assert (change.object_type, change.field, change.old_value, change.new_value) == (
        "deal",
        "stage",
        "CONTACTED",
        "WON",
    )
    assert (change.state, change.source, change.actor) == ("recorded", "api", "bo@x.se")

    deliver(client, event="booking.rescheduled", updatedAt=later())
    assert client.get(f"/api/leads/{lead_id}", headers=admin).json()["stage"] == "WON"
    assert len(recorded(services)) == 1
    assert pushes(services) == 0


def test_completed_by_hand_is_progress_kept_over_bookme_s_scheduled(
    client: TestClient, admin: dict[str, str], services: Services, synced: dict[str, Any]
) -> None:
    """outcome COMPLETED is recorded, not pushed, and BookMe's next update keeps it."""
    activity_id = synced["activity"]["id"]
    answer = client.patch(
        f"/api/activities/{activity_id}", json={"outcome": "completed"}, headers=admin
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "COMPLETED"
    deliver(client, event="booking.updated", notes="later", updatedAt=later())
    meeting = client.get("/api/activities", headers=admin).json()[0]
    assert meeting["outcome"] == "COMPLETED"
    assert [(c.field, c.new_value, c.state) for c in recorded(services)] == [
        ("outcome", "COMPLETED", "recorded")
    ]
    assert pushes(services) == 0


def test_a_task_done_through_the_api_is_recorded(
    client: TestClient, admin: dict[str, str], services: Services, synced: dict[str, Any]
) -> None:
    """PATCH /api/tasks/{id} done is a status change in the booking's history."""
    task = synced["tasks"][0]
    answer = client.patch(f"/api/tasks/{task['id']}", json={"status": "done"}, headers=admin)
    assert answer.status_code == 200
    (change,) = recorded(services)
    assert (change.object_type, change.field, change.new_value) == ("task", "status", "done")
    assert change.task_key is not None


def test_the_openapi_schema_documents_the_edits(client: TestClient) -> None:
    """The PATCH bodies and their 422 are in the OpenAPI document."""
    spec = client.get("/openapi.json").json()
    activity = spec["paths"]["/api/activities/{activity_id}"]["patch"]
    body = activity["requestBody"]["content"]["application/json"]["schema"]
    assert {"activityDate", "durationMinutes", "outcome", "reason"} <= set(body["properties"])
    assert "422" in activity["responses"]
    lead = spec["paths"]["/api/leads/{lead_id}"]["patch"]
    assert "stage" in lead["requestBody"]["content"]["application/json"]["schema"]["properties"]
