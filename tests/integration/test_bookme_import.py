"""Import by id and backfill through the real outbox, worker and local CRM (BookMe via respx)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, MetaData, select

from adapter.booking import parse_booking
from adapter.bookme import (
    BookMeClient,
    BookMeMalformed,
    BookMeNotConfigured,
    BookMeNotFound,
    BookMeRejected,
    BookMeUnavailable,
    InvalidBookingId,
    import_booking,
)
from adapter.bookme.backfill import Backfill, parse_since
from adapter.bookme.store import BackfillStore, bookme_metadata
from adapter.ingest import accept_booking
from adapter.services import Services, build_services
from adapter.settings import Settings
from tests.conftest import BOOKME, SAMPLES
from tests.conftest import BOOKME_TOKEN as TOKEN


def resource(**overrides: Any) -> dict[str, Any]:
    """BookMe's resource for the consultation sample, with overrides (None drops a field)."""
    base: dict[str, Any] = {
        "id": "bk_9f3a21",
        "eventType": "30min-consultation",
        "name": "Anna Lindqvist",
        "email": "anna.lindqvist@nordkap.se",
        "phone": "+46 70 123 45 67",
        "company": "Nordkap Konsult AB",
        "scheduledStart": "2027-03-04T08:30:00Z",  # the sample's 09:30+01:00
        "duration": 30,
        "meetingUrl": "https://meet.example.com/abc-defg-hij",
        "notes": "Vill prata om AI-strategi för säljteamet.",
        "createdAt": "2026-11-23T14:02:11Z",
        "status": "confirmed",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def crm_rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every local-CRM table, ids and timestamps included."""
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for name, table in meta.tables.items()
            if name.startswith("crm_")
        }


def event_count(services: Services) -> int:
    return sum(services.store.counts().values())


def deliver(services: Services, body: dict[str, Any]) -> None:
    """A webhook delivery, as the route accepts it, synced by a worker."""
    accept_booking(services.store, parse_booking(body), body, services.mappings.current)
    services.new_worker().drain()


@pytest.fixture
def services(bookme_services: Services) -> Services:
    return bookme_services


def test_import_of_a_new_booking_lands_in_the_crm(
    services: Services, bookme: respx.MockRouter
) -> None:
    """A booking only BookMe knows is stored as a new event and synced like a webhook's."""
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    outcome = import_booking(services, "bk_9f3a21")
    assert (outcome.booking_id, outcome.new, outcome.state) == ("bk_9f3a21", True, "queued")
    assert outcome.event == "booking.created"
    services.new_worker().drain()
    event = services.store.get(outcome.event_id)
    assert event is not None
    assert event.state == "synced"
    assert event.result is not None
    assert event.result["lead"]["title"] == "30min-consultation - Nordkap Konsult AB"
    rows = crm_rows(services.engine)
    assert len(rows["crm_contacts"]) == len(rows["crm_activities"]) == 1


def test_import_of_a_booking_that_arrived_changes_nothing(
    services: Services, bookme: respx.MockRouter
) -> None:
    """The webhook's booking imported again stores no event and leaves every CRM row as is."""
    sample = json.loads((SAMPLES / "consultation-with-company.json").read_text())
    deliver(services, sample)
    before, events = crm_rows(services.engine), event_count(services)
    first = services.store.list()[0]
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())

    outcome = import_booking(services, "bk_9f3a21")
    services.new_worker().drain()

    assert (outcome.new, outcome.state, outcome.event_id) == (False, "synced", first.id)
    assert event_count(services) == events
    assert crm_rows(services.engine) == before


def test_import_with_the_same_updated_at_changes_nothing(
    services: Services, bookme: respx.MockRouter
) -> None:
    """A snapshot with the webhook's updatedAt is held already, whatever else differs in form."""
    lifecycle = json.loads((SAMPLES / "lifecycle-sequence.json").read_text())
    for body in lifecycle[:2]:
        deliver(services, body)
    before, events = crm_rows(services.engine), event_count(services)
    rescheduled = lifecycle[1]
    bookme.get("/api/bookings/bk_77c1").respond(
        200,
        json={
            **{k: v for k, v in rescheduled.items() if k not in ("bookingId", "scheduledDate")},
            "id": "bk_77c1",
            "scheduledStart": rescheduled["scheduledDate"],
            "status": "rescheduled",
            "updatedAt": "2026-11-30T10:00:00+01:00",  # the same instant, another offset
        },
    )
    outcome = import_booking(services, "bk_77c1")
    services.new_worker().drain()
    assert (outcome.new, outcome.state, outcome.event) == (False, "synced", "booking.rescheduled")
    assert event_count(services) == events
    assert crm_rows(services.engine) == before


