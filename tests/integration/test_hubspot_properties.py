"""Mapped properties on HubSpot (the strict fake): each write policy, and refused values."""

# The backend tests' fixtures are imported by name, so pytest's parameters shadow them.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapter.backends.hubspot import HubSpotBackend, run_setup
from adapter.errors import CrmValidationError
from adapter.mapping import load_mapping, load_mapping_text
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, WEBHOOK_SECRET, seed_booking
from tests.fakes.hubspot import FakeHubSpot
from tests.integration.test_hubspot_backend import (  # noqa: F401 (the hs fixture)
    Harness,
    hs,
)

MAPPING = Path(__file__).resolve().parents[1] / "samples" / "mapping-properties.yaml"


def define(fake: FakeHubSpot) -> None:
    """The portal's own properties the sample mapping writes."""
    fake.define_property("contacts", "jobtitle")
    fake.define_property(
        "contacts",
        "hs_lead_status",
        type="enumeration",
        field_type="select",
        options=["NEW", "OPEN", "IN_PROGRESS"],
    )
    fake.define_property(
        "contacts",
        "interests",
        type="enumeration",
        field_type="checkbox",
        options=["crm", "ai", "seo"],
    )
    fake.define_property("deals", "budget", type="number", field_type="number")
    fake.define_property("deals", "utm_campaign")


@pytest.fixture
def portal(hs: Harness) -> Harness:
    """The harness under the sample mapping with a property of every policy."""
    define(hs.fake)
    hs.mapping = load_mapping(MAPPING)
    return hs


def salesperson_sets(fake: FakeHubSpot, object_type: str, object_id: str, **props: str) -> None:
    """A salesperson's edit in HubSpot, made through HubSpot's own API."""
    response = httpx.patch(
        f"{fake.url}/crm/v3/objects/{object_type}/{object_id}",
        json={"properties": props},
        headers={"Authorization": f"Bearer {fake.token}"},
    )
    assert response.status_code == 200, response.text


def book(hs: Harness, n: int, **answers: Any) -> None:
    _, error = hs.sync(bookingId=f"bk-{n}", updatedAt=f"2027-01-0{n}T00:00:00Z", answers=answers)
    assert error is None, error


def contact(hs: Harness) -> dict[str, Any]:
    [found] = hs.fake.objects("contacts")
    return found["properties"]  # type: ignore[no-any-return]


def test_if_empty_keeps_a_salespersons_edit_between_two_events(portal: Harness) -> None:
    """Event 1 sets hs_lead_status; a salesperson changes it; event 2 leaves their value."""
    book(portal, 1, status="NEW", role="CTO")
    assert contact(portal)["hs_lead_status"] == "NEW"
    [found] = portal.fake.objects("contacts")
    salesperson_sets(portal.fake, "contacts", found["id"], hs_lead_status="IN_PROGRESS")
    book(portal, 2, status="OPEN", role="CEO")
    props = contact(portal)
    assert props["hs_lead_status"] == "IN_PROGRESS"
    assert props["jobtitle"] == "CEO"  # always: the newest booking's answer


def test_append_unions_with_options_added_by_hand(portal: Harness) -> None:
    """append adds the booking's options to those HubSpot holds, a salesperson's included."""
    book(portal, 1, interests=["crm"])
    [found] = portal.fake.objects("contacts")
    salesperson_sets(portal.fake, "contacts", found["id"], interests="crm;seo")
    book(portal, 2, interests=["ai", "crm"])
    assert contact(portal)["interests"] == "crm;seo;ai"


def test_lifecyclestage_only_moves_forward(portal: Harness) -> None:
    """forward_only never moves a customer back to lead, and still moves it on."""
    book(portal, 1, stage="opportunity")
    [found] = portal.fake.objects("contacts")
    salesperson_sets(portal.fake, "contacts", found["id"], lifecyclestage="customer")
    book(portal, 2, stage="lead")
    assert contact(portal)["lifecyclestage"] == "customer"
    book(portal, 3, stage="evangelist")
    assert contact(portal)["lifecyclestage"] == "evangelist"


def test_typed_deal_properties_and_one_read_per_object_type(portal: Harness) -> None:
    """A number answer lands in a number property; a policy's read is one batch per type."""
    _, error = portal.sync(answers={"budget": 25000}, utm={"campaign": "spring-27"})
    assert error is None, error
    [deal] = portal.fake.objects("deals")
    assert deal["properties"]["budget"] == "25000"
    assert deal["properties"]["utm_campaign"] == "spring-27"
    assert portal.api.calls.get("batch read contacts", 0) == 0  # nothing held yet
    portal.api.calls.clear()
    book(portal, 2, status="NEW", interests=["ai"], stage="lead")
    assert portal.api.calls["batch read contacts"] == 1
    assert portal.api.calls.get("batch read deals", 0) == 0  # deal properties are all 'always'


