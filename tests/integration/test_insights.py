"""Insights over a known history built through the real webhook: exact figures, the API's
JSON and CSV, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, insert, select

from adapter.insights.compute import build_report, sync_stats
from adapter.insights.days import DayFigures
from adapter.insights.report import Filters, Report, to_json
from adapter.settings import Settings
from tests.conftest import WEBHOOK_SECRET, seed_booking

URL = "/api/bookings/incoming"
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class History:
    """What the known history delivered: its clock and starts, for the expected figures."""

    client: TestClient
    engine: Engine
    today: date
    starts: dict[str, datetime]
    received: dict[str, datetime]


WRITTEN = {
    "meeting": ("outcome", "SCHEDULED"),
    "task": ("status", "todo"),
    "deal": ("stage", "CONTACTED"),
}


def _change(
    engine: Engine,
    booking_id: str,
    object_type: str,
    field: str,
    new_value: str,
    changed_at: datetime,
    *,
    task_key: str | None = None,
) -> None:
    """A salesperson's change in the CRM, recorded through issue 16's store: the service
    wrote its value, then the CRM shows another."""
    from adapter.changes.store import observe, record_written

    crm_id = f"crm-{booking_id}-{object_type}-{task_key or ''}"
    written_field, written = WRITTEN[object_type]
    with engine.begin() as conn:
        record_written(
            conn,
            object_type,
            crm_id,
            booking_id=booking_id,
            values={written_field: written},
            task_key=task_key,
            now=changed_at - timedelta(hours=1),
        )
        recorded = observe(
            conn,
            object_type,
            crm_id,
            {field: new_value},
            changed_at=changed_at,
            source="dashboard",
            now=changed_at,
            actor="sales@example.com",
        )
    assert [(c.field, c.new_value) for c in recorded] == [(field, new_value)]


def build_history(client: TestClient, engine: Engine) -> History:
    """Six bookings and their lifecycles, a repeat, an unplaceable one, an invalid one,
    CRM-side progress, a deleted follow-up task and an injected duplicate contact."""
    now = datetime.now(UTC).replace(microsecond=0)
    past = now - timedelta(days=2)
    starts = {
        "b1": past,
        "b2": past - timedelta(days=1),
        "b3": past - timedelta(days=2),
        "b4": past - timedelta(days=3),
        "b5": now + timedelta(days=40),
        "b6": past - timedelta(days=4),
        "q1": now + timedelta(days=10),
        "x1": now + timedelta(days=10),
    }
    kinds = {"b1": "workshop", "b2": "workshop", "b6": "workshop"}

    def body(bid: str, event: str = "booking.created", **extra: Any) -> dict[str, Any]:
        return seed_booking(
            bookingId=bid,
            eventType=extra.pop("eventType", kinds.get(bid, "30min-consultation")),
            email=f"{bid}@example.com",
            name=f"Person {bid}",
            company=f"Company {bid}",
            scheduledDate=_iso(extra.pop("start", starts[bid])),
            duration=60,
            event=event,
            **extra,
        )

    def deliver(payload: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        answer = client.post(URL, json=payload, headers=SECRET)
        assert answer.status_code == expect, answer.text
        return dict(answer.json())

    stamp = iter(range(1, 100))

    def updated() -> str:
        return _iso(now - timedelta(hours=1) + timedelta(seconds=next(stamp)))

    for bid in ("b1", "b2", "b3", "b4", "b5", "b6"):
        deliver(body(bid, updatedAt=updated()))
    deliver(body("b1", updatedAt=_iso(now - timedelta(hours=1) + timedelta(seconds=1))))  # repeat
    deliver(body("b2", "booking.cancelled", cancellationReason="Budget", updatedAt=updated()))
    deliver(body("b3", "booking.no_show", updatedAt=updated()))
    starts["b4"] = starts["b4"] + timedelta(hours=3)
    deliver(body("b4", "booking.rescheduled", updatedAt=updated()))
    deliver(body("q1", eventType="webinar", updatedAt=updated()), expect=202)  # quarantined
    deliver({**body("x1"), "email": "not an email"}, expect=400)

    received = {}
    with engine.connect() as conn:
        from outbox.schema import events

        for key, at in conn.execute(
            select(events.c.key, events.c.received_at).order_by(events.c.seq)
        ):
            received.setdefault(key, at.replace(tzinfo=UTC) if at.tzinfo is None else at)

    b4 = received["b4"]
    _change(engine, "b4", "meeting", "outcome", "COMPLETED", b4 + timedelta(hours=2))
    _change(engine, "b4", "task", "status", "done", b4 + timedelta(hours=3), task_key="summary")
    _change(engine, "b4", "deal", "stage", "WON", b4 + timedelta(days=2))
    _change(engine, "b6", "deal", "stage", "QUALIFIED", received["b6"] + timedelta(hours=30))

    from adapter.backends.local.models import contacts, tasks

    with engine.begin() as conn:
        conn.execute(delete(tasks).where(tasks.c.booking_id == "b6", tasks.c.key == "follow-up"))
        original = conn.execute(select(contacts).where(contacts.c.email_key == "b1@example.com"))
        row = dict(original.one()._mapping)
        conn.execute(
            insert(contacts).values(
                {
                    **row,
                    "id": "dup0000000000000000000000000001",
                    "email_key": "b1@example.com (imported)",
                    "email": " B1@Example.com",
                }
            )
        )
    return History(client, engine, now.date(), starts, received)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def history(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[History]:
    from adapter.api.app import create_app
    from adapter.services import build_services

    overrides = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("pg_url")
    services = build_services(make_settings(**overrides))
    try:
        with TestClient(create_app(services=services, embedded_workers=1)) as client:
            yield build_history(client, services.engine)
    finally:
        services.close()


def _report(history: History, *, days_later: int = 3, event_type: str | None = None) -> Report:
    services = history.client.app.state.services  # type: ignore[attr-defined]
    filters = Filters(history.today, history.today + timedelta(days=1), event_type)
    now = datetime.now(UTC) + timedelta(days=days_later)
    return build_report(services, filters, now=now)


def test_webhook_success_counts_every_authenticated_delivery(history: History) -> None:
    """10 stored events (9 synced, 1 quarantined) and 1 refused at the webhook; the repeat
    counts once; the quarantined event is listed with its id."""
    web = _report(history).webhook
    assert (web.deliveries, web.accepted, web.pending) == (11, 9, 0)
    assert web.refused == {"invalid": 1, "quarantined": 1, "dead": 0}
    assert web.success_rate == pytest.approx(9 / 11)
    assert web.target.met is False
    (day,) = web.days
    assert (day.day, day.deliveries, day.accepted) == (history.today, 11, 9)
    reasons = sorted((e.reason, e.booking_id) for e in web.refused_events)
    assert reasons == [("invalid", None), ("quarantined", "q1")]
    invalid = next(e for e in web.refused_events if e.reason == "invalid")
    assert invalid.detail is not None
    assert "email" in invalid.detail
    assert "not an email" not in invalid.detail  # the value is never kept


@pytest.mark.parametrize("days_later", [0, 3])
def test_sync_time_is_receipt_to_settle_from_the_stored_timestamps(
    history: History, days_later: int
) -> None:
    """Sync time: every synced event, its seconds exactly synced_at - received_at (to the
    ms), whether today is read live (open) or from insights_days (closed, 3 days on)."""
    from outbox.schema import events

    with history.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.received_at, events.c.synced_at).where(events.c.state == "synced")
        ).all()
    seconds = sorted((s - r).total_seconds() for r, s in rows)
    expected = DayFigures(sync_ms=Counter(round(v * 1000) for v in seconds), sync_sum=sum(seconds))
    want = sync_stats(expected)
    sync = _report(history, days_later=days_later).sync
    assert sync.overall.count == 9
    for name in ("p50", "mean", "p95", "p99", "max"):
        assert getattr(sync.overall, name) == pytest.approx(getattr(want, name), abs=0.002)
    assert want.p50 == pytest.approx(seconds[4], abs=0.001)  # nearest rank: the 5th of 9
    assert want.max == pytest.approx(seconds[-1], abs=0.001)
    assert sync.days[0].stats.count == 9
    assert sync.target.met is True  # a local CRM write takes milliseconds
    web = _report(history, days_later=days_later).webhook
    assert (web.deliveries, web.accepted) == (11, 9)


def test_duplicates_finds_the_injected_contact(history: History) -> None:
    """The injected contact (same email, other case and space) is the one duplicate."""
    dups = _report(history).duplicates
    assert dups.count == 1
    assert dups.per_rule == {"contacts": 1, "companies": 0, "leads": 0, "meetings": 0, "tasks": 0}
    (group,) = dups.groups
    assert group.key == "b1@example.com"
    assert len(group.record_ids) == 2
    assert dups.target.met is False
    assert dups.checked_at is not None


def test_follow_ups_lists_the_deleted_task(history: History) -> None:
    """Expected tasks (skip_if_past ones aside) exist for all but b6, whose follow-up is gone."""
    fol = _report(history).follow_ups
    per_type = {r.event_type: (r.bookings, r.complete, r.expected_keys) for r in fol.per_event_type}
    assert per_type == {
        "30min-consultation": (3, 3, ("no-show-reach-out", "summary")),
        "workshop": (3, 2, ("follow-up",)),
    }
    assert (fol.bookings, fol.complete) == (6, 5)
    assert [(m.booking_id, m.missing_keys) for m in fol.missing] == [("b6", ("follow-up",))]
    assert fol.target.met is False


def test_response_time_from_receipt_to_first_sales_action(history: History) -> None:
    """b4 answered in 2 h (its meeting completed), b6 in 30 h (a stage change); the five
    others unanswered after 24 h."""
    response = _report(history).response
    overall = response.overall
    assert (overall.bookings, overall.answered, overall.under_24h) == (7, 2, 1)
    assert overall.median == pytest.approx(16 * 3600, abs=1)
    assert overall.share_under_24h == pytest.approx(1 / 7)
    assert response.target.met is True
    assert [o.owner for o in response.per_owner] == [""]
    young = _report(history, days_later=0).response.overall
    assert (young.bookings, young.answered) == (2, 2)  # the unanswered are under 24 h old


def test_funnel_by_month_and_event_type(history: History) -> None:
    """Workshop: 3 booked, 2 held (b2 cancelled), 1 consultation (b6 qualified), 0 won;
    consultation: 3 booked, 1 held (b3 no-show, b5 ahead), 1 consultation, 1 won (2 days)."""
    fun = _report(history).funnel
    month = history.today.strftime("%Y-%m")
    rows = {r.event_type: r for r in fun.rows}
    assert {k: (r.month, r.bookings, r.held, r.consultations, r.won) for k, r in rows.items()} == {
        "30min-consultation": (month, 3, 1, 1, 1),
        "webinar": (month, 1, 0, 0, 0),
        "workshop": (month, 3, 2, 1, 0),
    }
    consult = rows["30min-consultation"]
    assert consult.conversion == {"held": 1 / 3, "consultations": 1.0, "won": 1.0}
    assert consult.median_days_to_won == pytest.approx(2.0, abs=0.01)
    assert rows["workshop"].conversion == {"held": 2 / 3, "consultations": 0.5, "won": 0.0}
    totals = fun.totals
    assert (totals.bookings, totals.held, totals.consultations, totals.won) == (7, 3, 2, 1)
    only = _report(history, event_type="workshop").funnel
    assert [r.event_type for r in only.rows] == ["workshop"]


def test_cancellations_per_event_type_and_weekday(history: History) -> None:
    """b2 cancelled and b3 a no-show, each on its meeting's weekday."""
    can = _report(history).cancellations
    assert (can.bookings, can.cancelled, can.no_show) == (7, 1, 1)
    by_key = {(r.event_type, r.weekday): (r.cancelled, r.no_show) for r in can.rows}
    assert by_key[("workshop", WEEKDAYS[history.starts["b2"].weekday()])][0] == 1
    assert by_key[("30min-consultation", WEEKDAYS[history.starts["b3"].weekday()])][1] == 1
    assert sum(r.bookings for r in can.rows) == 7


