"""The Insights page in headless Chromium against real ``bookme-crm serve``: it renders under
the dashboard's strict CSP with no violation, its charts are drawn with their targets, the
form works without JavaScript, and a chart's CSV downloads.

The history is delivered through the real webhook; its stored receipt times (and their
sync times, moved alike) are then spread over the last six weeks, as a history that
had come in day after day, and a few sales-staff changes are recorded through issue 16's
change store. The README's screenshot comes from here (``SCREENSHOTS_DIR``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from adapter import db
from adapter.insights.tables import refusals
from outbox.schema import events
from tests.acceptance.test_dashboard_browser import (
    ADMIN,
    HOOK,
    PHONE,
    _audit,
    _context,
    _env,
    _log_in,
    _unreachable_by_tab,
    browser,  # noqa: F401 - the module's Chromium fixture
    shots,  # noqa: F401 - the screenshot fixture
)
from tests.acceptance.test_serve_process import Serve
from tests.conftest import seed_booking
from tests.integration.test_insights_dashboard import crm_change

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

BOOKINGS = 28
SPAN_DAYS = 42
INVALID = (4, 11, 19)  # after these bookings, a delivery without an email (refused, 400)
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@dataclass
class Served:
    server: Serve
    today: date
    first: date
    deliveries: int
    refused: int

    def insights(self, **params: str) -> str:
        query = {"from": self.first.isoformat(), "to": self.today.isoformat(), **params}
        return self.server.url + "/ui/insights?" + "&".join(f"{k}={v}" for k, v in query.items())


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _post(server: Serve, expect: int, **fields: Any) -> None:
    answer = httpx.post(
        server.url + "/api/bookings/incoming",
        json=seed_booking(**fields),
        headers=HOOK,
        timeout=30,
    )
    assert answer.status_code == expect, answer.text


def _move_back(engine: Engine, booking_id: str, delta: timedelta) -> datetime:
    """Shift a booking's stored receipt and sync times back by ``delta``; its first receipt."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(events.c.seq, events.c.received_at, events.c.synced_at).where(
                events.c.key == booking_id
            )
        ).all()
        assert rows, booking_id
        for seq, received, synced in rows:
            conn.execute(
                update(events)
                .where(events.c.seq == seq)
                .values(
                    received_at=received - delta,
                    synced_at=None if synced is None else synced - delta,
                )
            )
    first: datetime = min(received for _, received, _ in rows) - delta
    return first if first.tzinfo else first.replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """serve on the local CRM with six weeks of bookings: workshops and consultations, some
    cancelled or no-show, three deliveries refused, one masterclass quarantined, meetings
    completed and leads won in the CRM."""
    workdir: Path = tmp_path_factory.mktemp("insights")
    server = Serve(workdir, _env(workdir))
    engine = db.make_engine(f"sqlite:///{workdir / 'bookme.db'}")
    now = datetime.now(UTC).replace(microsecond=0)
    deliveries = 0
    try:
        for i in range(BOOKINGS):
            booking_id = f"ins-{i:02d}"
            back = timedelta(days=SPAN_DAYS - i * SPAN_DAYS / BOOKINGS, hours=i % 5)
            start = now - back + timedelta(hours=18)
            common = {
                "bookingId": booking_id,
                "eventType": "workshop" if i % 3 else "30min-consultation",
                "duration": 120 if i % 3 else 30,
                "name": f"Client {i}",
                "email": f"client{i}@example.com",
                "company": f"Company {i % 9}",
                "scheduledDate": _iso(start),
            }
            _post(server, 200, **common, updatedAt=_iso(now - timedelta(minutes=60 - i)))
            deliveries += 1
            ending = {3: "booking.cancelled", 5: "booking.no_show"}.get(i % 7)
            if ending:
                _post(
                    server,
                    200,
                    **common,
                    event=ending,
                    updatedAt=_iso(now - timedelta(minutes=59 - i)),
                )
                deliveries += 1
            received = _move_back(engine, booking_id, back)
            if not ending and start < now:
                if i % 2 == 0:
                    done = start + timedelta(hours=2)
                    crm_change(engine, booking_id, "outcome", "COMPLETED", done)
                if i % 4 == 0:
                    crm_change(engine, booking_id, "stage", "WON", received + timedelta(days=3))
        _post(server, 202, bookingId="ins-master", eventType="masterclass", scheduledDate=_iso(now))
        deliveries += 1
        _move_back(engine, "ins-master", timedelta(days=9))
        for i in INVALID:
            _post(server, 400, bookingId=f"ins-bad-{i}", email=None)
            deliveries += 1
        with engine.begin() as conn:
            ids = conn.execute(select(refusals.c.id).order_by(refusals.c.id)).scalars().all()
            assert len(ids) == len(INVALID)
            for refusal, i in zip(ids, INVALID, strict=True):
                back = timedelta(days=SPAN_DAYS - i * SPAN_DAYS / BOOKINGS)
                conn.execute(
                    update(refusals).where(refusals.c.id == refusal).values(received_at=now - back)
                )
        yield Served(
            server,
            today=now.date(),
            first=(now - timedelta(days=SPAN_DAYS)).date(),
            deliveries=deliveries,
            refused=len(INVALID) + 1,
        )
    finally:
        engine.dispose()
        server.stop()


def _watch(page: Page) -> list[str]:
    """Console errors and CSP violations seen by the page (a favicon 404 aside)."""
    problems: list[str] = []
    page.add_init_script(CSP_WATCH)
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "favicon" not in (m.location or {}).get("url", "")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def _violations(page: Page) -> list[str]:
    found: list[str] = page.evaluate("() => window.__csp || []")
    return found


