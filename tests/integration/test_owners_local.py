"""Owners in the local reference CRM: through the webhook to ownerEmail and ?owner=."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, DEFAULT_MAPPING, WEBHOOK_SECRET, seed_booking
from tests.integration.test_dashboard import csrf_of, log_in

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}
# Workshops belong to Zed; everything else is shared by Ada and Bo, except for
# contacts that already have an owner, who keep theirs.
OWNERS = (
    "  owner:\n    round_robin: [ada@example.com, bo@example.com]\n    keep_existing: true\n",
    "    owner:\n      email: Zed@Example.com\n",
)


@pytest.fixture
def client(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[TestClient]:
    """The app on real SQLite with the owners mapping and one embedded worker (over https,
    so the dashboard's Secure session cookie is sent)."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    text = text.replace("\ndefaults:\n", f"\ndefaults:\n{OWNERS[0]}", 1)
    text = text.replace("\n  workshop:\n", f"\n  workshop:\n{OWNERS[1]}", 1)
    mapping = tmp_path / "owners.yaml"
    mapping.write_text(text, encoding="utf-8")
    services = build_services(make_settings(mappings_path=mapping))
    try:
        app = create_app(services=services, embedded_workers=1)
        with TestClient(app, base_url="https://testserver") as test_client:
            yield test_client
    finally:
        services.close()


def book(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/bookings/incoming", json=seed_booking(**fields), headers=SECRET)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def get(client: TestClient, path: str) -> list[dict[str, Any]]:
    response = client.get(path, headers=ADMIN)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def test_a_fixed_owner_owns_every_record_and_filters_find_them(client: TestClient) -> None:
    """A workshop's contact, lead, meeting and tasks are Zed's; ?owner= lists just those."""
    synced = book(client, bookingId="w-1", email="kim@example.com")

    [contact] = get(client, "/api/contacts?email=kim@example.com")
    assert contact["ownerEmail"] == "zed@example.com"
    [lead] = get(client, "/api/leads?owner=ZED@example.com")
    assert (lead["id"], lead["ownerEmail"]) == (synced["lead"]["id"], "zed@example.com")
    [meeting] = get(client, "/api/activities?owner=zed@example.com")
    assert meeting["metadata"]["bookingId"] == "w-1"
    tasks = get(client, "/api/tasks?owner=zed@example.com")
    assert sorted(task["id"] for task in tasks) == sorted(t["id"] for t in synced["tasks"])
    assert all(task["ownerEmail"] == "zed@example.com" for task in tasks)
    for path in ("/api/leads", "/api/activities", "/api/tasks"):
        assert get(client, f"{path}?owner=ada@example.com") == []


def test_keep_existing_gives_a_known_contacts_owner_the_new_records(client: TestClient) -> None:
    """An owned contact's new lead, meeting and tasks go to its owner, not the rotation."""
    book(client, bookingId="w-1", email="kim@example.com")
    owned = book(client, bookingId="c-1", eventType="30min-consultation", email="KIM@example.com")
    fresh = book(client, bookingId="c-2", eventType="30min-consultation", email="new@example.com")

    [lead] = get(client, "/api/leads?owner=zed@example.com&limit=1&offset=1")
    assert lead["id"] == owned["lead"]["id"]
    assert [t["bookingId"] for t in get(client, "/api/tasks?owner=zed@example.com")].count(
        "c-1"
    ) == 1
    [contact] = get(client, "/api/contacts?email=new@example.com")
    assert contact["ownerEmail"] in ("ada@example.com", "bo@example.com")
    [rotated_lead] = get(client, f"/api/leads?owner={contact['ownerEmail']}")
    assert rotated_lead["id"] == fresh["lead"]["id"]


def test_a_malformed_owner_filter_is_a_400_naming_it(client: TestClient) -> None:
    """?owner= longer than an email can be is refused with a 400 naming the parameter."""
    response = client.get("/api/tasks", params={"owner": "x" * 400}, headers=ADMIN)
    assert response.status_code == 400
    assert "owner" in response.text


def test_the_dashboard_shows_one_owners_action_items(client: TestClient) -> None:
    """/ui?owner= lists only that owner's open tasks, picked from a labelled select, and
    marking one done comes back to the same filtered list."""
    book(client, bookingId="w-1", email="kim@example.com")
    book(client, bookingId="c-1", eventType="30min-consultation", email="new@example.com")
    assert log_in(client).status_code == 303

    everyone = client.get("/ui")
    assert everyone.status_code == 200
    assert '<label for="owner">Owner</label>' in everyone.text
    assert '<option value="zed@example.com">' in everyone.text
    assert everyone.text.count('class="task') == 3

    mine = client.get("/ui", params={"owner": "Zed@Example.com"})
    assert mine.status_code == 200
    assert mine.text.count('class="task') == 2
    assert "Send consultation summary" not in mine.text
    assert '<option value="zed@example.com" selected>' in mine.text

    task_id = get(client, "/api/tasks?owner=zed@example.com")[0]["id"]
    done = client.post(
        f"/ui/tasks/{task_id}/done",
        data={"csrf": csrf_of(mine.text), "next": "/ui?owner=zed%40example.com#tasks"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/ui?owner=zed%40example.com")
    assert client.get("/ui?owner=zed@example.com").text.count('class="task') == 1