def test_import_catches_up_a_missed_cancellation(
    services: Services, bookme: respx.MockRouter
) -> None:
    """BookMe's newer state is applied, in the booking's time zone from the earlier webhook."""
    lifecycle = json.loads((SAMPLES / "lifecycle-sequence.json").read_text())
    deliver(services, lifecycle[0])
    cancelled = {
        **{k: v for k, v in lifecycle[2].items() if k not in ("bookingId", "scheduledDate")},
        "id": "bk_77c1",
        "scheduledStart": lifecycle[2]["scheduledDate"],
        "status": "cancelled",
    }
    del cancelled["timezone"]  # not in BookMe's resource
    bookme.get("/api/bookings/bk_77c1").respond(200, json=cancelled)
    outcome = import_booking(services, "bk_77c1")
    assert (outcome.new, outcome.state, outcome.event) == (True, "queued", "booking.cancelled")
    services.new_worker().drain()
    event = services.store.get(outcome.event_id)
    assert event is not None
    assert event.state == "synced"
    assert event.payload["timezone"] == "Europe/Stockholm"
    with services.engine.connect() as conn:
        meta = MetaData()
        meta.reflect(services.engine)
        outcome_row = conn.execute(select(meta.tables["crm_activities"].c.outcome)).scalar()
    assert outcome_row == "CANCELED"


def test_importing_twice_stores_one_event(services: Services, bookme: respx.MockRouter) -> None:
    """A repeated import, before or after the sync, returns the first import's event."""
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    first = import_booking(services, "bk_9f3a21")
    again = import_booking(services, "bk_9f3a21")
    assert (again.new, again.event_id) == (False, first.event_id)
    services.new_worker().drain()
    third = import_booking(services, "bk_9f3a21")
    assert (third.new, third.event_id, third.state) == (False, first.event_id, "synced")
    assert event_count(services) == 1


def test_an_unplaceable_event_type_is_quarantined(
    services: Services, bookme: respx.MockRouter
) -> None:
    """An event type the mapping does not know is kept quarantined, as from the webhook."""
    bookme.get("/api/bookings/bk_yoga").respond(200, json=resource(id="bk_yoga", eventType="yoga"))
    outcome = import_booking(services, "bk_yoga")
    assert (outcome.new, outcome.state) == (True, "quarantined")


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (httpx.Response(404), BookMeNotFound, "BookMe has no booking 'bk_1'"),
        (httpx.Response(503), BookMeUnavailable, "BookMe is unavailable (HTTP 503)"),
        (httpx.Response(200, text="nope"), BookMeMalformed, "is not JSON"),
        (
            httpx.Response(200, json=resource(id="bk_1", duration="long")),
            BookMeMalformed,
            "BookMe's booking 'bk_1' is malformed: duration: Input should be a valid integer",
        ),
        (
            httpx.Response(200, json=resource(id="bk_2")),
            BookMeMalformed,
            "id: is 'bk_2', not the booking asked for ('bk_1')",
        ),
    ],
    ids=["404", "5xx", "not-json", "bad-field", "other-booking"],
)
def test_bookme_failures_store_nothing(
    services: Services,
    bookme: respx.MockRouter,
    answer: httpx.Response,
    error: type[Exception],
    message: str,
) -> None:
    """A 404, a failing BookMe or a malformed resource raises with a message; nothing stored."""
    bookme.get("/api/bookings/bk_1").mock(return_value=answer)
    with pytest.raises(error) as caught:
        import_booking(services, "bk_1")
    assert message in caught.value.message  # type: ignore[attr-defined]
    assert event_count(services) == 0


def test_an_impossible_id_is_refused_without_asking_bookme(
    services: Services, bookme: respx.MockRouter
) -> None:
    """A blank or over-long id raises InvalidBookingId before any request."""
    for bad in ("  ", "x" * 201):
        with pytest.raises(InvalidBookingId):
            import_booking(services, bad)
    assert bookme.calls.call_count == 0


def test_import_without_bookme_configured_says_so(
    make_settings: Callable[..., Settings],
) -> None:
    """No BOOKME_API_URL: a clear BookMeNotConfigured naming the setting."""
    services = build_services(make_settings())
    try:
        with pytest.raises(BookMeNotConfigured, match="BOOKME_API_URL"):
            import_booking(services, "bk_1")
    finally:
        services.close()


