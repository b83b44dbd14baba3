"""The dashboard in a real headless Chromium (Playwright) against real ``bookme-crm serve``.

Loopback only: every request the browser makes to anything but 127.0.0.1 is
aborted. Each Playwright action is bounded by a timeout. Chromium is Debian's
(``apt-get install -y chromium``), never downloaded: outside CI a missing
browser skips these tests with the reason; in CI (``CI`` set) it fails them.
Set ``SCREENSHOTS_DIR`` to keep the screenshots (the README's come from here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.acceptance.test_serve_process import BIN, Serve
from tests.conftest import ADMIN_TOKEN, DEFAULT_MAPPING, WEBHOOK_SECRET, seed_booking
from tests.fakes.hubspot import FakeHubSpot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _at(**delta: float) -> str:
    moment = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(**delta)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    return {
        "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_URL": f"sqlite:///{workdir / 'bookme.db'}",
        "DATA_DIR": str(workdir / "var"),
        "UI_TIMEZONE": "Europe/Stockholm",
        "WORKER_POLL_SECONDS": "0.1",
        "SYNC_WAIT_MS": "5000",
        "CRM_BACKEND": "local",
        **extra,
    }


def _post(server: Serve, **fields: Any) -> dict[str, Any]:
    answer = httpx.post(
        server.url + "/api/bookings/incoming", json=seed_booking(**fields), headers=HOOK, timeout=30
    )
    assert answer.status_code in (200, 202), answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; browser tests must run in CI")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Save a screenshot under the test's temp dir, and to ``SCREENSHOTS_DIR`` when set."""
    folder = tmp_path_factory.mktemp("screenshots")
    keep = os.environ.get("SCREENSHOTS_DIR")

    def shot(page: Page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    return shot


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """serve on the local CRM with a few bookings: upcoming, past (overdue task), cancelled,
    and one the mapping cannot place."""
    workdir = tmp_path_factory.mktemp("local")
    server = Serve(workdir, _env(workdir))
    try:
        _post(
            server,
            bookingId="ui-workshop",
            name="Ada Lovelace",
            email="ada@example.com",
            company="Acme AB",
            scheduledDate=_at(days=3),
            meetingUrl="https://meet.example/ui-workshop",
        )
        _post(
            server,
            bookingId="ui-consult",
            eventType="30min-consultation",
            name="Grace Hopper",
            email="grace@example.com",
            scheduledDate=_at(hours=-30),
            duration=30,
        )
        _post(
            server,
            bookingId="ui-cancelled",
            name="Ada Lovelace",
            email="ada@example.com",
            company="Acme AB",
            scheduledDate=_at(days=10),
            event="booking.cancelled",
            cancellationReason="Double-booked",
        )
        _post(server, bookingId="ui-unknown", eventType="masterclass", scheduledDate=_at(days=5))
        yield server
    finally:
        server.stop()


def _context(browser: Browser, viewport: dict[str, int] = DESKTOP, **options: Any) -> Any:
    context = browser.new_context(viewport=viewport, **options)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)

    def loopback_only(route: Any) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1:", "data:", "about:")):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", loopback_only)
    return context


def _log_in(page: Page, server: Serve, token: str = ADMIN_TOKEN) -> None:
    page.goto(server.url + "/ui")
    page.get_by_label("Admin token").fill(token)
    with page.expect_navigation():
        page.keyboard.press("Enter")


@pytest.fixture
def session(browser: Browser) -> Iterator[BrowserContext]:
    context = _context(browser)
    yield context
    context.close()


def test_without_the_cookie_access_is_refused(local: Serve, session: BrowserContext) -> None:
    """No session: pages lead to the login form, and a replay POST is refused with 403."""
    page = session.new_page()
    page.goto(local.url + "/ui/sync")
    assert page.url == local.url + "/ui/login?next=/ui/sync"
    assert page.get_by_role("heading", level=1).inner_text() == "Log in"
    assert page.get_by_text("Dead events").count() == 0
    bare = session.request.get(local.url + "/ui", max_redirects=0)
    assert bare.status == 303
    events = httpx.get(local.url + "/admin/outbox?state=quarantined", headers=ADMIN).json()
    (event,) = events["events"]
    refused = session.request.post(
        local.url + f"/ui/sync/{event['eventId']}/replay", form={"csrf": "guessed"}
    )
    assert refused.status == 403
    after = httpx.get(local.url + f"/admin/outbox/{event['eventId']}", headers=ADMIN).json()
    assert after["replays"] == []


