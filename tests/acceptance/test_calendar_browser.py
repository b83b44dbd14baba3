"""The calendar feeds page in headless Chromium against real ``bookme-crm serve``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.acceptance.test_dashboard_browser import (
    _at,
    _context,
    _env,
    _log_in,
    _post,
    browser,  # noqa: F401 - the module's Chromium fixture
    shots,  # noqa: F401 - the screenshot fixture
)
from tests.acceptance.test_serve_process import Serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """serve on the local CRM with one upcoming workshop."""
    workdir: Path = tmp_path_factory.mktemp("calendar")
    server = Serve(workdir, _env(workdir))
    try:
        _post(server, bookingId="cal-workshop", name="Ada Lovelace", scheduledDate=_at(days=3))
        yield server
    finally:
        server.stop()


def test_the_dashboard_shows_a_new_feed_url_with_a_working_copy_button(
    served: Serve,
    browser: Browser,  # noqa: F811
    shots: Any,  # noqa: F811
) -> None:
    """Make a feed from the Calendar feeds page: its URL is shown in a labelled field; the Copy
    button, reached by Tab and pressed with Enter, puts it on the clipboard and says "Copied";
    the URL serves the booking; Revoke makes it a 404."""
    context = _context(browser)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.url)
    try:
        page = context.new_page()
        _log_in(page, served)
        page.get_by_role("link", name="Calendar feeds").click()
        page.get_by_label("Label (who or what it is for)").fill("Ada's phone")
        with page.expect_navigation():
            page.get_by_role("button", name="Make feed URL").click()
        field = page.get_by_label("Every meeting and open task")
        url = field.input_value()
        assert url.startswith(served.url + "/calendar/bcal_")
        assert url.endswith(".ics")
        copy = page.get_by_role("button", name="Copy Every meeting and open task URL")
        for _ in range(40):
            if copy.evaluate("button => button === document.activeElement"):
                break
            page.keyboard.press("Tab")
        else:
            pytest.fail("the Copy button is not reachable with Tab")
        page.keyboard.press("Enter")
        page.get_by_text("Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == url
        shots(page, "calendar-feeds")

        feed = httpx.get(url, timeout=10)
        assert feed.status_code == 200
        assert "UID:booking-cal-workshop@bookme-crm" in feed.text

        page.goto(served.url + "/ui/calendar")
        assert url not in page.content()  # shown once
        with page.expect_navigation():
            page.get_by_role("button", name="Revoke").first.click()
        assert "Revoked feed token" in page.get_by_role("status").first.inner_text()
        assert httpx.get(url, timeout=10).status_code == 404
    finally:
        context.close()
