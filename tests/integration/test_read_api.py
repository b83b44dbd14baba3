"""The local CRM's read API (contract §6) over a real SQLite file."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from adapter import db
from adapter.api.routes.crm import router
from adapter.api.throttle import FailureThrottle
from adapter.backends.base import SyncJob, SyncResult
from adapter.backends.local import LocalBackend
from adapter.metrics import Metrics
from adapter.plan import BookingPlan, CompanyPlan, ContactPlan, LeadPlan, MeetingPlan, TaskPlan
from outbox.db import make_engine
from outbox.store import OutboxStore

TOKEN = "admin-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Z_DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
NOW = datetime.now(UTC).replace(microsecond=0)

CONTACT_KEYS = {"id", "firstName", "lastName", "email", "phone", "companyId", "tags"}
LEAD_KEYS = {
    "id",
    "title",
    "stage",
    "source",
    "sourceDetails",
    "estimatedValue",
    "leadScore",
    "companyId",
    "contactId",
    "tags",
    "lastActivityDate",
}
ACTIVITY_KEYS = {
    "id",
    "leadId",
    "contactId",
    "type",
    "subject",
    "description",
    "activityDate",
    "durationMinutes",
    "outcome",
    "metadata",
    "lead",
}
TASK_KEYS = {
    "id",
    "leadId",
    "bookingId",
    "key",
    "title",
    "description",
    "dueDate",
    "priority",
    "status",
}


def make_plan(
    booking_id: str, email: str, name: str, start: datetime, company: str | None = None
) -> BookingPlan:
    """A workshop booking plan with one follow-up task a day after the meeting."""
    email_key = email.strip().lower()
    name_key = " ".join(company.split()).casefold() if company else None
    owner = f"company:{name_key}" if name_key else f"contact:{email_key}"
    first, _, last = name.partition(" ")
    return BookingPlan(
        booking_id=booking_id,
        event_type="workshop",
        event="booking.created",
        snapshot_at=NOW,
        contact=ContactPlan(
            email_key=email_key,
            email=email,
            first_name=first,
            last_name=last,
            phone=None,
            tags=("bookme", "workshop"),
        ),
        company=CompanyPlan(name_key=name_key, name=company, tags=("bookme",))
        if company and name_key
        else None,
        lead=LeadPlan(
            lead_key=f"{owner}|workshop",
            title=f"workshop - {company or name}",
            stage="CONTACTED",
            source="BookMe",
            source_details=f"BookMe booking {booking_id}",
            estimated_value=15000,
            lead_score=60,
            tags=("bookme", "workshop"),
            activity_at=start,
        ),
        meeting=MeetingPlan(
            booking_id=booking_id,
            subject="workshop - Scheduled",
            description="Bokning via BookMe",
            start=start,
            duration_minutes=120,
            end=start + timedelta(minutes=120),
            meeting_url="https://meet.example.com/abc",
            outcome="SCHEDULED",
            source="bookme",
        ),
        tasks=(
            TaskPlan(
                key="follow_up",
                title="Workshop follow-up",
                description="Follow up",
                due=start + timedelta(days=1),
                priority="medium",
            ),
        ),
    )


def _settle(conn: Any, job: SyncJob, result: SyncResult) -> None:
    """Nothing to settle: these tests have no outbox."""


@dataclass
class FakeServices:
    """The attributes of ``Services`` the read API uses."""

    engine: Engine
    admin_token: str | None
    store: OutboxStore
    throttle: FailureThrottle = field(
        default_factory=lambda: FailureThrottle(
            "10000/minute", failures=Metrics().auth_failures, throttled=Metrics().auth_throttled
        )
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite file holding three bookings: one past, two upcoming (one with a company)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    db.upgrade(engine)  # the CRM, and the change history the edits record into
    plans = [
        make_plan("bk-past", "past@example.com", "Past Person", NOW - timedelta(days=3)),
        make_plan("bk-late", "Test@Example.com", "Test Person", NOW + timedelta(days=9)),
        make_plan("bk-soon", "anna@acme.test", "Anna Lind", NOW + timedelta(days=2), "Acme AB"),
    ]
    jobs = [SyncJob(uuid.uuid4().hex, p.booking_id, "lease", p) for p in plans]
    assert LocalBackend(engine).apply(jobs, _settle) == {}
    yield engine
    engine.dispose()


@pytest.fixture
def client(engine: Engine) -> TestClient:
    """A client of an app serving only the read API."""
    app = FastAPI()
    app.state.services = FakeServices(engine=engine, admin_token=TOKEN, store=OutboxStore(engine))
    app.include_router(router)
    return TestClient(app, headers=AUTH)


def get(client: TestClient, path: str, **params: Any) -> Any:
    """GET ``path`` expecting 200; returns the JSON body."""
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


ENDPOINTS = [
    ("GET", "/api/contacts"),
    ("GET", "/api/companies"),
    ("GET", "/api/leads"),
    ("GET", "/api/leads/x"),
    ("GET", "/api/leads/x/activities"),
    ("GET", "/api/activities"),
    ("GET", "/api/tasks"),
    ("PATCH", "/api/tasks/x"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_every_endpoint_requires_the_admin_token(
    client: TestClient, method: str, path: str, headers: dict[str, str]
) -> None:
    """Without the bearer token, or with a wrong one, every endpoint answers 401."""
    client.headers.clear()
    response = client.request(method, path, headers=headers, json={"status": "done"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}


def test_no_admin_token_configured_refuses_everyone(client: TestClient) -> None:
    """With ADMIN_TOKEN unset, the read API is closed rather than open."""
    client.app.state.services.admin_token = None  # type: ignore[attr-defined]
    assert client.get("/api/leads").status_code == 401


def test_contacts_shape_and_email_filter(client: TestClient) -> None:
    """Contacts are camelCase; ?email= matches trimmed and case-insensitively."""
    everyone = get(client, "/api/contacts")
    assert len(everyone) == 3
    assert all(set(contact) == CONTACT_KEYS for contact in everyone)

    [match] = get(client, "/api/contacts", email="  TEST@example.COM ")
    assert match["email"] == "Test@Example.com"
    assert (match["firstName"], match["lastName"]) == ("Test", "Person")
    assert match["tags"] == ["bookme", "workshop"]
    assert get(client, "/api/contacts", email="nobody@example.com") == []


def test_companies_shape(client: TestClient) -> None:
    """Companies list id, name and tags."""
    [company] = get(client, "/api/companies")
    assert set(company) == {"id", "name", "tags"}
    assert company["name"] == "Acme AB"
    [anna] = get(client, "/api/contacts", email="anna@acme.test")
    assert anna["companyId"] == company["id"]


def test_leads_list_and_get(client: TestClient) -> None:
    """Leads are camelCase with Z datetimes; one lead by id, 404 for an unknown id."""
    all_leads = get(client, "/api/leads")
    assert len(all_leads) == 3
    for lead in all_leads:
        assert set(lead) == LEAD_KEYS
        assert Z_DATETIME.match(lead["lastActivityDate"])
    acme = next(lead for lead in all_leads if lead["title"] == "workshop - Acme AB")
    assert (acme["estimatedValue"], acme["leadScore"], acme["stage"]) == (15000, 60, "CONTACTED")

    assert get(client, f"/api/leads/{acme['id']}") == acme
    missing = client.get("/api/leads/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not found"}


def test_upcoming_meetings_are_sorted_and_complete(client: TestClient) -> None:
    """?type=MEETING&upcoming=true lists future meetings earliest first, with metadata and lead."""
    upcoming = get(client, "/api/activities", type="MEETING", upcoming="true")
    assert [a["metadata"]["bookingId"] for a in upcoming] == ["bk-soon", "bk-late"]
    soon = upcoming[0]
    assert set(soon) == ACTIVITY_KEYS
    assert soon["type"] == "MEETING"
    assert soon["metadata"] == {
        "bookingId": "bk-soon",
        "meetingUrl": "https://meet.example.com/abc",
        "source": "bookme",
    }
    assert soon["lead"] == {"id": soon["leadId"], "title": "workshop - Acme AB"}
    assert soon["activityDate"] == (NOW + timedelta(days=2)).isoformat(
        timespec="milliseconds"
    ).replace("+00:00", "Z")
    assert soon["durationMinutes"] == 120

    everything = get(client, "/api/activities")
    assert [a["metadata"]["bookingId"] for a in everything] == ["bk-past", "bk-soon", "bk-late"]
    assert get(client, "/api/activities", type="CALL") == []


def test_lead_activities(client: TestClient) -> None:
    """A lead's activities are its own meetings; an unknown lead is 404."""
    [soon] = get(client, "/api/activities", type="MEETING", upcoming="true", limit=1)
    mine = get(client, f"/api/leads/{soon['leadId']}/activities", type="MEETING")
    assert [a["id"] for a in mine] == [soon["id"]]
    assert client.get("/api/leads/nope/activities").status_code == 404