def test_api_json_and_csv(history: History, admin: dict[str, str]) -> None:
    """The API answers the report as JSON and each metric as CSV, behind the admin token."""
    client = history.client
    day = history.today.isoformat()
    assert client.get("/api/insights").status_code == 401
    answer = client.get("/api/insights", params={"from": day, "to": day}, headers=admin)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["filters"] == {
        "start": day,
        "end": (history.today + timedelta(days=1)).isoformat(),
        "eventType": None,
    }
    assert data["webhook"]["refused"] == {"invalid": 1, "quarantined": 1, "dead": 0}
    assert data["webhook"]["successRate"] == pytest.approx(9 / 11)
    assert data["duplicates"]["count"] == 1
    assert data["followUps"]["missing"][0]["bookingId"] == "b6"
    assert set(data) >= {"sync", "response", "funnel", "cancellations", "timings"}
    assert "definition" in data["funnel"]
    assert data["webhook"]["target"]["text"] == "> 99 %"

    funnel_csv = client.get(
        "/api/insights.csv", params={"metric": "funnel", "from": day, "to": day}, headers=admin
    )
    assert funnel_csv.status_code == 200
    assert funnel_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(funnel_csv.text)))
    workshop = next(r for r in rows if r["event_type"] == "workshop")
    assert (workshop["bookings"], workshop["held"], workshop["consultations"]) == ("3", "2", "1")
    assert rows[-1]["month"] == "(all)"
    assert rows[-1]["bookings"] == "7"
    webhook_csv = client.get(
        "/api/insights",
        params={"format": "csv", "metric": "webhook", "from": day, "to": day},
        headers=admin,
    )
    (line,) = list(csv.DictReader(io.StringIO(webhook_csv.text)))
    assert (line["deliveries"], line["invalid"], line["quarantined"]) == ("11", "1", "1")
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/insights", "/api/insights.csv"} <= set(paths)
    params = {p["name"] for p in paths["/api/insights"]["get"]["parameters"]}
    assert {"from", "to", "eventType", "format", "metric"} <= params


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"to": "yesterday"}, "to"),
        ({"from": "2026-05-02", "to": "2026-05-01"}, "from"),
        ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),
        ({"eventType": "x" * 201}, "eventType"),
        ({"metric": "nope", "format": "csv"}, "metric"),
    ],
)
def test_api_refuses_bad_parameters_naming_the_field(
    client: TestClient, admin: dict[str, str], params: dict[str, str], field: str
) -> None:
    """A bad parameter is a 400 naming it, never a 500."""
    answer = client.get("/api/insights", params=params, headers=admin)
    assert answer.status_code == 400, answer.text
    assert [d["field"] for d in answer.json()["details"]] == [field]


