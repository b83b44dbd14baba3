"""Insights' duplicate check on HubSpot: read back through the API (the strict fake),
under the budget, at most once an hour, its result and time stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from adapter.insights.duplicates import check_hubspot, stored
from tests.integration.test_hubspot_backend import Harness, hs  # noqa: F401 - the fixture

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_hubspot_duplicates_are_read_back_once_an_hour(hs: Harness, engine: Engine) -> None:  # noqa: F811
    """Two bookings of one company are clean; a company created by hand under the same
    name (other case and spacing) is the one duplicate; a second check within the hour
    makes no call; one after the hour reads HubSpot again."""
    for n, company in enumerate(("Acme AB", "Acme AB")):
        _, error = hs.sync(bookingId=f"bk-{n}", email=f"p{n}@example.com", company=company)
        assert error is None
    assert stored(engine, "hubspot").checked_at is None  # never checked yet

    assert check_hubspot(engine, hs.api, now=T0) is True
    clean = stored(engine, "hubspot")
    assert (clean.count, clean.checked_at) == (0, T0)
    assert clean.target.met is True

    injected = hs.api.create("companies", {"name": "  ACME   ab "})
    assert check_hubspot(engine, hs.api, now=T0 + timedelta(minutes=59)) is False
    assert stored(engine, "hubspot").count == 0  # the hour's result stands
    before = sum(hs.api.calls.values())
    assert check_hubspot(engine, hs.api, now=T0 + timedelta(minutes=61)) is True
    assert hs.api.calls["list companies"] >= 2  # through HubSpotApi, under the budget
    assert sum(hs.api.calls.values()) > before
    found = stored(engine, "hubspot")
    assert found.count == 1
    assert found.per_rule["companies"] == 1
    (group,) = found.groups
    assert group.key == "acme ab"
    assert injected in group.record_ids
    assert found.checked_at == T0 + timedelta(minutes=61)
    assert found.target.met is False


def test_a_failed_hubspot_check_is_recorded_and_waits_the_hour(hs: Harness, engine: Engine) -> None:  # noqa: F811
    """HubSpot failing the read-back leaves the error beside the last good result."""
    hs.fake.fail("GET", "/crm/v3/objects/contacts*", 500, times=None)
    assert check_hubspot(engine, hs.api, now=T0) is True
    failed = stored(engine, "hubspot")
    assert failed.checked_at is None
    assert failed.error is not None
    assert check_hubspot(engine, hs.api, now=T0 + timedelta(minutes=5)) is False


def test_hubspot_follow_ups_read_hubspot_objects(hs: Harness, engine: Engine) -> None:  # noqa: F811
    """Follow-ups on HubSpot count the tasks the backend created (``hubspot_objects``):
    a task row without its HubSpot id (an interrupted create) is missing, and so is one
    found deleted in HubSpot."""
    from sqlalchemy import insert, select, update

    from adapter.backends.hubspot.store import hubspot_objects
    from adapter.insights.compute import Context, follow_ups
    from adapter.insights.report import Filters
    from adapter.insights.tables import bookings

    start = datetime(2027, 2, 15, 10, tzinfo=UTC)
    for n in range(3):
        _, error = hs.sync(bookingId=f"bk-{n}", email=f"p{n}@example.com", eventType="workshop")
        assert error is None
    with engine.begin() as conn:
        conn.execute(
            insert(bookings),
            [
                {
                    "booking_id": f"bk-{n}",
                    "event_type": "workshop",
                    "received_at": T0,
                    "start_at": start,
                    "status": "live",
                    "snapshot_at": T0,
                    "snapshot_seq": n + 1,
                }
                for n in range(3)
            ],
        )
        conn.execute(
            update(hubspot_objects)
            .where(hubspot_objects.c.natural_key == "bk-1|follow-up")
            .values(hubspot_id=None, state="intent")
        )
        deleted = hubspot_objects.c.natural_key == "bk-2|follow-up"
        (task_id,) = conn.execute(select(hubspot_objects.c.hubspot_id).where(deleted)).one()
        conn.execute(
            update(hubspot_objects).where(deleted).values(deleted_id=task_id, deleted_at=T0)
        )
    ctx = Context(
        filters=Filters(T0.date(), T0.date() + timedelta(days=1)),
        now=T0 + timedelta(days=1),
        mapping=hs.mapping,
        backend="hubspot",
    )
    with engine.connect() as conn:
        result = follow_ups(conn, ctx)
    assert (result.bookings, result.complete) == (3, 1)
    assert sorted((m.booking_id, m.missing_keys) for m in result.missing) == [
        ("bk-1", ("follow-up",)),
        ("bk-2", ("follow-up",)),
    ]