def test_the_token_is_never_logged(
    services: Services, bookme: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a success nor a refusal puts BOOKME_API_TOKEN into a log line or a message."""
    caplog.set_level(logging.DEBUG)
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    bookme.get("/api/bookings/bk_x").respond(403)
    import_booking(services, "bk_9f3a21")
    with pytest.raises(BookMeRejected) as caught:
        import_booking(services, "bk_x")
    assert TOKEN not in caplog.text
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(services.settings)


# -- backfill ------------------------------------------------------------------------


def _bookings(n: int) -> list[dict[str, Any]]:
    return [
        resource(id=f"bk_{i}", email=f"person{i}@example.com", company=None, name=f"Person {i}")
        for i in range(n)
    ]


def _list_api(
    bookme: respx.MockRouter, pages: list[list[Any]], fail_at: set[str] | None = None
) -> respx.Route:
    """BookMe's list: page k has cursor ``p{k}``; cursors in ``fail_at`` answer 503."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["since"] == "2026-11-01"
        cursor = request.url.params.get("cursor")
        if fail_at and cursor in fail_at:
            return httpx.Response(503)
        index = 0 if cursor is None else int(cursor.removeprefix("p"))
        following = f"p{index + 1}" if index + 1 < len(pages) else None
        return httpx.Response(200, json={"data": pages[index], "nextCursor": following})

    return bookme.get("/api/bookings").mock(side_effect=answer)


def _backfill(services: Services) -> Backfill:
    return Backfill(services, BookMeClient(BOOKME, TOKEN, sleep=lambda _s: None), "2026-11-01")


def test_backfill_imports_every_page_and_a_second_run_stores_nothing(
    services: Services, bookme: respx.MockRouter
) -> None:
    """All pages are imported once; the same --since again finds everything present."""
    people = _bookings(5)
    _list_api(bookme, [people[:2], people[2:4], people[4:]])
    seen: list[int] = []
    report = _backfill(services).run(on_booking=lambda r: seen.append(r.fetched))
    assert (report.fetched, report.new, report.present, report.pages) == (5, 5, 0, 3)
    assert report.completed
    assert seen == [1, 2, 3, 4, 5]
    services.new_worker().drain()
    before = crm_rows(services.engine)

    again = _backfill(services).run()
    services.new_worker().drain()
    assert (again.fetched, again.new, again.present, again.resumed) == (5, 0, 5, False)
    assert event_count(services) == 5
    assert crm_rows(services.engine) == before


def test_backfill_resumes_after_the_last_completed_page(
    services: Services, bookme: respx.MockRouter
) -> None:
    """A run stopped by BookMe failing continues from its saved cursor, not from page one."""
    people = _bookings(6)
    pages = [people[:2], people[2:4], people[4:]]
    _list_api(bookme, pages, fail_at={"p2"})
    first = _backfill(services)
    with pytest.raises(BookMeUnavailable):
        first.run()
    assert (first.report.fetched, first.report.new, first.report.completed) == (4, 4, False)

    bookme.routes.clear()
    route = _list_api(bookme, pages)
    second = _backfill(services).run()
    assert [call.request.url.params.get("cursor") for call in route.calls] == ["p2"]
    assert (second.resumed, second.fetched, second.new) == (True, 2, 2)
    assert event_count(services) == 6


def test_an_interrupted_page_is_fetched_again_without_duplicates(
    services: Services, bookme: respx.MockRouter
) -> None:
    """Killed mid-page, the page is read again on resume; its first bookings stay single."""
    people = _bookings(4)
    _list_api(bookme, [people[:3], people[3:]])

    def interrupt(report: Any) -> None:
        if report.fetched == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _backfill(services).run(on_booking=interrupt)
    assert event_count(services) == 2
    resumed = _backfill(services).run()
    assert (resumed.resumed, resumed.fetched, resumed.new, resumed.present) == (True, 4, 2, 2)
    assert event_count(services) == 4


def test_backfill_counts_malformed_and_quarantined_bookings(
    services: Services, bookme: respx.MockRouter
) -> None:
    """A malformed resource is counted failed with its message; the rest go on."""
    good = _bookings(2)
    yoga = resource(id="bk_yoga", eventType="yoga")
    broken = resource(id="bk_broken", email="not-an-email")
    _list_api(bookme, [[good[0], broken, "junk"], [yoga, good[1]]])
    report = _backfill(services).run()
    assert (report.fetched, report.new, report.quarantined, report.present) == (5, 2, 1, 0)
    assert [booking_id for booking_id, _ in report.failed] == ["bk_broken", "?"]
    assert "email:" in report.failed[0][1]
    assert report.completed


def test_backfill_position_survives_in_the_database(services: Services) -> None:
    """The position is a row: begin resumes an unfinished pass, a completed one starts over."""
    positions = BackfillStore(services.engine)
    start = positions.begin("2026-11-01")
    assert (start.cursor, start.pages, start.resumed) == (None, 0, False)
    positions.advance("2026-11-01", "p1")
    again = BackfillStore(services.engine).begin("2026-11-01")
    assert (again.cursor, again.pages, again.resumed) == ("p1", 1, True)
    positions.complete("2026-11-01")
    assert positions.completed_at("2026-11-01") is not None
    fresh = positions.begin("2026-11-01")
    assert (fresh.cursor, fresh.resumed) == (None, False)
    assert positions.completed_at("2026-11-01") is None


def test_migration_0007_matches_the_backfill_table(services: Services) -> None:
    """Migration 0007 creates ``bookme_backfills`` exactly as the store defines it."""
    with services.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), bookme_metadata)
    assert [d for d in diff if "bookme_backfills" in repr(d)] == []


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("2026-11-01", "2026-11-01"),
        ("2026-11-01T10:00:00+01:00", "2026-11-01T09:00:00.000Z"),
        ("2026-11-01T09:00:00Z", "2026-11-01T09:00:00.000Z"),
    ],
)
def test_since_is_a_date_or_an_aware_datetime(given: str, sent: str) -> None:
    """--since takes a date or an ISO datetime with offset, normalised for BookMe."""
    assert parse_since(given) == sent


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-01T10:00:00", "2026-13-01"])
def test_since_refuses_what_is_not_a_date(bad: str) -> None:
    """A word, a naive datetime or an impossible date is refused with a message."""
    with pytest.raises(ValueError, match="--since"):
        parse_since(bad)