def test_report_json_round_trips(history: History) -> None:
    """to_json gives plain JSON data: camelCase fields, ISO dates."""
    data = to_json(_report(history))
    assert data["funnel"]["totals"]["bookings"] == 7
    assert data["webhook"]["days"][0]["day"] == history.today.isoformat()


def test_cli_prints_the_figures_and_the_json(
    history: History, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """``bookme-crm insights`` prints the headline figures, ``--json`` the API's JSON;
    a bad date exits 2 naming the option."""
    from typer.testing import CliRunner

    from adapter.cli import app

    services = history.client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setenv("DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("MAPPINGS_PATH", str(services.settings.mappings_path))
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "cli-var"))
    runner = CliRunner()
    day = history.today.isoformat()
    printed = runner.invoke(app, ["insights", "--from", day, "--to", day])
    assert printed.exit_code == 0, printed.output
    assert "Webhook success   81.82 %  (9 of 11; refused: invalid 1, quarantined 1, dead 0" in (
        printed.output
    )
    assert "Funnel            7 booked -> 3 held -> 2 consultations -> 1 won" in printed.output
    assert "duplicate contacts 'b1@example.com'" in printed.output
    assert "missing follow-up b6 (workshop): follow-up" in printed.output
    as_json = runner.invoke(
        app, ["insights", "--from", day, "--to", day, "--event-type", "workshop", "--json"]
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)  # stdout alone: the logs go to stderr
    assert data["filters"]["eventType"] == "workshop"
    assert data["funnel"]["totals"]["bookings"] == 3
    bad = runner.invoke(app, ["insights", "--from", "2026-02-30"])
    assert bad.exit_code == 2
    assert "--from: must be a date" in bad.output


