"""The dashboard's Insights page over HTTP (TestClient) on a history delivered through the
real webhook: exact figures, targets, definitions, the form, and the CSV downloads."""

from __future__ import annotations

import dataclasses
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import Engine

from adapter.backends.hubspot import HubSpotBackend, run_setup
from adapter.changes.store import observe, record_written
from adapter.insights import definitions
from adapter.insights.report import DuplicateGroup, MissingFollowUp, RefusedEvent
from adapter.mapping import load_mapping
from adapter.services import Services, build_services
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, DEFAULT_MAPPING, WEBHOOK_SECRET, seed_booking
from tests.fakes.hubspot import FakeHubSpot
from tests.integration.test_dashboard import _client, log_in
from tests.unit.insights_sample import sample_report

HOOK = {"X-Webhook-Secret": WEBHOOK_SECRET}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DEFINITIONS = (
    definitions.WEBHOOK,
    definitions.SYNC,
    definitions.DUPLICATES,
    definitions.FOLLOW_UPS,
    definitions.RESPONSE,
    definitions.FUNNEL,
    definitions.CANCELLATIONS,
)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class History:
    client: TestClient
    past_weekday: str  # the UTC weekday of the meetings that already took place
    quarantined_event: str


def _deliver(client: TestClient, expect: int = 200, **fields: Any) -> dict[str, Any]:
    answer = client.post("/api/bookings/incoming", json=seed_booking(**fields), headers=HOOK)
    assert answer.status_code == expect, answer.text
    body: dict[str, Any] = answer.json()
    return body


WRITTEN = {"meeting": ("outcome", "SCHEDULED"), "deal": ("stage", "CONTACTED")}


def crm_change(engine: Engine, booking_id: str, field: str, value: str, at: datetime) -> None:
    """A salesperson's change in the CRM, recorded through issue 16's store: the service
    wrote its own value an hour before, then the CRM shows another."""
    object_type = "meeting" if field == "outcome" else "deal"
    crm_id = f"crm-{booking_id}-{object_type}"
    written_field, written = WRITTEN[object_type]
    with engine.begin() as conn:
        record_written(
            conn,
            object_type,
            crm_id,
            booking_id=booking_id,
            values={written_field: written},
            now=at - timedelta(hours=1),
        )
        recorded = observe(
            conn,
            object_type,
            crm_id,
            {field: value},
            changed_at=at,
            source="dashboard",
            now=at,
            actor="sales@example.com",
        )
    assert [(c.field, c.new_value) for c in recorded] == [(field, value)]


@pytest.fixture
def history(services: Services) -> Iterator[History]:
    """Eight authenticated deliveries of five bookings: a workshop held, marked completed and
    won in the CRM; a workshop no-show; an upcoming workshop; a consultation cancelled; a
    masterclass the mapping cannot place (quarantined); and one refused (no email)."""
    now = datetime.now(UTC).replace(microsecond=0)
    past = now.replace(hour=10, minute=0, second=0) - timedelta(days=3)
    future = now.replace(hour=10, minute=0, second=0) + timedelta(days=5)
    stamp = iter(range(100))

    def updated() -> str:
        return _iso(now - timedelta(minutes=30) + timedelta(seconds=next(stamp)))

    with _client(services) as client:
        _deliver(client, bookingId="in-held", scheduledDate=_iso(past), updatedAt=updated())
        for event in ("booking.created", "booking.no_show"):
            _deliver(
                client,
                bookingId="in-noshow",
                email="n@example.com",
                scheduledDate=_iso(past),
                event=event,
                updatedAt=updated(),
            )
        _deliver(
            client,
            bookingId="in-future",
            email="f@example.com",
            scheduledDate=_iso(future),
            updatedAt=updated(),
        )
        for event in ("booking.created", "booking.cancelled"):
            _deliver(
                client,
                bookingId="in-cancel",
                eventType="30min-consultation",
                duration=30,
                email="c@example.com",
                scheduledDate=_iso(past),
                event=event,
                updatedAt=updated(),
            )
        quarantined = _deliver(
            client,
            202,
            bookingId="in-unknown",
            eventType="masterclass",
            email="m@example.com",
            scheduledDate=_iso(future),
        )
        _deliver(client, 400, bookingId="in-bad", email=None, scheduledDate=_iso(future))
        answered = datetime.now(UTC) + timedelta(seconds=1)
        crm_change(services.engine, "in-held", "outcome", "COMPLETED", answered)
        crm_change(services.engine, "in-held", "stage", "WON", answered)
        assert log_in(client).status_code == 303
        yield History(client, past.strftime("%a"), quarantined["eventId"])