def test_task_filters(client: TestClient) -> None:
    """Tasks filter by status, upcoming and bookingId; an unknown status is 422."""
    everything = get(client, "/api/tasks")
    assert len(everything) == 3
    assert all(set(task) == TASK_KEYS for task in everything)
    assert all(Z_DATETIME.match(task["dueDate"]) for task in everything)

    upcoming = get(client, "/api/tasks", status="todo", upcoming="true")
    assert [t["bookingId"] for t in upcoming] == ["bk-soon", "bk-late"]
    [one] = get(client, "/api/tasks", bookingId="bk-past")
    assert (one["key"], one["title"], one["priority"]) == (
        "follow_up",
        "Workshop follow-up",
        "medium",
    )
    assert client.get("/api/tasks", params={"status": "open"}).status_code == 422


def cancelled(plan: BookingPlan) -> BookingPlan:
    """The booking's cancellation snapshot, a second after ``plan``."""
    return plan.model_copy(
        update={
            "event": "booking.cancelled",
            "lifecycle": "cancelled",
            "snapshot_at": plan.snapshot_at + timedelta(seconds=1),
            "meeting": plan.meeting.model_copy(update={"outcome": "CANCELED"}),
            "tasks": tuple(t.model_copy(update={"status": "cancelled"}) for t in plan.tasks),
        }
    )