def test_the_page_renders_its_charts_under_the_strict_csp(
    served: Served,
    browser: Browser,  # noqa: F811
    shots: Any,  # noqa: F811
) -> None:
    """From the nav: no CSP violation and no console error; every chart is drawn at a real
    size with its target line; the tiles say met / not met; the numbers behind a chart
    open from the keyboard and equal its marks."""
    context = _context(browser)
    try:
        page = context.new_page()
        problems = _watch(page)
        _log_in(page, served.server)
        page.get_by_role("link", name="Insights").click()
        assert page.get_by_role("heading", level=1).inner_text() == "Insights"
        page.goto(served.insights())
        assert (
            page.locator("#period")
            .inner_text()
            .startswith(f"{served.first.isoformat()} to {served.today.isoformat()}")
        )

        svgs = page.locator("svg.chart-svg")
        assert svgs.count() == 8
        for index in range(svgs.count()):
            box = svgs.nth(index).bounding_box()
            assert box is not None
            assert box["width"] > 300
            assert box["height"] > 100
        targets = page.locator("svg.chart-svg g.target line")
        assert targets.count() == 4
        for index in range(targets.count()):
            box = targets.nth(index).bounding_box()
            assert box is not None
            assert box["width"] > 300
        # Drawn by the page's own stylesheet: the tiles' colours come from app.css.
        webhook = page.locator("#tile-webhook")
        assert webhook.get_attribute("data-state") == "not-met"
        assert "not met" in webhook.inner_text()
        colour = webhook.evaluate("el => getComputedStyle(el).borderLeftColor")
        assert colour == "rgb(179, 38, 30)"
        assert page.locator("#tile-sync").get_attribute("data-state") == "met"
        success = (served.deliveries - served.refused) / served.deliveries * 100
        shown = webhook.locator(".tile-value").get_attribute("data-value")
        assert float(shown or "nan") == pytest.approx(success, abs=0.01)

        funnel = page.locator("#funnel")
        summary = funnel.locator("summary")
        summary.focus()
        page.keyboard.press("Enter")
        table = funnel.locator("table")
        assert table.is_visible()
        cells = table.locator("td[data-value]").evaluate_all(
            "tds => tds.map(td => [td.closest('tr').querySelector('th').textContent, "
            "td.dataset.series, Number(td.dataset.value)])"
        )
        marks = funnel.locator("svg .mark").evaluate_all(
            "ms => ms.map(m => [m.dataset.category, m.dataset.series, Number(m.dataset.value)])"
        )
        drawn = {(c, s): v for c, s, v in marks}
        assert drawn
        assert all(drawn[(c, s)] == v for c, s, v in cells if (c, s) in drawn)
        assert table.locator("tr", has=page.locator("th", has_text="All")).count() == 1

        assert _violations(page) == []
        assert problems == []
        page.keyboard.press("Enter")  # close the table again for the picture
        page.evaluate("() => document.activeElement.blur()")
        shots(page, "insights")
    finally:
        context.close()


def test_the_form_works_without_javascript(
    served: Served,
    browser: Browser,  # noqa: F811
) -> None:
    """JavaScript off: choose an event type and a period, submit, and the page shows them."""
    context = _context(browser, java_script_enabled=False)
    try:
        page = context.new_page()
        _log_in(page, served.server)
        page.goto(served.server.url + "/ui/insights")
        page.get_by_label("From", exact=True).fill(served.first.isoformat())
        page.get_by_label("Event type", exact=True).select_option("workshop")
        with page.expect_navigation():
            page.get_by_role("button", name="Show").click()
        assert "eventType=workshop" in page.url
        assert f"from={served.first.isoformat()}" in page.url
        assert "event type workshop" in " ".join(page.locator("#period").inner_text().split())
        assert page.get_by_label("Event type", exact=True).input_value() == "workshop"
        links = page.locator("a.csv").evaluate_all("as => as.map(a => a.href)")
        assert links
        assert all("eventType=workshop" in link for link in links)
    finally:
        context.close()


def test_a_charts_csv_downloads_the_apis_table(
    served: Served,
    browser: Browser,  # noqa: F811
) -> None:
    """ "Download CSV" under the funnel saves the same CSV as GET /api/insights.csv."""
    context = _context(browser, accept_downloads=True)
    try:
        page = context.new_page()
        _log_in(page, served.server)
        page.goto(served.insights())
        with page.expect_download() as caught:
            page.get_by_role("link", name="Download CSV of Funnel by booking month").click()
        download = caught.value
        assert download.suggested_filename.startswith("insights-funnel-")
        saved = Path(download.path()).read_bytes().decode()
        api = httpx.get(
            served.server.url + "/api/insights.csv",
            params={
                "metric": "funnel",
                "from": served.first.isoformat(),
                "to": served.today.isoformat(),
            },
            headers=ADMIN,
            timeout=30,
        )
        assert api.status_code == 200
        assert saved == api.text
        assert saved.splitlines()[-1].startswith(f"(all),(all),{BOOKINGS + 1},")
    finally:
        context.close()


def test_the_page_is_accessible_and_fits_a_phone(
    served: Served,
    browser: Browser,  # noqa: F811
) -> None:
    """Labelled fields, sound headings, named links, every control reachable by Tab; at
    390 px nothing scrolls sideways (the charts scale down)."""
    context = _context(browser)
    try:
        page = context.new_page()
        _log_in(page, served.server)
        page.goto(served.insights())
        assert _audit(page) == []
        assert _unreachable_by_tab(page) == []
    finally:
        context.close()
    phone = _context(browser, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        problems = _watch(page)
        _log_in(page, served.server)
        page.goto(served.insights())
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        box = page.locator("#sync-time svg").bounding_box()
        assert box is not None
        assert box["width"] <= PHONE["width"]
        assert _violations(page) == []
        assert problems == []
    finally:
        phone.close()