def _xml(html: str, pattern: str) -> ET.Element:
    """The first element matching ``pattern`` in the page, parsed (the charts are XML)."""
    match = re.search(pattern, html, re.S)
    assert match, pattern
    return ET.fromstring(match.group(0))  # noqa: S314 - our own page, parsed to check it


def tile(html: str, tile_id: str) -> ET.Element:
    return _xml(html, rf'<section class="tile [^"]*" id="{tile_id}".*?</section>')


def chart_table(html: str, chart_id: str) -> dict[str, dict[str, str]]:
    """Row header -> column header -> shown text, from the table behind a chart."""
    figure = _xml(html, rf'<figure class="chart" id="{chart_id}">.*?</figure>')
    table = figure.find("details/div/table")
    assert table is not None
    heads = [th.text or "" for th in table.iterfind("thead/tr/th")]
    rows = {}
    for row in table.iterfind("tbody/tr"):
        cells = ["".join(cell.itertext()) for cell in row]
        rows[cells[0]] = dict(zip(heads[1:], cells[1:], strict=True))
    return rows


@pytest.mark.parametrize("path", ["/ui/insights", "/ui/insights.csv?metric=funnel"])
def test_insights_need_the_dashboard_login(services: Services, path: str) -> None:
    """Without a session the page and its CSV lead to the login form and show nothing."""
    with _client(services) as client:
        answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/login?next=/ui/insights")


def test_the_page_shows_the_known_historys_figures_against_their_targets(
    history: History,
) -> None:
    """75 % success (6 of 8; 1 invalid, 1 quarantined) is not met; sync, duplicates, follow-ups
    and response time are met; the funnel, cancellations and refusals are exact."""
    page = history.client.get("/ui/insights")
    assert page.status_code == 200
    html = page.text
    today = datetime.now(UTC).date().isoformat()

    webhook = tile(html, "tile-webhook")
    assert webhook.get("data-state") == "not-met"
    value = webhook.find("p[@class='tile-value']")
    assert value is not None
    assert (value.text, value.get("data-value")) == ("75 %", "75.0")
    assert "Target: > 99 % · not met" in "".join(webhook.itertext())
    assert "6 of 8 deliveries accepted; refused: invalid 1, quarantined 1, dead 0" in "".join(
        webhook.itertext()
    )
    for tile_id in ("tile-sync", "tile-duplicates", "tile-follow-ups", "tile-response"):
        assert tile(html, tile_id).get("data-state") == "met", tile_id
    assert "".join(tile(html, "tile-duplicates").itertext()).count("0") >= 1
    conversion = tile(html, "tile-conversion")
    assert conversion.get("data-state") == "info"
    assert "1 won of 1 consultations and 5 bookings." in "".join(conversion.itertext())

    assert chart_table(html, "webhook-rate")[today] == {"Success rate": "75 %"}
    deliveries = chart_table(html, "webhook-deliveries")[today]
    assert deliveries == {"Accepted": "6", "Refused": "2", "Pending": "0"}
    funnel = chart_table(html, "funnel")
    assert {k: funnel["All"][k] for k in ("Bookings", "Meetings held", "Consultations", "Won")} == {
        "Bookings": "5",
        "Meetings held": "1",
        "Consultations": "1",
        "Won": "1",
    }
    assert funnel["All"]["Bookings → Meetings held (%)"] == "20 %"
    weekday = chart_table(html, "cancellations-weekday")
    assert weekday[history.past_weekday] == {"Cancelled": "1", "No-shows": "1"}
    by_type = chart_table(html, "cancellations-type")
    assert by_type["workshop"] == {"Cancelled": "0", "No-shows": "1"}
    assert by_type["30min-consultation"] == {"Cancelled": "1", "No-shows": "0"}
    assert chart_table(html, "follow-ups")["workshop"] == {"Scheduled": "100 %"}

    refused = _xml(html, r'<table id="refused-events">.*?</table>')
    text = " ".join("".join(row.itertext()) for row in refused.iterfind("tbody/tr"))
    assert "email: is required" in text
    assert f'href="/ui/sync#event-{history.quarantined_event}"' in html