def test_cancelled_booking_leaves_the_todo_list(client: TestClient, engine: Engine) -> None:
    """A cancelled booking's meeting shows CANCELED and its tasks leave ?status=todo&upcoming."""
    plan = cancelled(
        make_plan("bk-soon", "anna@acme.test", "Anna Lind", NOW + timedelta(days=2), "Acme AB")
    )
    job = SyncJob(uuid.uuid4().hex, plan.booking_id, "lease", plan)
    assert LocalBackend(engine).apply([job], _settle) == {}

    upcoming = get(client, "/api/tasks", status="todo", upcoming="true")
    assert [t["bookingId"] for t in upcoming] == ["bk-late"]
    [task] = get(client, "/api/tasks", bookingId="bk-soon")
    assert task["status"] == "cancelled"
    assert [t["bookingId"] for t in get(client, "/api/tasks", status="cancelled")] == ["bk-soon"]
    meetings = get(client, "/api/activities", type="MEETING", upcoming="true")
    assert [(a["metadata"]["bookingId"], a["outcome"]) for a in meetings] == [
        ("bk-soon", "CANCELED"),
        ("bk-late", "SCHEDULED"),
    ]


def test_patch_completes_a_task(client: TestClient) -> None:
    """PATCH status=done returns the task, which then leaves ?status=todo."""
    [task] = get(client, "/api/tasks", bookingId="bk-soon")

    response = client.patch(f"/api/tasks/{task['id']}", json={"status": "done"})

    assert response.status_code == 200
    assert response.json() == {**task, "status": "done"}
    todo = get(client, "/api/tasks", status="todo")
    assert task["id"] not in {t["id"] for t in todo}
    assert [t["id"] for t in get(client, "/api/tasks", status="done")] == [task["id"]]


@pytest.mark.parametrize("body", [{"status": "finished"}, {}, {"status": "done", "x": 1}])
def test_patch_rejects_bad_bodies(client: TestClient, body: dict[str, Any]) -> None:
    """PATCH refuses an unknown status, a missing one or extra fields with 422."""
    [task] = get(client, "/api/tasks", bookingId="bk-soon")
    assert client.patch(f"/api/tasks/{task['id']}", json=body).status_code == 422


def test_patch_unknown_task_is_404(client: TestClient) -> None:
    """PATCH on a task that does not exist answers 404."""
    assert client.patch("/api/tasks/nope", json={"status": "done"}).status_code == 404


def test_limit_and_offset(client: TestClient) -> None:
    """limit and offset page through a list; out-of-range values are 422."""
    ids = [lead["id"] for lead in get(client, "/api/leads")]
    assert [lead["id"] for lead in get(client, "/api/leads", limit=1, offset=1)] == ids[1:2]
    assert get(client, "/api/leads", offset=3) == []
    assert len(get(client, "/api/leads", limit=1000)) == 3
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        assert client.get("/api/leads", params=params).status_code == 422
        assert client.get("/api/tasks", params=params).status_code == 422


def test_openapi_documents_camel_case_models(client: TestClient) -> None:
    """The OpenAPI schema names the response models with their camelCase fields."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "firstName" in schemas["Contact"]["properties"]
    assert "lastActivityDate" in schemas["Lead"]["properties"]
    assert "dueDate" in schemas["Task"]["properties"]