def test_log_in_and_see_the_upcoming_booking(
    local: Serve, session: BrowserContext, shots: Any
) -> None:
    """A wrong token is refused; the right one sets a Secure HttpOnly cookie on 127.0.0.1 and
    shows the upcoming booking with local time, 'in 3 days' and its Join link."""
    page = session.new_page()
    page.goto(local.url + "/ui")
    shots(page, "login")
    _log_in(page, local, token="not-the-admin-token-at-all")
    assert page.get_by_role("alert").inner_text() == "That is not the admin token."
    assert session.cookies() == [] or all(c["name"] != "auth" for c in session.cookies())
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    with page.expect_navigation(url=local.url + "/ui"):
        page.keyboard.press("Enter")
    (cookie,) = session.cookies()
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (
        True,
        True,
        "Strict",
        "/ui",
    )

    upcoming = page.locator("section", has=page.get_by_role("heading", name="Upcoming bookings"))
    booking = upcoming.get_by_role("listitem").filter(has_text="workshop - Acme AB").first
    assert "workshop - Scheduled" in booking.inner_text()
    assert "in 3 days" in booking.inner_text()
    start = datetime.strptime(_at(days=3), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    local_start = start.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Stockholm"))
    assert f"{local_start:%H:%M} {local_start.tzname()}" in booking.inner_text()
    join = booking.get_by_role("link", name="Join workshop - Scheduled")
    assert join.get_attribute("href") == "https://meet.example/ui-workshop"
    assert "ui-cancelled" not in upcoming.inner_text()
    shots(page, "dashboard")


def test_complete_a_task_with_the_checkbox_from_the_keyboard(
    local: Serve, session: BrowserContext
) -> None:
    """The overdue task is marked; Tab to its checkbox, Space, and it leaves the list (done)."""
    page = session.new_page()
    _log_in(page, local)
    (task,) = httpx.get(
        local.url + "/api/tasks", params={"bookingId": "ui-consult"}, headers=ADMIN
    ).json()
    item = page.locator("li.task", has=page.locator(f"#done-{task['id']}"))
    assert "overdue" in (item.get_attribute("class") or "")
    assert "overdue" in item.inner_text()
    assert "high" in item.inner_text()
    checkbox = page.get_by_role("checkbox", name=f"Mark done: {task['title']}")
    for _ in range(80):
        if checkbox.evaluate("box => box === document.activeElement"):
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail("the task's checkbox is not reachable with Tab")
    page.keyboard.press("Space")
    page.get_by_role("status").wait_for()
    assert page.get_by_role("status").inner_text() == f"Marked “{task['title']}” done."
    assert page.locator(f"#done-{task['id']}").count() == 0
    (after,) = httpx.get(
        local.url + "/api/tasks", params={"bookingId": "ui-consult"}, headers=ADMIN
    ).json()
    assert after["status"] == "done"


def test_lead_page_shows_bookings_with_outcomes(
    local: Serve, session: BrowserContext, shots: Any
) -> None:
    """The lead's page lists its two bookings: one scheduled with Join, one cancelled."""
    page = session.new_page()
    _log_in(page, local)
    page.get_by_role("link", name="workshop - Scheduled").first.click()
    assert page.get_by_role("heading", level=1).inner_text() == "workshop - Acme AB"
    meetings = page.locator("li.booking")
    assert meetings.count() == 2
    assert "scheduled" in meetings.nth(0).locator(".badge").first.inner_text()
    assert "cancelled" in meetings.nth(1).locator(".badge").first.inner_text()
    assert meetings.nth(1).get_by_role("link", name="Join workshop - Scheduled").count() == 0
    shots(page, "lead")


def _audit(page: Page) -> list[str]:
    """Labels on inputs, one h1, no skipped heading level, named links and buttons, a lang."""
    problems: list[str] = page.evaluate(
        """() => {
        const problems = [];
        if (!document.documentElement.lang) problems.push("no lang on <html>");
        const h1 = document.querySelectorAll("h1").length;
        if (h1 !== 1) problems.push(`${h1} h1 elements`);
        let last = 0;
        for (const h of document.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
            const level = Number(h.tagName[1]);
            if (level > last + 1) problems.push(`heading jumps to ${h.tagName}: ${h.textContent}`);
            last = level;
        }
        for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
            const named = (el.labels && el.labels.length) || el.getAttribute("aria-label")
                || el.getAttribute("aria-labelledby");
            if (!named) problems.push(`no label: ${el.outerHTML}`);
        }
        for (const el of document.querySelectorAll("a[href], button")) {
            if (!el.textContent.trim() && !el.getAttribute("aria-label"))
                problems.push(`no name: ${el.outerHTML}`);
        }
        return problems;
    }"""
    )
    return problems


def _unreachable_by_tab(page: Page) -> list[str]:
    """Visible links, buttons and inputs that Tab never reaches from the top of the page."""
    total: int = page.evaluate(
        """() => {
        const controls = [...document.querySelectorAll(
            "a[href], button, input:not([type=hidden]), select, textarea")]
            .filter(el => el.checkVisibility());
        controls.forEach((el, i) => el.dataset.a11yIndex = String(i));
        document.activeElement && document.activeElement.blur();
        return controls.length;
    }"""
    )
    seen: set[str] = set()
    for _ in range(total * 2 + 5):
        page.keyboard.press("Tab")
        index = page.evaluate("() => document.activeElement.dataset.a11yIndex || ''")
        if index:
            seen.add(index)
    return page.evaluate(
        """seen => [...document.querySelectorAll("[data-a11y-index]")]
            .filter(el => !seen.includes(el.dataset.a11yIndex)).map(el => el.outerHTML)""",
        sorted(seen),
    )


def test_accessibility_basics_on_every_page(local: Serve, browser: Browser) -> None:
    """Each page: labelled inputs, sound headings, named controls, every control reachable by
    Tab, the skip link first, and a visible focus outline."""
    anonymous = _context(browser)
    try:
        page = anonymous.new_page()
        page.goto(local.url + "/ui/login")
        assert _audit(page) == []
        assert _unreachable_by_tab(page) == []
    finally:
        anonymous.close()
    context = _context(browser)
    try:
        page = context.new_page()
        _log_in(page, local)
        lead_href = page.get_by_role("link", name="workshop - Scheduled").first.get_attribute(
            "href"
        )
        for path in ("/ui", "/ui/leads", lead_href, "/ui/sync", "/ui/import"):
            page.goto(local.url + str(path))
            page.keyboard.press("Tab")
            first = page.evaluate("() => document.activeElement.textContent.trim()")
            assert first == "Skip to content", path
            page.keyboard.press("Tab")
            outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), path
            assert _audit(page) == [], path
            assert _unreachable_by_tab(page) == [], path
    finally:
        context.close()