def test_every_definition_and_target_is_on_the_page(history: History) -> None:
    """Each metric's definition is written out; each target is drawn on its chart."""
    html = history.client.get("/ui/insights").text
    for definition in DEFINITIONS:
        assert str(escape(definition)) in html, definition[:40]
    for chart_id, target in (
        ("webhook-rate", "99.0"),
        ("sync-time", "2.0"),
        ("follow-ups", "100.0"),
        ("response-owners", "24.0"),
    ):
        figure = _xml(html, rf'<figure class="chart" id="{chart_id}">.*?</figure>')
        lines = [g for g in figure.iter("{http://www.w3.org/2000/svg}g") if g.get("class")]
        assert [g.get("data-value") for g in lines if g.get("class") == "target"] == [target]


def test_the_page_is_safe_under_the_dashboards_csp(history: History) -> None:
    """The strict CSP is sent; the page has no inline script, style element or attribute."""
    page = history.client.get("/ui/insights")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    html = page.text
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/ui/static/app.js" defer>']
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)
    assert '<a href="/ui/insights" aria-current="page">Insights</a>' in html


def test_the_event_type_narrows_every_figure(history: History) -> None:
    """eventType=workshop: three bookings, the option selected, the CSV links keep it."""
    page = history.client.get("/ui/insights", params={"eventType": "workshop"})
    assert page.status_code == 200
    html = page.text
    assert chart_table(html, "funnel")["All"]["Bookings"] == "3"
    assert '<option value="workshop" selected>workshop</option>' in html
    links = re.findall(r'href="(/ui/insights\.csv\?[^"]+)"', html)
    assert links
    assert all("eventType=workshop" in link for link in links)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "2026-13-01"}, "from", "must be a date, YYYY-MM-DD"),
        ({"to": "yesterday"}, "to", "must be a date, YYYY-MM-DD"),
        ({"from": "2026-11-20", "to": "2026-11-10"}, "from", "must not be after to"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "from", "the period must be at most 366 days"),
        ({"eventType": "x" * 201}, "eventType", "must be at most 200 characters"),
    ],
)
def test_a_bad_field_is_a_400_that_names_it_and_keeps_the_form(
    history: History, params: dict[str, str], field: str, message: str
) -> None:
    """Never a 500: the page answers 400 with the field and the reason, and the form again."""
    page = history.client.get("/ui/insights", params=params)
    assert page.status_code == 400
    assert f'<p class="error" role="alert" id="query-error">{field}: {message}' in page.text
    assert 'aria-invalid="true"' in page.text
    assert '<form method="get" action="/ui/insights"' in page.text
    csv = history.client.get("/ui/insights.csv", params={"metric": "funnel", **params})
    assert csv.status_code == 400
    assert csv.text.startswith(f"{field}: {message}")


def test_each_csv_link_serves_the_apis_csv_for_that_metric(history: History) -> None:
    """Every chart's download equals GET /api/insights.csv (admin token) byte for byte."""
    html = history.client.get("/ui/insights", params={"from": "2026-11-01"}).text
    links = sorted(set(re.findall(r'href="(/ui/insights\.csv\?[^"]+)"', html)))
    metrics = {parse_qs(urlsplit(link.replace("&amp;", "&")).query)["metric"][0] for link in links}
    assert metrics == {"webhook", "sync", "funnel", "cancellations", "followUps", "response"}
    for link in links:
        url = link.replace("&amp;", "&")
        ours = history.client.get(url)
        assert ours.status_code == 200, url
        assert ours.headers["content-type"] == "text/csv; charset=utf-8"
        assert ours.headers["content-disposition"].startswith('attachment; filename="insights-')
        assert ours.headers["content-security-policy"]
        query = urlsplit(url).query
        api = history.client.get(f"/api/insights.csv?{query}", headers=ADMIN)
        assert api.status_code == 200, api.text
        assert ours.text == api.text, url
    funnel = history.client.get("/ui/insights.csv?metric=funnel").text.splitlines()
    assert funnel[0].startswith("month,event_type,bookings,held,consultations,won")
    assert funnel[-1].startswith("(all),(all),5,1,1,1,")


