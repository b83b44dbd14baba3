"""The dashboard at /ui over HTTP (TestClient): login, session cookie, CSRF, pages, actions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.api.app import create_app
from adapter.services import Services, build_services
from adapter.settings import Settings
from adapter.ui.session import COOKIE
from tests.conftest import ADMIN_TOKEN, WEBHOOK_SECRET, seed_booking

HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _client(services: Services) -> TestClient:
    # https: the session cookie is Secure, and httpx only sends it over https.
    return TestClient(
        create_app(services=services, embedded_workers=1), base_url="https://testserver"
    )


@pytest.fixture
def ui(services: Services) -> Iterator[TestClient]:
    with _client(services) as client:
        yield client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def log_in(client: TestClient, token: str = ADMIN_TOKEN, next_: str = "/ui") -> Any:
    form = client.get("/ui/login")
    assert form.status_code == 200
    return client.post(
        "/ui/login",
        data={"token": token, "csrf": csrf_of(form.text), "next": next_},
        follow_redirects=False,
    )


def page_csrf(client: TestClient, path: str = "/ui") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def book(client: TestClient, **fields: Any) -> dict[str, Any]:
    answer = client.post("/api/bookings/incoming", json=seed_booking(**fields), headers=HOOK)
    assert answer.status_code in (200, 202), answer.text
    body: dict[str, Any] = answer.json()
    return body


def soon(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("path", ["/ui", "/ui/sync", "/ui/leads", "/ui/leads/some-id"])
def test_pages_send_a_visitor_without_a_session_to_the_login_form(
    ui: TestClient, path: str
) -> None:
    """Every page answers 303 to /ui/login (keeping where to come back to) and shows nothing."""
    answer = ui.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=" + path


def test_login_sets_a_signed_httponly_secure_strict_cookie(ui: TestClient) -> None:
    """The admin token logs in; the cookie is HttpOnly, Secure, SameSite=Strict, scoped to /ui."""
    answer = log_in(ui)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/ui", "Max-Age=28800"):
        assert attribute in cookie
    assert ADMIN_TOKEN not in cookie
    home = ui.get("/ui")
    assert home.status_code == 200
    assert "<h1>Dashboard</h1>" in home.text
    assert home.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]


def test_a_wrong_token_is_refused_and_logs_nobody_in(ui: TestClient) -> None:
    """A wrong admin token gets 401 and the form again; the pages still redirect."""
    answer = log_in(ui, token="not-the-admin-token-at-all")
    assert answer.status_code == 401
    assert "That is not the admin token." in answer.text
    assert ui.get("/ui", follow_redirects=False).status_code == 303


def test_login_without_the_forms_csrf_token_is_refused(ui: TestClient) -> None:
    """A login POST that did not come from our form (no session, or another token) is a 403."""
    bare = ui.post("/ui/login", data={"token": ADMIN_TOKEN, "csrf": "x"}, follow_redirects=False)
    assert bare.status_code == 403
    ui.get("/ui/login")
    forged = ui.post("/ui/login", data={"token": ADMIN_TOKEN, "csrf": "guess"})
    assert forged.status_code == 403
    assert ui.get("/ui", follow_redirects=False).status_code == 303


def test_a_tampered_cookie_is_no_session(ui: TestClient) -> None:
    """Changing one character of the signed cookie makes it worthless."""
    log_in(ui)
    value = ui.cookies[COOKIE]
    ui.cookies.clear()
    ui.cookies.set(COOKIE, value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1:])
    assert ui.get("/ui", follow_redirects=False).status_code == 303


def test_rotating_the_admin_token_ends_existing_sessions(
    make_settings: Callable[..., Settings],
) -> None:
    """The cookie's key is derived from ADMIN_TOKEN: a new token invalidates old cookies."""
    first = build_services(make_settings())
    try:
        with _client(first) as client:
            log_in(client)
            cookie = client.cookies[COOKIE]
    finally:
        first.close()
    second = build_services(make_settings(admin_token="another-admin-token-0123456789"))
    try:
        with _client(second) as client:
            client.cookies.set(COOKIE, cookie)
            assert client.get("/ui", follow_redirects=False).status_code == 303
    finally:
        second.close()


