"""The dashboard's "Add from BookMe" form: BookMe's API on respx, the real app and local CRM."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import respx
from fastapi.testclient import TestClient

from adapter.services import Services, build_services
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.integration.test_bookme_import import crm_rows, event_count, resource
from tests.integration.test_dashboard import _client, csrf_of, log_in, page_csrf

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def services(bookme_services: Services) -> Services:
    return bookme_services


@pytest.fixture
def ui(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        assert log_in(client).status_code == 303
        yield client


def add(ui: TestClient, booking_id: str, csrf: str | None = None) -> tuple[int, str]:
    token = csrf if csrf is not None else page_csrf(ui, "/ui/import")
    answer = ui.post(
        "/ui/import", data={"booking_id": booking_id, "csrf": token}, follow_redirects=True
    )
    return answer.status_code, answer.text


def test_the_form_is_labelled_and_in_the_nav(ui: TestClient) -> None:
    page = ui.get("/ui/import")
    assert page.status_code == 200
    assert '<label for="booking_id">BookMe booking id</label>' in page.text
    assert 'href="/ui/import" aria-current="page"' in page.text
    assert "not configured" not in page.text


def test_adding_a_booking_syncs_it_and_a_second_add_changes_nothing(
    ui: TestClient, services: Services, bookme: respx.MockRouter
) -> None:
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    status, html = add(ui, "bk_9f3a21")
    assert status == 200
    assert "Added booking bk_9f3a21 from BookMe: synced." in html
    leads = ui.get("/api/leads", headers=ADMIN).json()
    assert [lead["title"] for lead in leads] == ["30min-consultation - Nordkap Konsult AB"]
    before, events = crm_rows(services.engine), event_count(services)
    status, html = add(ui, "bk_9f3a21")
    assert "Booking bk_9f3a21 was already here: nothing changed (synced)." in html
    assert (crm_rows(services.engine), event_count(services)) == (before, events)


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"status_code": 404}, 404),
        ({"status_code": 200, "json": {"id": "bk_missing", "name": "x"}}, 502),
        ({"status_code": 503}, 502),
    ],
)
def test_a_bookme_failure_is_shown_and_stores_nothing(
    ui: TestClient,
    services: Services,
    bookme: respx.MockRouter,
    answer: dict[str, object],
    code: int,
) -> None:
    bookme.get("/api/bookings/bk_missing").respond(**answer)  # type: ignore[arg-type]
    before = event_count(services)
    status, html = add(ui, "bk_missing")
    assert status == code
    assert 'role="alert" id="import-error"' in html
    assert "bk_missing" in html
    assert 'value="bk_missing"' in html  # the id stays in the field to correct or retry
    assert event_count(services) == before


def test_a_blank_id_is_refused_without_asking_bookme(
    ui: TestClient, bookme: respx.MockRouter
) -> None:
    route = bookme.get(url__regex=r".*").respond(200, json=resource())
    status, _ = add(ui, "   ")
    assert status == 400
    assert route.call_count == 0


def test_a_post_without_the_csrf_token_imports_nothing(
    ui: TestClient, services: Services, bookme: respx.MockRouter
) -> None:
    route = bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    status, _ = add(ui, "bk_9f3a21", csrf="forged")
    assert status == 403
    assert route.call_count == 0
    assert event_count(services) == 0


def test_without_bookme_configured_the_page_says_so(
    make_settings: Callable[..., Settings],
) -> None:
    svc = build_services(make_settings())
    try:
        with _client(svc) as client:
            log_in(client)
            page = client.get("/ui/import")
            assert "BOOKME_API_URL" in page.text
            assert 'role="alert"' in page.text
            status, html = add(client, "bk_9f3a21", csrf=csrf_of(page.text))
            assert status == 503
            assert "BOOKME_API_URL" in html
    finally:
        svc.close()
