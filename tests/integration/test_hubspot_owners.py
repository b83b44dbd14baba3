"""Owners in HubSpot: ``hubspot_owner_id`` from the mapping's owner emails, against the fake."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Engine

from adapter.backends.hubspot import HubSpotBackend, RollingWindow, build_api, run_setup
from adapter.booking import parse_booking
from adapter.ingest import accept_booking
from adapter.mapping import MappingConfig, load_mapping_text
from adapter.worker import Worker
from outbox.store import OutboxStore
from tests.conftest import DEFAULT_MAPPING, seed_booking
from tests.fakes.hubspot import FakeHubSpot

ROTATION = ("ada@example.com", "bo@example.com", "cy@example.com")
OWNER = "hubspot_owner_id"


def mapping_with(owner_yaml: str) -> MappingConfig:
    """The default mapping with ``owner_yaml`` under ``defaults``."""
    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    return load_mapping_text(text.replace("\ndefaults:\n", f"\ndefaults:\n{owner_yaml}", 1))


class Portal:
    """The fake portal, a backend and a worker on a real SQLite file, one mapping at a time."""

    def __init__(self, fake: FakeHubSpot, engine: Engine, mapping: MappingConfig) -> None:
        budget = RollingWindow(10_000, 10.0, sleep=lambda _s: None)
        self.fake = fake
        self.mapping = mapping
        self.api = build_api(
            fake.token or "",
            fake.url,
            (100, 10.0),
            timeout=5.0,
            max_attempts=2,
            sleep=lambda _s: None,
            budget=budget,
            search_budget=budget,
        )
        # The portal's own schema; the owners are this test's business (``hubspot setup``
        # would refuse an owner the portal lacks before a booking could meet it).
        assert run_setup(self.api, load_mapping_text(DEFAULT_MAPPING.read_text())).ok
        self.backend = HubSpotBackend(
            self.api,
            engine,
            lambda: self.mapping.defaults.hubspot,
            mapping_in_use=lambda: self.mapping,
        )
        self.store = OutboxStore(engine)
        self.worker = Worker(self.store, self.backend, lambda: self.mapping)

    def book(self, **fields: Any) -> str:
        """Accept one booking as the webhook does and sync it; returns the event's state."""
        body = seed_booking(**fields)
        event, _ = accept_booking(self.store, parse_booking(body), body, self.mapping)
        self.worker.drain()
        stored = self.store.get(event.id)
        assert stored is not None
        return f"{stored.state}: {stored.last_error}" if stored.last_error else stored.state

    def owners_of(self, booking_id: str) -> dict[str, Any]:
        """The owner id on the booking's meeting, its tasks, its deal and its contact."""
        [meeting] = self.fake.find("meetings", bookme_booking_id=booking_id)
        tasks = [
            t
            for t in self.fake.objects("tasks")
            if t["properties"]["bookme_task_key"].startswith(f"{booking_id}|")
        ]
        deal_ids = dict(self.fake.associations("meetings", meeting["id"], "deals"))
        contact_ids = dict(self.fake.associations("meetings", meeting["id"], "contacts"))
        [deal] = [self.fake.get("deals", i) for i in deal_ids]
        [contact] = [self.fake.get("contacts", i) for i in contact_ids]
        assert deal is not None
        assert contact is not None
        return {
            "meeting": meeting["properties"].get(OWNER),
            "tasks": {t["properties"].get(OWNER) for t in tasks},
            "deal": deal["properties"].get(OWNER),
            "contact": contact["properties"].get(OWNER),
        }


def test_a_fixed_owner_is_on_the_contact_deal_meeting_and_every_task(
    fake: FakeHubSpot, engine: Engine
) -> None:
    """owner.email resolves through the Owners API and lands on all four kinds of record."""
    zed = fake.add_owner("zed@example.com", "Zed", "Lund")
    portal = Portal(fake, engine, mapping_with("  owner:\n    email: Zed@example.com\n"))

    assert portal.book(bookingId="w-1") == "synced"

    assert portal.owners_of("w-1") == {
        "meeting": zed,
        "tasks": {zed},
        "deal": zed,
        "contact": zed,
    }
    assert len(portal.fake.objects("tasks")) == 2


def test_keep_existing_follows_a_contact_owned_outside_the_rotation(
    fake: FakeHubSpot, engine: Engine
) -> None:
    """A pre-owned contact keeps its owner, who also gets the new deal, meeting and tasks."""
    for email in ROTATION:
        fake.add_owner(email)
    outsider = fake.add_owner("outsider@example.com")
    rotation = ", ".join(ROTATION)
    portal = Portal(
        fake,
        engine,
        mapping_with(f"  owner:\n    round_robin: [{rotation}]\n    keep_existing: true\n"),
    )
    portal.api.upsert(
        "contacts", "email", [("kim@example.com", {"email": "kim@example.com", OWNER: outsider})]
    )

    assert portal.book(bookingId="k-1", email="kim@example.com") == "synced"
    assert portal.book(bookingId="n-1", email="new@example.com") == "synced"

    assert portal.owners_of("k-1") == {
        "meeting": outsider,
        "tasks": {outsider},
        "deal": outsider,
        "contact": outsider,
    }
    fresh = portal.owners_of("n-1")
    rotation_ids = {
        o["id"]
        for o in httpx.get(
            f"{fake.url}/crm/v3/owners", headers={"Authorization": f"Bearer {fake.token}"}
        ).json()["results"]
        if o["email"] in ROTATION
    }
    assert fresh["meeting"] in rotation_ids
    assert fresh == {
        "meeting": fresh["meeting"],
        "tasks": {fresh["meeting"]},
        "deal": fresh["meeting"],
        "contact": fresh["meeting"],
    }


