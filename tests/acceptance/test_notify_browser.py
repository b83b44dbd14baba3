"""The dashboard's mail status in a real headless Chromium against real ``bookme-crm serve``
and a loopback SMTP server: sent, scheduled, failed and uncertain mails, and "Mark sent".

Set ``SCREENSHOTS_DIR`` to keep the screenshot (the README's comes from here).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.acceptance.test_dashboard_browser import HOOK, _context, _env, _log_in
from tests.acceptance.test_dashboard_browser import browser as browser  # the fixture
from tests.acceptance.test_dashboard_browser import shots as shots  # the fixture
from tests.acceptance.test_serve_process import Serve
from tests.conftest import free_port
from tests.integration.test_notify import Inbox, workshop, write_mapping

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _book(server: Serve, booking_id: str, due_in: timedelta, **fields: Any) -> None:
    body = workshop(due_in, bookingId=booking_id, **fields)
    answer = httpx.post(server.url + "/api/bookings/incoming", json=body, headers=HOOK, timeout=30)
    assert answer.status_code in (200, 202), answer.text


def _until(server: Serve, booking_id: str, state: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with sqlite3.connect(server.db) as db:
            row = db.execute(
                "SELECT state FROM notify_sends WHERE booking_id = ?", (booking_id,)
            ).fetchone()
        if row and row[0] == state:
            return
        time.sleep(0.1)
    raise AssertionError(f"{booking_id} never reached {state}")


@pytest.fixture(scope="module")
def mails(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Inbox]]:
    """serve with automatic prep mails and one mail in each state."""
    workdir = tmp_path_factory.mktemp("mails")
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    env = _env(
        workdir,
        MAPPINGS_PATH=str(write_mapping(workdir / "mappings")),
        SMTP_URL=f"smtp://127.0.0.1:{port}",
        SMTP_FROM="workshops@bookme.example",
    )
    server = Serve(workdir, env)
    server.db = workdir / "bookme.db"  # type: ignore[attr-defined]
    try:
        _book(server, "ws-sent", timedelta(seconds=-1), name="Ada Lovelace")
        _until(server, "ws-sent", "sent")
        inbox.mode = "drop"
        _book(
            server,
            "ws-uncertain",
            timedelta(seconds=-1),
            name="Grace Hopper",
            email="grace@example.com",
        )
        _until(server, "ws-uncertain", "uncertain")
        inbox.mode = "refuse"
        _book(
            server, "ws-failed", timedelta(seconds=-1), name="Alan Turing", email="alan@example.com"
        )
        _until(server, "ws-failed", "failed")
        inbox.mode = "ok"
        _book(server, "ws-later", timedelta(days=2), name="Edsger Dijkstra", email="ed@example.com")
        _until(server, "ws-later", "scheduled")
        yield server, inbox
    finally:
        server.stop()
        controller.stop()


def test_mail_status_page_and_mark_sent(
    mails: tuple[Serve, Inbox], browser: Browser, shots: Any
) -> None:
    """/ui/mails lists each booking's mail with its state; "Mark sent" on the uncertain one
    records it as sent without sending it again."""
    server, inbox = mails
    context = _context(browser)
    try:
        page = context.new_page()
        _log_in(page, server)
        page.get_by_role("link", name="Mails").click()
        table = page.locator("#mail-table")
        for booking, state in (
            ("ws-sent", "sent"),
            ("ws-uncertain", "uncertain"),
            ("ws-failed", "failed"),
            ("ws-later", "scheduled"),
        ):
            row = table.locator(f"tr[data-booking='{booking}']")
            assert row.locator(".badge").inner_text() == state
        shots(page, "mails")
        sent_before = len(inbox.messages)
        row = table.locator("tr[data-booking='ws-uncertain']")
        row.get_by_role("button", name="Mark sent").click()
        page.wait_for_load_state()
        assert "recorded as sent" in page.locator("body").inner_text()
        row = page.locator("#mail-table tr[data-booking='ws-uncertain']")
        assert row.locator(".badge").inner_text() == "sent"
        assert len(inbox.messages) == sent_before
    finally:
        context.close()