def test_login_never_redirects_off_the_dashboard(ui: TestClient) -> None:
    """``next`` outside /ui (an open redirect) is replaced by /ui."""
    for target in ("https://evil.example/", "//evil.example/ui", "/api/leads"):
        ui.cookies.clear()
        answer = log_in(ui, next_=target)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui"
    ui.cookies.clear()
    assert log_in(ui, next_="/ui/sync").headers["location"] == "/ui/sync"


def test_logout_ends_the_session(ui: TestClient) -> None:
    """Log out clears the cookie: the pages redirect to the login form again."""
    log_in(ui)
    answer = ui.post("/ui/logout", data={"csrf": page_csrf(ui)}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login"
    assert ui.get("/ui", follow_redirects=False).status_code == 303


def test_empty_states_on_a_fresh_service(ui: TestClient) -> None:
    """With no bookings every section says so instead of showing an empty box."""
    log_in(ui)
    home = ui.get("/ui").text
    assert "No upcoming bookings." in home
    assert "Nothing to do: no open tasks." in home
    sync = ui.get("/ui/sync").text
    assert "No dead events." in sync
    assert "No quarantined events." in sync
    assert "No events yet." in sync
    assert '<dd data-state="oldest-pending">none</dd>' in sync
    assert "No leads yet." in ui.get("/ui/leads").text
    missing = ui.get("/ui/leads/no-such-lead")
    assert missing.status_code == 404
    assert "Lead not found" in missing.text


def test_upcoming_booking_in_the_display_timezone_with_join_link(
    make_settings: Callable[..., Settings],
) -> None:
    """An upcoming booking shows subject, lead, local time in UI_TIMEZONE, relative time, Join."""
    services = build_services(make_settings(ui_timezone="Europe/Stockholm"))
    try:
        with _client(services) as client:
            book(
                client,
                scheduledDate="2027-02-15T10:00:00Z",
                meetingUrl="https://meet.example/abc",
                company="Acme",
            )
            log_in(client)
            home = client.get("/ui").text
    finally:
        services.close()
    assert "workshop - Scheduled" in home
    assert "workshop - Acme" in home
    assert "Mon 15 Feb 2027, 11:00 CET" in home  # 10:00 UTC in Stockholm (winter time)
    assert re.search(r'class="relative">in \d+ (months|year)', home)
    assert 'href="https://meet.example/abc"' in home
    assert "Times shown in Europe/Stockholm" in home


def test_the_checkbox_completes_a_task_like_patch_api_tasks(ui: TestClient) -> None:
    """Posting a task's form marks it done (the read API sees it) and lists it no more."""
    book(ui, eventType="30min-consultation", scheduledDate=soon(hours=-30))
    (task,) = ui.get("/api/tasks", params={"status": "todo"}, headers=ADMIN).json()
    log_in(ui)
    home = ui.get("/ui").text
    assert f'id="done-{task["id"]}"' in home
    assert 'class="task overdue"' in home  # due 28 hours ago
    answer = ui.post(
        f"/ui/tasks/{task['id']}/done",
        data={"csrf": csrf_of(home), "next": "/ui#tasks"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui#tasks"
    after = ui.get("/ui").text
    assert f"Marked “{task['title']}” done." in after
    assert f'id="done-{task["id"]}"' not in after
    assert "Nothing to do: no open tasks." in after
    assert "Marked" not in ui.get("/ui").text  # the message is shown once
    (done,) = ui.get("/api/tasks", params={"bookingId": "test-123"}, headers=ADMIN).json()
    assert done["status"] == "done"


def test_posts_with_a_wrong_csrf_token_change_nothing(ui: TestClient) -> None:
    """Logged in but with another CSRF token: complete and replay are refused with 403."""
    book(ui, eventType="30min-consultation")
    quarantined = book(ui, bookingId="q-1", eventType="unknown-type")
    (task,) = ui.get("/api/tasks", headers=ADMIN).json()
    log_in(ui)
    for path in (f"/ui/tasks/{task['id']}/done", f"/ui/sync/{quarantined['eventId']}/replay"):
        for form in ({"csrf": "not-the-token"}, {}):
            answer = ui.post(path, data=form, follow_redirects=False)
            assert answer.status_code == 403, path
            assert "Not allowed" in answer.text
    assert ui.get("/api/tasks", headers=ADMIN).json()[0]["status"] == "todo"
    event = ui.get(f"/admin/outbox/{quarantined['eventId']}", headers=ADMIN).json()
    assert event["status"] == "quarantined"
    assert event["replays"] == []


def test_posts_without_a_session_change_nothing(ui: TestClient) -> None:
    """No cookie at all: 403, even with a CSRF token taken from another session."""
    quarantined = book(ui, bookingId="q-1", eventType="unknown-type")
    log_in(ui)
    token = page_csrf(ui)
    ui.cookies.clear()
    answer = ui.post(
        f"/ui/sync/{quarantined['eventId']}/replay", data={"csrf": token}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert ui.get(f"/admin/outbox/{quarantined['eventId']}", headers=ADMIN).json()["replays"] == []


def test_sync_health_lists_problems_and_replays_through_the_audited_replay(
    ui: TestClient,
) -> None:
    """Counts, the quarantined event with its reason, and Replay: audited as 'dashboard'."""
    book(ui)
    quarantined = book(ui, bookingId="q-1", eventType="unknown-type")
    log_in(ui)
    sync = ui.get("/ui/sync").text
    assert '<dd data-state="synced">1</dd>' in sync
    assert '<dd data-state="quarantined">1</dd>' in sync
    assert "eventType &#39;unknown-type&#39; is not in the mapping" in sync
    answer = ui.post(
        f"/ui/sync/{quarantined['eventId']}/replay",
        data={"csrf": csrf_of(sync)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    after = ui.get("/ui/sync").text
    # Still unknown to the mapping: the replay ran and the worker quarantined it again.
    assert f"Replayed event {quarantined['eventId']} (booking q-1): now quarantined." in after
    event = ui.get(f"/admin/outbox/{quarantined['eventId']}", headers=ADMIN).json()
    assert [(r["actor"], r["fromState"]) for r in event["replays"]] == [
        ("dashboard", "quarantined")
    ]
    synced = ui.get("/admin/outbox", params={"state": "synced"}, headers=ADMIN).json()
    synced_id = synced["events"][0]["eventId"]
    again = ui.post(f"/ui/sync/{synced_id}/replay", data={"csrf": csrf_of(after)})
    assert f"Event {synced_id} is synced: only dead or quarantined events replay." in again.text
    bulk = ui.post("/ui/sync/replay", data={"csrf": csrf_of(after), "state": "quarantined"})
    assert "Re-queued 1 quarantined event(s)." in bulk.text


def test_lead_page_shows_each_booking_with_its_outcome(ui: TestClient) -> None:
    """A lead's page lists its meetings with outcome (cancelled here) and their tasks."""
    book(ui, bookingId="b-1", company="Acme")
    book(
        ui,
        bookingId="b-2",
        company="Acme",
        scheduledDate="2027-03-01T09:00:00Z",
        event="booking.cancelled",
        updatedAt="2026-01-01T00:00:00Z",
    )
    (lead,) = ui.get("/api/leads", headers=ADMIN).json()
    log_in(ui)
    page = ui.get(f"/ui/leads/{lead['id']}").text
    assert f"<h1>{lead['title']}</h1>" in page
    assert page.count('class="badge outcome-scheduled">scheduled<') == 1
    assert page.count('class="badge outcome-canceled">cancelled<') == 1
    assert "<code>b-1</code>" in page
    assert "<code>b-2</code>" in page
    assert 'class="badge status-cancelled">cancelled<' in page  # b-2's tasks
    assert f'href="/ui/leads/{lead["id"]}"' in ui.get("/ui/leads").text


def test_static_files_are_served_and_nothing_else(ui: TestClient) -> None:
    """The stylesheet and script load without a session; other names are 404."""
    assert ui.get("/ui/static/app.css").headers["content-type"].startswith("text/css")
    assert ui.get("/ui/static/app.js").status_code == 200
    assert ui.get("/ui/static/..%2Fviews.py").status_code == 404


def test_an_oversized_form_is_refused(ui: TestClient) -> None:
    """A login body over 8 KiB is refused before it is parsed."""
    ui.get("/ui/login")
    answer = ui.post("/ui/login", data={"token": "x" * 10_000, "csrf": "y"})
    assert answer.status_code == 413


def test_ui_timezone_must_be_a_real_zone(make_settings: Callable[..., Settings]) -> None:
    """A typo in UI_TIMEZONE stops the service at start, naming the variable."""
    with pytest.raises(ValueError, match="ui_timezone"):
        make_settings(ui_timezone="Europe/Stockholmm")