def test_the_pages_fit_a_phone(local: Serve, browser: Browser, shots: Any) -> None:
    """At 390 px wide nothing scrolls sideways, and the controls stay usable."""
    context = _context(browser, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        _log_in(page, local)
        for path, name in (("/ui", "dashboard-phone"), ("/ui/sync", "sync-phone")):
            page.goto(local.url + path)
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, path
            shots(page, name)
        button = page.get_by_role("button", name="Replay booking ui-unknown")
        box = button.bounding_box()
        assert box is not None
        assert box["height"] >= 40  # a thumb-sized target
    finally:
        context.close()


# --- HubSpot: a dead event, its cause fixed, replayed from the dashboard -------------


@pytest.fixture(scope="module")
def hubspot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, FakeHubSpot, Any]]:
    """serve on the HubSpot backend against a fake portal that ``hubspot setup`` never ran on."""
    workdir = tmp_path_factory.mktemp("hubspot")
    with FakeHubSpot(rate_limit=None, search_rate_limit=None) as fake:
        env = _env(
            workdir,
            CRM_BACKEND="hubspot",
            HUBSPOT_ACCESS_TOKEN=fake.token or "",
            HUBSPOT_BASE_URL=fake.url,
            HUBSPOT_PORTAL_ID="4242",
        )
        server = Serve(workdir, env)
        try:
            yield server, fake, {**env, "_workdir": str(workdir)}
        finally:
            server.stop()


