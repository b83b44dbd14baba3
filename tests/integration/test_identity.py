"""Contract §4 over real HTTP: no duplicate contact, company, lead, meeting or task."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.services import Services
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, LiveServer, seed_booking

URL = "/api/bookings/incoming"
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}


def crm(live: LiveServer, admin: dict[str, str], path: str, **params: Any) -> Any:
    response = httpx.get(live.url + path, params=params, headers=admin, timeout=10)
    response.raise_for_status()
    return response.json()


def test_same_delivery_twenty_times_concurrently(
    live: LiveServer, services: Services, admin: dict[str, str]
) -> None:
    """Twenty concurrent copies store one event and make one of each record."""
    body = seed_booking(company="Acme AB")
    with (
        httpx.Client(base_url=live.url, headers=SECRET, timeout=30) as http,
        ThreadPoolExecutor(20) as pool,
    ):
        answers = list(pool.map(lambda _: http.post(URL, json=body), range(20)))
    assert {a.status_code for a in answers} <= {200, 202}
    assert len({a.json()["eventId"] for a in answers}) == 1
    assert sum(services.store.counts().values()) == 1
    assert len(crm(live, admin, "/api/contacts")) == 1
    assert len(crm(live, admin, "/api/companies")) == 1
    assert len(crm(live, admin, "/api/leads")) == 1
    assert len(crm(live, admin, "/api/activities")) == 1
    assert len(crm(live, admin, "/api/tasks")) == 2


def test_two_people_of_one_company_share_company_and_lead(
    live: LiveServer, admin: dict[str, str]
) -> None:
    """Company and lead are per company; contacts per email; meetings per booking."""
    with httpx.Client(base_url=live.url, headers=SECRET, timeout=30) as http:
        a = http.post(URL, json=seed_booking(bookingId="b1", email="a@acme.se", company="Acme AB"))
        b = http.post(
            URL,
            json=seed_booking(
                bookingId="b2", name="Other Person", email="B@Acme.se ", company="  acme   ab "
            ),
        )
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["company"]["id"] == b.json()["company"]["id"]
    assert a.json()["lead"]["id"] == b.json()["lead"]["id"]
    # Descriptive fields follow the newest snapshot: the second booking's spelling.
    assert [c["name"] for c in crm(live, admin, "/api/companies")] == ["acme ab"]
    assert len(crm(live, admin, "/api/contacts")) == 2
    (lead,) = crm(live, admin, "/api/leads")
    assert lead["title"] == "workshop - acme ab"
    assert len(crm(live, admin, f"/api/leads/{lead['id']}/activities", type="MEETING")) == 2
    assert len(crm(live, admin, "/api/tasks")) == 4


def test_one_person_booking_twice_updates_the_lead(live: LiveServer, admin: dict[str, str]) -> None:
    """A repeat booking of one event type keeps one lead and adds a meeting."""
    with httpx.Client(base_url=live.url, headers=SECRET, timeout=30) as http:
        first = http.post(URL, json=seed_booking(bookingId="r1", createdAt="2026-11-01T09:00:00Z"))
        second = http.post(
            URL,
            json=seed_booking(
                bookingId="r2",
                email=" TEST@example.com",
                scheduledDate="2027-03-15T10:00:00Z",
                createdAt="2026-11-20T09:00:00Z",
            ),
        )
        consult = http.post(
            URL, json=seed_booking(bookingId="r3", eventType="30min-consultation", duration=30)
        )
    assert first.json()["lead"]["id"] == second.json()["lead"]["id"]
    assert consult.json()["lead"]["id"] != first.json()["lead"]["id"]
    assert (
        first.json()["contact"]["id"]
        == second.json()["contact"]["id"]
        == consult.json()["contact"]["id"]
    )
    leads = {lead["id"]: lead for lead in crm(live, admin, "/api/leads")}
    assert len(leads) == 2
    assert leads[first.json()["lead"]["id"]]["lastActivityDate"] == "2026-11-20T09:00:00.000Z"
    assert len(crm(live, admin, "/api/contacts")) == 1
    assert len(crm(live, admin, "/api/activities")) == 3


def test_unknown_event_type_is_quarantined_then_replayed_after_a_mapping_fix(
    make_settings: Any, tmp_path: Path, admin: dict[str, str]
) -> None:
    """An authentic booking the mapping cannot place is kept, shown, and replayable."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(DEFAULT_MAPPING.read_text())
    services = build_services(make_settings(mappings_path=mapping))
    try:
        with (
            LiveServer(create_app(services=services, embedded_workers=1)) as live,
            httpx.Client(base_url=live.url, timeout=30) as http,
        ):
            body = seed_booking(bookingId="q1", eventType="masterclass")
            answer = http.post(URL, json=body, headers=SECRET)
            assert answer.status_code == 202
            assert answer.json()["status"] == "quarantined"
            event_id = answer.json()["eventId"]
            listed = http.get("/admin/outbox", params={"state": "quarantined"}, headers=admin)
            (event,) = listed.json()["events"]
            assert event["eventId"] == event_id
            assert "masterclass" in event["lastError"]

            broken = mapping.read_text() + "\n  oops: [\n"
            mapping.write_text(broken)
            refused = http.post("/admin/mappings/reload", headers=admin)
            assert refused.status_code == 422
            assert "mapping.yaml" in refused.json()["detail"]

            text = DEFAULT_MAPPING.read_text()
            mapping.write_text(text.replace("event_types:", _MASTERCLASS, 1))
            reloaded = http.post("/admin/mappings/reload", headers=admin)
            assert reloaded.status_code == 200, reloaded.text
            assert "masterclass" in reloaded.json()["eventTypes"]

            replayed = http.post(f"/admin/outbox/{event_id}/replay", headers=admin)
            assert replayed.json()["status"] in {"queued", "synced"}
            again = http.post(URL, json=body, headers=SECRET)
            assert again.status_code == 200, again.text
            assert again.json()["lead"]["title"] == "masterclass - Test Person"
            assert (
                http.post(f"/admin/outbox/{event_id}/replay", headers=admin).json()["status"]
                == "synced"
            )
    finally:
        services.close()


_MASTERCLASS = """event_types:
  masterclass:
    lead:
      estimated_value: 25000
    tasks: []
"""


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_endpoints(live: LiveServer, path: str) -> None:
    """The process is up and ready (database, mapping, backend)."""
    response = httpx.get(live.url + path, timeout=10)
    assert response.status_code == 200, response.text
