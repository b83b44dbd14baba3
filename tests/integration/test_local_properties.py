"""Mapped properties in the local CRM: policies, the read API and the dashboard's lead page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.api.app import create_app
from adapter.services import Services, build_services
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, WEBHOOK_SECRET, seed_booking
from tests.integration.test_dashboard import log_in

MAPPING = Path(__file__).resolve().parents[1] / "samples" / "mapping-properties.yaml"
HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[TestClient]:
    """The real app on a SQLite file (and on PostgreSQL), under a mapping with a property
    of every policy."""
    overrides: dict[str, Any] = {"mappings_path": MAPPING}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    services: Services = build_services(make_settings(**overrides))
    try:
        with TestClient(
            create_app(services=services, embedded_workers=1), base_url="https://testserver"
        ) as client:
            yield client
    finally:
        services.close()


def book(client: TestClient, n: int, answers: dict[str, Any], **fields: Any) -> None:
    body = seed_booking(bookingId=f"bk-{n}", updatedAt=f"2026-01-0{n}T00:00:00Z", **fields)
    response = client.post(
        "/api/bookings/incoming", json={**body, "answers": answers}, headers=HOOK
    )
    assert response.status_code == 200, response.text


def contact(client: TestClient) -> dict[str, Any]:
    [found] = client.get("/api/contacts", headers=ADMIN).json()
    return found  # type: ignore[no-any-return]


def test_every_policy_in_the_local_crm(app: TestClient) -> None:
    """always overwrites, if_empty keeps, append unions and forward_only never moves back."""
    first = {"role": "CTO", "status": "NEW", "interests": ["crm"], "stage": "opportunity"}
    book(app, 1, first)
    assert contact(app)["properties"] == {
        "hs_lead_status": "NEW",
        "interests": "crm",
        "jobtitle": "CTO",
        "lifecyclestage": "opportunity",
    }
    second = {"role": "CEO", "status": "OPEN", "interests": ["ai", "crm"], "stage": "lead"}
    book(app, 2, second)
    assert contact(app)["properties"] == {
        "hs_lead_status": "NEW",
        "interests": "crm;ai",
        "jobtitle": "CEO",
        "lifecyclestage": "opportunity",
    }
    book(app, 3, {**second, "stage": "customer"})
    assert contact(app)["properties"]["lifecyclestage"] == "customer"


def test_an_older_snapshot_does_not_undo_an_always_property(app: TestClient) -> None:
    """An always property keeps the newest snapshot's value whatever order bookings land in."""
    book(app, 2, {"role": "CEO"})
    book(app, 1, {"role": "CTO"})
    assert contact(app)["properties"]["jobtitle"] == "CEO"


def test_lead_properties_in_the_read_api_and_on_the_lead_page(app: TestClient) -> None:
    """A lead's typed properties show in GET /api/leads/{id} and on the dashboard's lead page."""
    body = seed_booking(utm={"campaign": "spring-27"}, answers={"budget": 25000})
    response = app.post("/api/bookings/incoming", json=body, headers=HOOK)
    assert response.status_code == 200, response.text
    lead_id = response.json()["lead"]["id"]
    lead = app.get(f"/api/leads/{lead_id}", headers=ADMIN).json()
    assert lead["properties"] == {"budget": 25000, "utm_campaign": "spring-27"}
    assert log_in(app).status_code == 303
    page = app.get(f"/ui/leads/{lead_id}")
    assert page.status_code == 200
    assert "<code>utm_campaign</code></dt><dd>spring-27</dd>" in page.text


def test_a_booking_without_extensions_keeps_the_seed_shapes(app: TestClient) -> None:
    """Records with no mapped property answer exactly the contract's §6 keys."""
    response = app.post("/api/bookings/incoming", json=seed_booking(), headers=HOOK)
    assert response.status_code == 200, response.text
    assert "properties" not in contact(app)
    [lead] = app.get("/api/leads", headers=ADMIN).json()
    assert "properties" not in lead


def test_a_removed_tasks_properties_go_with_it(tmp_path: Path) -> None:
    """A task the plan no longer names is deleted with its mapped properties."""
    from sqlalchemy import select

    from adapter import db
    from adapter.backends.local import properties, write_plan
    from adapter.plan import PlannedProperty
    from tests.unit.test_local_backend import make_plan

    engine = db.make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    db.upgrade(engine)
    try:
        plan = make_plan(company="Acme")
        typed = {"hs_task_type": PlannedProperty(value="CALL")}
        tasks = tuple(task.model_copy(update={"properties": typed}) for task in plan.tasks)
        with engine.begin() as conn:
            write_plan(conn, plan.model_copy(update={"tasks": tasks}))
        with engine.connect() as conn:
            held = conn.execute(select(properties.c.record_type)).scalars().all()
        assert held == ["task"] * len(tasks)
        assert tasks
        with engine.begin() as conn:
            write_plan(conn, plan.model_copy(update={"tasks": ()}))
        with engine.connect() as conn:
            assert conn.execute(select(properties)).all() == []
    finally:
        engine.dispose()