def test_a_fixed_owner_does_not_take_an_owned_contact(fake: FakeHubSpot, engine: Engine) -> None:
    """Without keep_existing the deal, meeting and tasks are the mapping's owner's, the
    contact stays its salesperson's."""
    zed = fake.add_owner("zed@example.com")
    sales = fake.add_owner("sales@example.com")
    portal = Portal(fake, engine, mapping_with("  owner:\n    email: zed@example.com\n"))
    portal.api.upsert(
        "contacts", "email", [("test@example.com", {"email": "test@example.com", OWNER: sales})]
    )

    assert portal.book(bookingId="w-1") == "synced"

    assert portal.owners_of("w-1") == {
        "meeting": zed,
        "tasks": {zed},
        "deal": zed,
        "contact": sales,
    }


def test_an_unknown_owner_dead_letters_naming_the_email_and_replays_after_the_fix(
    fake: FakeHubSpot, engine: Engine
) -> None:
    """An owner email the portal lacks dead-letters the event with it named; a replay after
    the mapping is fixed (reloaded) syncs it."""
    fake.add_owner("zed@example.com")
    portal = Portal(fake, engine, mapping_with("  owner:\n    email: zed@exampel.com\n"))

    state = portal.book(bookingId="w-1")

    assert state.startswith("dead: ")
    assert "zed@exampel.com is not an active owner" in state
    assert fake.objects("meetings") == []
    portal.mapping = mapping_with("  owner:\n    email: zed@example.com\n")
    [dead] = portal.store.list(state="dead")
    portal.store.replay([dead.id], actor="test")
    portal.worker.drain()
    replayed = portal.store.get(dead.id)
    assert replayed is not None
    assert replayed.state == "synced"


def test_the_fake_pages_owners_and_refuses_an_unknown_owner_id(fake: FakeHubSpot) -> None:
    """GET /crm/v3/owners pages and filters by email; a write with an unknown owner id is a 400."""
    ids = [fake.add_owner(f"o{n}@example.com") for n in range(3)]
    fake.add_owner("gone@example.com", archived=True)
    auth = {"Authorization": f"Bearer {fake.token}"}
    first = httpx.get(f"{fake.url}/crm/v3/owners", params={"limit": 2}, headers=auth).json()
    after = first["paging"]["next"]["after"]
    rest = httpx.get(
        f"{fake.url}/crm/v3/owners", params={"limit": 2, "after": after}, headers=auth
    ).json()
    assert [o["id"] for o in first["results"] + rest["results"]] == ids
    assert "paging" not in rest
    one = httpx.get(
        f"{fake.url}/crm/v3/owners", params={"email": "O1@example.com"}, headers=auth
    ).json()
    assert [(o["id"], o["email"], o["archived"]) for o in one["results"]] == [
        (ids[1], "o1@example.com", False)
    ]
    assert {"firstName", "lastName", "userId"} <= set(one["results"][0])

    refused = httpx.post(
        f"{fake.url}/crm/v3/objects/contacts",
        json={"properties": {"email": "x@example.com", OWNER: "424242"}},
        headers=auth,
    )
    assert refused.status_code == 400
    assert "INVALID_OWNER_ID" in refused.text


def test_an_owner_added_in_hubspot_is_found_once_the_mapping_is_reloaded(
    fake: FakeHubSpot, engine: Engine
) -> None:
    """Owners are cached per process: a user added in HubSpot is found after a reload."""
    portal = Portal(fake, engine, mapping_with("  owner:\n    email: new@example.com\n"))
    assert portal.book(bookingId="w-1").startswith("dead: ")
    new = fake.add_owner("new@example.com")
    [dead] = portal.store.list(state="dead")

    portal.store.replay([dead.id], actor="test")
    portal.worker.drain()
    again = portal.store.get(dead.id)
    assert again is not None
    assert again.state == "dead"  # the cache is not listed again on every booking
    assert fake.calls["GET /crm/v3/owners"] == 1

    portal.mapping = mapping_with("  owner:\n    email: new@example.com\n")  # a reload
    portal.store.replay([dead.id], actor="test")
    portal.worker.drain()
    replayed = portal.store.get(dead.id)
    assert replayed is not None
    assert replayed.state == "synced"
    assert portal.owners_of("w-1")["meeting"] == new
