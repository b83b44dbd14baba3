"""The dashboard's calendar feeds page over HTTP: session, CSRF, a URL shown once, revoke."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from adapter.calendar import TokenStore
from adapter.services import Services
from tests.integration.test_dashboard import _client, log_in, page_csrf


@pytest.fixture
def ui(services: Services) -> Iterator[TestClient]:
    """The app over https, so the dashboard's Secure session cookie is sent."""
    with _client(services) as client:
        yield client


def test_the_page_needs_a_session_and_its_forms_a_csrf_token(
    ui: TestClient, services: Services
) -> None:
    """Without a session GET leads to the login form; a POST with a wrong CSRF token is a 403
    and makes no token."""
    assert ui.get("/ui/calendar", follow_redirects=False).headers["location"] == (
        "/ui/login?next=/ui/calendar"
    )
    log_in(ui)
    refused = ui.post("/ui/calendar", data={"csrf": "guessed", "label": "x"})
    assert refused.status_code == 403
    assert TokenStore(services.engine).list() == []


def test_making_a_feed_shows_its_urls_once_with_a_copy_button(
    ui: TestClient, services: Services
) -> None:
    """The answer to the form shows the feed URL (https and webcal, and the owner's) next to a
    Copy button; the URL works; the page reloaded lists the token but never shows it again."""
    log_in(ui)
    made = ui.post(
        "/ui/calendar",
        data={"csrf": page_csrf(ui, "/ui/calendar"), "label": "Ada", "owner": "Ada@Example.com"},
    )
    assert made.status_code == 200, made.text
    urls = re.findall(r'value="(https://testserver/calendar/(bcal_[\w-]+)[^"]*\.ics)"', made.text)
    assert [url for url, _ in urls] == [
        f"https://testserver/calendar/{urls[0][1]}.ics",
        f"https://testserver/calendar/{urls[0][1]}/owner/ada@example.com.ics",
    ]
    assert made.text.count('data-copy="feed-url-') == 2
    assert f'href="webcal://testserver/calendar/{urls[0][1]}.ics"' in made.text
    assert made.headers["cache-control"] == "no-store"
    assert ui.get(urls[0][0]).status_code == 200
    again = ui.get("/ui/calendar")
    assert urls[0][1] not in again.text
    assert "Ada" in again.text


def test_revoke_from_the_dashboard_stops_the_feed(ui: TestClient, services: Services) -> None:
    """The Revoke button's POST revokes the token: the feed answers 404 and the list says so."""
    made, secret = TokenStore(services.engine).create("phone")
    log_in(ui)
    assert ui.get(f"/calendar/{secret}.ics").status_code == 200
    done = ui.post(f"/ui/calendar/{made.id}/revoke", data={"csrf": page_csrf(ui, "/ui/calendar")})
    assert done.status_code == 200
    assert f"Revoked feed token {made.id} (phone)" in done.text
    assert ui.get(f"/calendar/{secret}.ics").status_code == 404
    assert f'action="/ui/calendar/{made.id}/revoke"' not in done.text


def test_a_bad_owner_is_a_400_naming_the_field(ui: TestClient, services: Services) -> None:
    """An owner that is no email gets a 400 page naming "Owner", and no token is made."""
    log_in(ui)
    answer = ui.post(
        "/ui/calendar", data={"csrf": page_csrf(ui, "/ui/calendar"), "owner": "not an email"}
    )
    assert answer.status_code == 400
    assert "Owner: an email address" in answer.text
    assert TokenStore(services.engine).list() == []