def test_authenticated_refusals_are_recorded_without_their_values(client: TestClient) -> None:
    """A 409 (webhook-id reused for another body) and a 415 are recorded as refused
    deliveries with their status and fields; an unauthenticated one is not."""
    from adapter.insights.tables import refusals
    from tests.conftest import sign

    services = client.app.state.services  # type: ignore[attr-defined]
    first = json.dumps(seed_booking(bookingId="r-1")).encode()
    headers = sign(first, msg_id="msg_reused")
    assert client.post(URL, content=first, headers=headers).status_code in (200, 202)
    second = json.dumps(seed_booking(bookingId="r-2", name="Secret Name")).encode()
    assert (
        client.post(URL, content=second, headers=sign(second, msg_id="msg_reused")).status_code
        == 409
    )
    plain = {**SECRET, "content-type": "text/plain"}
    assert client.post(URL, content=b"hello", headers=plain).status_code == 415
    assert (
        client.post(URL, json=seed_booking(), headers={"X-Webhook-Secret": "wrong"}).status_code
        == 401
    )
    with services.engine.connect() as conn:
        rows = conn.execute(select(refusals).order_by(refusals.c.id)).all()
    assert [(r.status, r.webhook_id) for r in rows] == [(409, "msg_reused"), (415, None)]
    assert "webhook-id" in (rows[0].detail or "")
    assert "Secret Name" not in (rows[0].detail or "")
