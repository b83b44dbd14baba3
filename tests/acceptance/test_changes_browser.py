"""A reschedule made on the dashboard in headless Chromium, against a real ``bookme-crm serve``
and the fake BookMe on loopback, which posts its own webhook back: the full round trip,
then a refusal, as a salesperson sees them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from adapter.ui.display import local_time
from tests.acceptance.test_dashboard_browser import (
    ADMIN,
    HOOK,
    _context,
    _env,
    _log_in,
    browser,
    shots,
)
from tests.acceptance.test_serve_process import Serve
from tests.conftest import WEBHOOK_SECRET
from tests.fakes.bookme import FakeBookMe, iso_ms

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.browser]
__all__ = ["browser", "shots"]  # the shared module-scoped fixtures

TOKEN = "fake-bookme-token-browser"
ZONE = ZoneInfo("Europe/Stockholm")
START = (datetime.now(UTC) + timedelta(days=6)).replace(hour=9, minute=0, second=0, microsecond=0)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, FakeBookMe]]:
    """serve on the local CRM with BookMe's API configured; BookMe posts back to it."""
    workdir = tmp_path_factory.mktemp("changes")
    with FakeBookMe(token=TOKEN, shared_secret=WEBHOOK_SECRET) as bookme:
        env = _env(
            workdir,
            BOOKME_API_URL=bookme.url,
            BOOKME_API_TOKEN=TOKEN,
            OUTBOX_RETRY_BASE_SECONDS="0.1",
        )
        server = Serve(workdir, env)
        bookme.webhook_url = server.url + "/api/bookings/incoming"
        try:
            held = bookme.add_booking(
                {
                    "id": "ui-move",
                    "eventType": "workshop",
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "company": "Acme AB",
                    "scheduledStart": iso_ms(START),
                    "duration": 120,
                }
            )
            answer = httpx.post(
                server.url + "/api/bookings/incoming",
                content=json.dumps(bookme.webhook_body(held, "booking.created")),
                headers={**HOOK, "content-type": "application/json"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            yield server, bookme
        finally:
            server.stop()


def _wait(condition: Any, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def _meeting(server: Serve) -> dict[str, Any]:
    (meeting,) = httpx.get(
        server.url + "/api/activities", params={"type": "MEETING"}, headers=ADMIN
    ).json()
    return dict(meeting)


def _reschedule(page: Page, moved: datetime, minutes: int) -> None:
    local = moved.astimezone(ZONE)
    page.get_by_text("Reschedule…").click()
    page.get_by_label("Date").fill(f"{local:%Y-%m-%d}")
    page.get_by_label("Time (Europe/Stockholm)").fill(f"{local:%H:%M}")
    page.get_by_label("Minutes").fill(str(minutes))
    with page.expect_navigation():
        page.get_by_role("button", name="Move the meeting").click()


def test_reschedule_on_the_dashboard_round_trips_through_bookme(
    loop: tuple[Serve, FakeBookMe], browser: Browser, shots: Any
) -> None:
    """Reschedule… on the lead page → one reschedule at BookMe → BookMe's webhook → the
    lead page shows the new time, the change pushed and BookMe's booking.rescheduled; a
    second reschedule into a taken slot is refused, reverted, and the task says why."""
    server, bookme = loop
    context = _context(browser)
    page = context.new_page()
    _log_in(page, server)
    lead_id = _meeting(server)["leadId"]
    page.goto(f"{server.url}/ui/leads/{lead_id}")

    moved = START + timedelta(days=1, hours=2)
    _reschedule(page, moved, 90)
    assert "BookMe is being asked to follow" in page.get_by_role("status").inner_text()
    _wait(lambda: bookme.deliveries, "BookMe's webhook")
    _wait(lambda: _meeting(server)["outcome"] == "RESCHEDULED", "the webhook's sync")
    time.sleep(0.5)
    assert bookme.calls["POST reschedule"] == 1
    assert bookme.deliveries == [("booking.rescheduled", 200)]
    meeting = _meeting(server)
    assert (meeting["activityDate"], meeting["durationMinutes"]) == (iso_ms(moved), 90)

    page.goto(f"{server.url}/ui/leads/{lead_id}")
    changes = page.locator("ul.crm-changes")
    assert "pushed" in changes.inner_text()
    assert f"{local_time(START, ZONE)} → {local_time(moved, ZONE)}" in changes.inner_text()
    assert "booking.rescheduled" in page.locator("ul.bookme-events").inner_text()
    shots(page, "lead-changes")

    taken = moved + timedelta(days=1)
    bookme.take_slot(taken, 60)
    _reschedule(page, taken, 90)
    _wait(lambda: _meeting(server)["activityDate"] == iso_ms(moved), "the revert", 5)
    _wait(
        lambda: any(
            t["title"].startswith("BookMe refused the reschedule")
            for t in httpx.get(
                server.url + "/api/tasks", params={"bookingId": "ui-move"}, headers=ADMIN
            ).json()
        ),
        "the refusal task",
    )
    page.goto(f"{server.url}/ui/sync")
    problems = page.locator("#crm-problems")
    assert "refused" in problems.inner_text()
    assert f"the slot at {iso_ms(taken)} is already booked" in problems.inner_text()
    shots(page, "sync-refused")
    assert bookme.calls["POST reschedule"] == 2
    assert bookme.applied == 1
    context.close()
    if os.environ.get("ROUND_TRIP_LOG"):  # the closing note's log excerpt
        Path(os.environ["ROUND_TRIP_LOG"]).write_text(server.output())