def test_a_value_hubspot_refuses_is_a_permanent_error_naming_it(portal: Harness) -> None:
    """An answer outside an enum's options fails with HubSpot's message naming it and the value."""
    _, error = portal.sync(answers={"status": "MAYBE"})
    assert isinstance(error, CrmValidationError)
    assert "hs_lead_status" in str(error)
    assert "MAYBE was not one of the allowed options" in str(error)


def test_refused_value_dead_letters_then_replays_after_the_mapping_is_fixed(
    fake: FakeHubSpot, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Through the webhook: the event goes dead with HubSpot's message, and after a mapping
    fix and reload, its replay syncs."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    define(fake)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING.read_text())
    settings = make_settings(
        crm_backend="hubspot",
        hubspot_access_token=fake.token,
        hubspot_base_url=fake.url,
        mappings_path=mapping,
    )
    services = build_services(settings)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        assert isinstance(services.backend, HubSpotBackend)
        assert run_setup(services.backend.api, load_mapping(mapping)).ok
        with TestClient(create_app(services=services, embedded_workers=1)) as client:
            body = seed_booking(answers={"status": "Warm lead"})
            sent = client.post(
                "/api/bookings/incoming", json=body, headers={"X-Webhook-Secret": WEBHOOK_SECRET}
            )
            event_id = sent.json()["eventId"]
            status = _wait(client, event_id, admin, "dead")
            assert "hs_lead_status" in status["lastError"]
            assert "Warm lead was not one of the allowed options" in status["lastError"]

            fixed = MAPPING.read_text().replace(
                'value: "{answers.status}", policy: if_empty', "value: OPEN, policy: if_empty"
            )
            load_mapping_text(fixed, "fixed.yaml")  # the fix itself is a valid mapping
            mapping.write_text(fixed)
            assert client.post("/admin/mappings/reload", headers=admin).status_code == 200
            replayed = client.post(f"/admin/outbox/{event_id}/replay", headers=admin)
            assert replayed.status_code == 200, replayed.text
            _wait(client, event_id, admin, "synced")
    finally:
        services.close()
    [found] = fake.objects("contacts")
    assert found["properties"]["hs_lead_status"] == "OPEN"


def _wait(client: TestClient, event_id: str, admin: dict[str, str], state: str) -> Any:
    import time

    deadline = time.monotonic() + 20
    while True:
        status = client.get(f"/api/bookings/events/{event_id}", headers=admin).json()
        if status["status"] == state or time.monotonic() > deadline:
            assert status["status"] == state, status
            return status
        time.sleep(0.05)


def test_meeting_and_task_properties_with_a_task_edit_kept(hs: Harness) -> None:
    """Meeting and task properties land; a task's if_empty keeps a salesperson's change."""
    text = MAPPING.read_text().replace(
        "  contact:\n    tags: [bookme]\n",
        "  task:\n    properties:\n      hs_task_type: {value: CALL, policy: if_empty}\n"
        "  contact:\n    tags: [bookme]\n",
        1,
    )
    text = text.replace(
        "  meeting:\n    subject:",
        '  meeting:\n    properties:\n      hs_internal_meeting_notes: "Budget {answers.budget}"\n'
        "    subject:",
        1,
    )
    define(hs.fake)
    hs.mapping = load_mapping_text(text, "tasks.yaml")
    _, error = hs.sync(answers={"budget": 25000})
    assert error is None, error
    [meeting] = hs.fake.objects("meetings")
    assert meeting["properties"]["hs_internal_meeting_notes"] == "Budget 25000"
    tasks = hs.fake.objects("tasks")
    assert {task["properties"]["hs_task_type"] for task in tasks} == {"CALL"}
    salesperson_sets(hs.fake, "tasks", tasks[0]["id"], hs_task_type="EMAIL")
    _, error = hs.sync(answers={"budget": 30000}, updatedAt="2027-01-02T00:00:00Z")
    assert error is None, error
    kept = hs.fake.get("tasks", tasks[0]["id"])
    assert kept is not None
    assert kept["properties"]["hs_task_type"] == "EMAIL"
    [meeting] = hs.fake.objects("meetings")
    assert meeting["properties"]["hs_internal_meeting_notes"] == "Budget 30000"


def test_append_unions_bookings_of_one_contact_in_one_batch(portal: Harness) -> None:
    """Two bookings of one contact written in one batch both add their options."""
    from adapter.backends.base import SyncJob
    from adapter.booking import parse_booking
    from adapter.mapping import plan_booking
    from tests.integration.test_hubspot_backend import NOW

    jobs = []
    for n, interests in ((1, ["crm"]), (2, ["ai"])):
        body = seed_booking(
            bookingId=f"bk-{n}",
            updatedAt=f"2027-01-0{n}T00:00:00Z",
            answers={"interests": interests},
        )
        plan = plan_booking(parse_booking(body), portal.mapping, now=NOW)
        jobs.append(SyncJob(f"evt-{n}", plan.booking_id, "lease", plan))
    assert portal.backend.apply(jobs, lambda _conn, _job, _result: None) == {}
    assert contact(portal)["interests"] == "crm;ai"