def test_an_unknown_metric_is_refused_by_name(history: History) -> None:
    """A CSV of something that is not a metric: 400 naming ``metric`` and the known ones."""
    answer = history.client.get("/ui/insights.csv", params={"metric": "secrets"})
    assert answer.status_code == 400
    assert answer.text.startswith("metric: must be one of webhook, refused, sync")


def test_the_page_reads_a_hubspot_portal_too(
    fake: FakeHubSpot, make_settings: Callable[..., Settings]
) -> None:
    """On the HubSpot backend the page shows the same figures; the duplicate check, read back
    from the portal in the background, is "nothing to judge yet" until it has run, then 0
    and met, with the time it ran."""
    services = build_services(
        make_settings(
            crm_backend="hubspot", hubspot_access_token=fake.token, hubspot_base_url=fake.url
        )
    )
    try:
        assert isinstance(services.backend, HubSpotBackend)
        assert run_setup(services.backend.api, load_mapping(DEFAULT_MAPPING)).ok
        with _client(services) as client:
            _deliver(client, bookingId="hs-1", email="hs1@example.com")
            _deliver(
                client, bookingId="hs-2", email="hs2@example.com", eventType="30min-consultation"
            )
            assert log_in(client).status_code == 303
            first = client.get("/ui/insights")
            assert first.status_code == 200, first.text
            pending = tile(first.text, "tile-duplicates")
            assert pending.get("data-state") == "no-data"
            assert "Not checked yet." in "".join(pending.itertext())
            deadline = time.monotonic() + 20
            while True:  # the check runs in the background, through the API's budget
                page = client.get("/ui/insights")
                html = page.text
                if tile(html, "tile-duplicates").get("data-state") != "no-data":
                    break
                assert time.monotonic() < deadline, "the HubSpot duplicate check never ran"
                time.sleep(0.2)
    finally:
        services.close()
    assert page.status_code == 200, page.text
    duplicates = tile(html, "tile-duplicates")
    assert duplicates.get("data-state") == "met"
    assert "UTC on the hubspot CRM." in "".join(duplicates.itertext())
    assert tile(html, "tile-webhook").get("data-state") == "met"
    assert chart_table(html, "funnel")["All"]["Bookings"] == "2"


def test_long_lists_show_ten_rows_and_link_the_rest_as_csv(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report with 25 refused deliveries, missing follow-ups and duplicate groups: ten of
    each on the page, the rest behind a link to the list's CSV."""
    from adapter.ui import insights as page_module

    report = sample_report()
    when = datetime(2026, 10, 2, 8, 0, tzinfo=UTC)
    many = dataclasses.replace(
        report,
        webhook=dataclasses.replace(
            report.webhook,
            refused_events=tuple(
                RefusedEvent("invalid", when, None, f"bk-{n}", "email: is required")
                for n in range(25)
            ),
        ),
        follow_ups=dataclasses.replace(
            report.follow_ups,
            missing=tuple(MissingFollowUp(f"bk-{n}", "workshop", ("prep",)) for n in range(25)),
        ),
        duplicates=dataclasses.replace(
            report.duplicates,
            groups=tuple(
                DuplicateGroup("contacts", f"p{n}@example.com", (f"c{n}", f"d{n}"))
                for n in range(25)
            ),
        ),
    )
    monkeypatch.setattr(page_module, "_report", lambda _services, _query: many)
    with _client(services) as client:
        assert log_in(client).status_code == 303
        html = client.get("/ui/insights").text
    refused = _xml(html, r'<table id="refused-events">.*?</table>')
    assert len(refused.findall("tbody/tr")) == 10
    missing = _xml(html, r'<ul class="list" id="missing-follow-ups">.*?</ul>')
    assert len(missing.findall("li")) == 10
    groups = _xml(html, r'<table id="duplicate-groups">.*?</table>')
    assert len(groups.findall("tbody/tr")) == 10
    for metric in ("refused", "missingFollowUps", "duplicates"):
        assert re.search(
            rf'href="/ui/insights\.csv\?metric={metric}&amp;from=[-0-9]+&amp;to=', html
        )
    assert "the newest 25 are in" in html