def test_replay_a_dead_event_after_fixing_its_cause(
    hubspot: tuple[Serve, FakeHubSpot, Any], session: BrowserContext, shots: Any
) -> None:
    """HubSpot refuses the booking (custom properties missing): dead, with the reason shown.
    After `bookme-crm hubspot setup`, Replay syncs it and its HubSpot records become links."""
    server, fake, env = hubspot
    answer = _post(server, bookingId="hs-1", company="Acme AB", name="Ada Lovelace")
    deadline = time.monotonic() + 30
    while (
        httpx.get(f"{server.url}/admin/outbox/{answer['eventId']}", headers=ADMIN).json()["status"]
        != "dead"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    page = session.new_page()
    _log_in(page, server)
    assert "not available with CRM_BACKEND=hubspot" in page.locator("main").inner_text()
    page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Sync health").click()
    dead = page.locator("#dead-list li")
    assert dead.count() == 1
    assert "not a unique identifier property" in dead.inner_text()
    assert page.locator('dd[data-state="dead"]').inner_text() == "1"
    shots(page, "sync-dead")

    workdir = env.pop("_workdir")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "ADMIN_"))}
    setup = subprocess.run(
        [str(BIN), "hubspot", "setup"],
        cwd=workdir,
        env={**base, "MAPPINGS_PATH": str(DEFAULT_MAPPING), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr

    page.get_by_role("button", name="Replay booking hs-1").click()
    status = page.get_by_role("status")
    assert status.inner_text() == f"Replayed event {answer['eventId']} (booking hs-1): now synced."
    assert page.get_by_text("No dead events.").is_visible()
    assert page.locator('dd[data-state="synced"]').inner_text() == "1"
    (contact,) = fake.objects("contacts")
    link = page.get_by_role("link", name=f"contact {contact['id']}")
    assert (
        link.get_attribute("href")
        == f"https://app.hubspot.com/contacts/4242/record/0-1/{contact['id']}"
    )
    (deal,) = fake.objects("deals")
    assert page.get_by_role("link", name=f"deal {deal['id']}").get_attribute("href", timeout=1000)
    shots(page, "sync-hubspot")
    audit = httpx.get(f"{server.url}/admin/outbox/{answer['eventId']}", headers=ADMIN).json()
    assert [(r["actor"], r["fromState"]) for r in audit["replays"]] == [("dashboard", "dead")]


@pytest.fixture(scope="module")
def owned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """serve on the local CRM with an owners mapping: workshops are Zed's, the rest rotate."""
    workdir = tmp_path_factory.mktemp("owned")
    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    text = text.replace(
        "\ndefaults:\n", "\ndefaults:\n  owner:\n    round_robin: [ada@example.com]\n", 1
    )
    text = text.replace(
        "\n  workshop:\n", "\n  workshop:\n    owner:\n      email: zed@example.com\n"
    )
    mapping = workdir / "owners.yaml"
    mapping.write_text(text, encoding="utf-8")
    server = Serve(workdir, _env(workdir, MAPPINGS_PATH=str(mapping)))
    try:
        _post(server, bookingId="own-w", email="kim@example.com", scheduledDate=_at(days=10))
        _post(
            server,
            bookingId="own-c",
            eventType="30min-consultation",
            email="lo@example.com",
            scheduledDate=_at(days=2),
        )
        yield server
    finally:
        server.stop()


def test_my_tasks_by_keyboard(owned: Serve, browser: Browser, shots: Any) -> None:
    """The owner filter is labelled and reachable by Tab; choosing an owner by keyboard
    lists only their action items, and the page stays accessible."""
    context = _context(browser)
    try:
        page = context.new_page()
        _log_in(page, owned)
        tasks = page.locator("#tasks li.task")
        assert tasks.count() == 3
        assert _audit(page) == []
        assert _unreachable_by_tab(page) == []
        page.get_by_label("Owner").focus()
        page.get_by_label("Owner").select_option("zed@example.com")
        with page.expect_navigation():
            page.get_by_role("button", name="Show").press("Enter")
        assert "owner=zed%40example.com" in page.url
        assert tasks.count() == 2
        assert all("zed@example.com" in text for text in tasks.all_inner_texts())
        assert _audit(page) == []
        shots(page, "dashboard-my-tasks")
    finally:
        context.close()
