"""HubSpotBackend against the fake HubSpot over real sockets, asserted on the fake's final state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from adapter import db
from adapter.backends.base import SyncJob, SyncResult
from adapter.backends.hubspot import (
    HubSpotApi,
    HubSpotBackend,
    RollingWindow,
    build_api,
    run_setup,
)
from adapter.backends.hubspot.backend import SYNC_CALLS
from adapter.booking import parse_booking
from adapter.errors import AdapterError, CrmValidationError, MappingError, RetryableError
from adapter.ingest import accept_booking
from adapter.mapping import MappingConfig, load_mapping, load_mapping_text, plan_booking
from adapter.settings import Settings
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, seed_booking
from tests.fakes.hubspot import FakeHubSpot

NOW = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    """A settable clock for the backend (search-lag window)."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Harness:
    """The fake, the backend on a real SQLite file, and what was settled."""

    fake: FakeHubSpot
    api: HubSpotApi
    backend: HubSpotBackend
    mapping: MappingConfig
    clock: Clock
    sleeps: list[float]
    settled: dict[str, SyncResult] = field(default_factory=dict)
    events: int = 0

    def sync(self, **booking: Any) -> tuple[SyncResult | None, AdapterError | None]:
        """Plan ``booking`` (the seed's fields overridden) and apply it as one job."""
        plan = plan_booking(parse_booking(seed_booking(**booking)), self.mapping, now=NOW)
        self.events += 1
        event_id = f"evt-{self.events}"
        job = SyncJob(event_id, plan.booking_id, "lease", plan)
        failures = self.backend.apply([job], lambda _conn, job, result: self._settle(job, result))
        return self.settled.get(event_id), failures.get(event_id)

    def _settle(self, job: SyncJob, result: SyncResult) -> None:
        self.settled[job.event_id] = result

    def one(self, object_type: str, **props: Any) -> dict[str, Any]:
        found = self.fake.find(object_type, **props)
        assert len(found) == 1, found
        return found[0]

    def linked(self, from_type: str, from_id: str, to_type: str) -> dict[str, list[int]]:
        return dict(self.fake.associations(from_type, from_id, to_type))


def _budget() -> RollingWindow:
    return RollingWindow(10_000, 10.0, sleep=lambda _s: None)


def _api(fake: FakeHubSpot, sleeps: list[float], *, max_attempts: int = 4) -> HubSpotApi:
    return build_api(
        fake.token or "",
        fake.url,
        (100, 10.0),
        timeout=5.0,
        max_attempts=max_attempts,
        sleep=sleeps.append,
        budget=_budget(),
        search_budget=_budget(),
    )


@pytest.fixture
def hs(fake: FakeHubSpot, engine: Engine) -> Iterator[Harness]:
    """A prepared portal (``hubspot setup`` run) and a backend with a settable clock."""
    sleeps: list[float] = []
    api = _api(fake, sleeps)
    mapping = load_mapping(DEFAULT_MAPPING)
    assert run_setup(api, mapping).ok
    clock = Clock()
    backend = HubSpotBackend(
        api, engine, lambda: mapping.defaults.hubspot, clock=clock, search_lag_seconds=30
    )
    fake.calls.clear()
    api.calls.clear()
    yield Harness(fake, api, backend, mapping, clock, sleeps)
    backend.close()


def test_booking_lands_as_contact_company_deal_meeting_and_tasks(hs: Harness) -> None:
    """One booking becomes one contact, company, deal, meeting and its tasks, all associated."""
    result, error = hs.sync(
        company="Acme AB", phone="+46 70 123", meetingUrl="https://meet.example/x"
    )
    assert error is None
    assert result is not None

    contact = hs.one("contacts", email="test@example.com")
    company = hs.one("companies", bookme_company_key="acme ab")
    deal = hs.one("deals", bookme_lead_key=result.lead.id and "company:acme ab|workshop")
    meeting = hs.one("meetings", bookme_booking_id="test-123")
    tasks = hs.fake.objects("tasks")

    assert contact["properties"]["firstname"] == "Test"
    assert contact["properties"]["lastname"] == "Person"
    assert contact["properties"]["phone"] == "+46 70 123"
    assert company["properties"]["name"] == "Acme AB"
    assert deal["properties"]["dealname"] == "workshop - Acme AB"
    assert deal["properties"]["amount"] in ("15000", "15000.0")
    assert deal["properties"]["pipeline"] == "default"
    assert deal["properties"]["dealstage"] == "appointmentscheduled"
    props = meeting["properties"]
    assert props["hs_meeting_title"] == "workshop - Scheduled"
    assert props["hs_meeting_outcome"] == "SCHEDULED"
    assert props["hs_meeting_location"] == "https://meet.example/x"
    assert "Företag: Acme AB" in props["hs_meeting_body"]
    start = datetime(2027, 2, 15, 10, 0, tzinfo=UTC)
    for name, expected in (
        ("hs_timestamp", start),
        ("hs_meeting_start_time", start),
        ("hs_meeting_end_time", start + timedelta(hours=2)),
    ):
        assert _instant(props[name]) == expected, name
    assert sorted(t["properties"]["hs_task_subject"] for t in tasks) == [
        "Send workshop prep info",
        "Workshop follow-up",
    ]
    assert {t["properties"]["hs_task_status"] for t in tasks} == {"NOT_STARTED"}
    assert {t["properties"]["hs_task_priority"] for t in tasks} == {"HIGH", "MEDIUM"}

    # The 200 body carries HubSpot's ids.
    assert result.contact.id == contact["id"]
    assert result.company is not None
    assert result.company.id == company["id"]
    assert result.lead.id == deal["id"]
    assert result.activity.id == meeting["id"]
    assert sorted(t.id for t in result.tasks) == sorted(t["id"] for t in tasks)

    assert 1 in hs.linked("contacts", contact["id"], "companies")[company["id"]]
    assert 3 in hs.linked("deals", deal["id"], "contacts")[contact["id"]]
    assert 5 in hs.linked("deals", deal["id"], "companies")[company["id"]]
    assert 200 in hs.linked("meetings", meeting["id"], "contacts")[contact["id"]]
    assert 212 in hs.linked("meetings", meeting["id"], "deals")[deal["id"]]
    assert 188 in hs.linked("meetings", meeting["id"], "companies")[company["id"]]
    for task in tasks:
        assert 204 in hs.linked("tasks", task["id"], "contacts")[contact["id"]]
        assert 216 in hs.linked("tasks", task["id"], "deals")[deal["id"]]


def _instant(value: str) -> datetime:
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _counts(fake: FakeHubSpot) -> dict[str, int]:
    return {
        t: len(fake.objects(t)) for t in ("contacts", "companies", "deals", "meetings", "tasks")
    }


def test_repeat_delivery_and_reapply_make_no_duplicates(hs: Harness) -> None:
    """The same booking applied again, and a second booking of the same lead, add no duplicates."""
    first, _ = hs.sync(company="Acme")
    again, error = hs.sync(company="Acme")
    assert error is None
    assert again == first
    hs.sync(company="ACME ", bookingId="test-456", email="TEST@example.com")

    assert _counts(hs.fake) == {
        "contacts": 1,
        "companies": 1,
        "deals": 1,
        "meetings": 2,
        "tasks": 4,
    }


def test_reapply_costs_few_calls(hs: Harness) -> None:
    """A first booking costs at most 10 HubSpot calls, applying it again at most 6."""
    hs.sync(company="Acme")
    first = sum(hs.api.calls.values())
    hs.sync(company="Acme")
    again = sum(hs.api.calls.values()) - first
    assert first <= 10, hs.api.calls
    assert again <= 6, hs.api.calls


def test_reschedule_moves_meeting_and_open_tasks_in_place(hs: Harness) -> None:
    """A reschedule updates the same meeting and tasks; the outcome becomes RESCHEDULED."""
    created, _ = hs.sync()
    moved, error = hs.sync(
        event="booking.rescheduled",
        scheduledDate="2027-03-01T09:00:00Z",
        updatedAt="2026-12-01T00:00:00Z",
    )
    assert error is None
    assert created is not None
    assert moved is not None
    assert moved.activity.id == created.activity.id
    meeting = hs.one("meetings", bookme_booking_id="test-123")
    assert meeting["properties"]["hs_meeting_outcome"] == "RESCHEDULED"
    assert _instant(meeting["properties"]["hs_meeting_start_time"]) == datetime(
        2027, 3, 1, 9, 0, tzinfo=UTC
    )
    follow_up = hs.one("tasks", bookme_task_key="test-123|follow-up")
    assert _instant(follow_up["properties"]["hs_timestamp"]) == datetime(
        2027, 3, 2, 9, 0, tzinfo=UTC
    )
    assert _counts(hs.fake)["meetings"] == 1
    assert _counts(hs.fake)["tasks"] == 2


def test_cancel_cancels_meeting_closes_tasks_and_loses_deal(hs: Harness) -> None:
    """A cancel sets CANCELED, closes the tasks as cancelled, and moves the deal to closedlost."""
    hs.sync()
    _, error = hs.sync(event="booking.cancelled", updatedAt="2026-12-01T00:00:00Z")
    assert error is None
    meeting = hs.one("meetings", bookme_booking_id="test-123")
    assert meeting["properties"]["hs_meeting_outcome"] == "CANCELED"
    tasks = hs.fake.objects("tasks")
    assert len(tasks) == 2
    for task in tasks:
        assert task["properties"]["hs_task_status"] == "COMPLETED"
        assert task["properties"]["hs_task_subject"].startswith("[Cancelled] ")
    assert hs.fake.objects("deals")[0]["properties"]["dealstage"] == "closedlost"

    # Booked again (a newer snapshot): the tasks reopen and the deal is live again.
    _, error = hs.sync(event="booking.updated", updatedAt="2026-12-02T00:00:00Z")
    assert error is None
    assert {t["properties"]["hs_task_status"] for t in hs.fake.objects("tasks")} == {"NOT_STARTED"}
    assert hs.fake.objects("deals")[0]["properties"]["dealstage"] == "appointmentscheduled"


def test_no_show_sets_outcome_and_swaps_tasks(hs: Harness) -> None:
    """A no-show sets NO_SHOW, cancels the follow-ups and adds the reach-out task."""
    hs.sync()
    _, error = hs.sync(event="booking.no_show", updatedAt="2026-12-01T00:00:00Z")
    assert error is None
    meeting = hs.one("meetings", bookme_booking_id="test-123")
    assert meeting["properties"]["hs_meeting_outcome"] == "NO_SHOW"
    reach_out = hs.one("tasks", bookme_task_key="test-123|no-show-reach-out")
    assert reach_out["properties"]["hs_task_status"] == "NOT_STARTED"
    assert reach_out["properties"]["hs_task_subject"] == "Reach out after no-show"
    follow_up = hs.one("tasks", bookme_task_key="test-123|follow-up")
    assert follow_up["properties"]["hs_task_status"] == "COMPLETED"
    # The lead's no-show stage is null in the default mapping: the deal keeps its live stage.
    assert hs.fake.objects("deals")[0]["properties"]["dealstage"] == "appointmentscheduled"


def test_task_completed_in_hubspot_is_never_touched(hs: Harness) -> None:
    """A task a salesperson completed survives a reschedule and a cancel unchanged."""
    hs.sync()
    done = hs.one("tasks", bookme_task_key="test-123|follow-up")
    hs.api.update("tasks", done["id"], {"hs_task_status": "COMPLETED"})
    hs.sync(
        event="booking.rescheduled",
        scheduledDate="2027-03-01T09:00:00Z",
        updatedAt="2026-12-01T00:00:00Z",
    )
    hs.sync(event="booking.cancelled", updatedAt="2026-12-02T00:00:00Z")
    after = hs.fake.get("tasks", done["id"])
    assert after is not None
    assert after["properties"]["hs_task_subject"] == "Workshop follow-up"
    assert after["properties"]["hs_timestamp"] == done["properties"]["hs_timestamp"]


def test_unplanned_task_is_archived(hs: Harness) -> None:
    """A skip_if_past task that a reschedule pushes into the past is archived."""
    hs.sync()
    _, error = hs.sync(
        event="booking.rescheduled",
        scheduledDate="2027-01-03T09:00:00Z",  # prep info (-7d) is now in the past
        updatedAt="2026-12-01T00:00:00Z",
    )
    assert error is None
    keys = sorted(t["properties"]["bookme_task_key"] for t in hs.fake.objects("tasks"))
    assert keys == ["test-123|follow-up"]


def test_conflict_409_on_upsert_is_success(hs: Harness) -> None:
    """A 409 naming the existing deal (a concurrent writer won) is taken as success."""
    first, _ = hs.sync()
    assert first is not None
    message = (
        "A deal with bookme_lead_key contact:test@example.com|workshop already exists. "
        f"Existing ID: {first.lead.id}"
    )
    hs.fake.fail(
        "POST",
        "/crm/v3/objects/deals/batch/upsert",
        409,
        body={"status": "error", "message": message, "category": "CONFLICT"},
    )
    again, error = hs.sync()
    assert error is None
    assert again is not None
    assert again.lead.id == first.lead.id
    assert _counts(hs.fake)["deals"] == 1


def test_rate_limited_then_success(hs: Harness) -> None:
    """A 429 holds the shared budget for Retry-After, then the call is retried and succeeds."""
    hs.fake.fail("POST", "/crm/v3/objects/contacts/batch/upsert", 429, retry_after=2)
    result, error = hs.sync()
    assert error is None
    assert result is not None
    assert hs.api.calls["upsert contacts"] == 2
    assert _counts(hs.fake)["contacts"] == 1


def test_rolling_rate_limit_of_the_fake_is_respected(fake: FakeHubSpot, engine: Engine) -> None:
    """With the real budget at the fake's limit, a burst of bookings meets no 429."""
    fake.configure(rate_limit=30, rate_window=1.0)
    api = build_api(
        fake.token or "",
        fake.url,
        (30, 1.0),
        budget=RollingWindow(30, 1.0),
        search_budget=RollingWindow(4, 1.0),
    )
    mapping = load_mapping(DEFAULT_MAPPING)
    try:
        assert run_setup(api, mapping).ok
        backend = HubSpotBackend(api, engine, lambda: mapping.defaults.hubspot)
        jobs = []
        for index in range(6):
            body = seed_booking(bookingId=f"burst-{index}", email=f"p{index}@example.com")
            plan = plan_booking(parse_booking(body), mapping, now=NOW)
            jobs.append(SyncJob(f"evt-{index}", plan.booking_id, "lease", plan))
        failures = backend.apply(jobs, lambda *_: None)
    finally:
        api.close()
    assert failures == {}
    assert fake.rate_limited == 0
    assert len(fake.objects("meetings")) == 6


def test_server_errors_are_retried(hs: Harness) -> None:
    """Two 503s then success: the call is retried with backoff and the booking lands."""
    # A new deal is created (its lead key is unique, so the create is safe to retry).
    hs.fake.fail("POST", "/crm/v3/objects/deals", 503, times=2)
    result, error = hs.sync()
    assert error is None
    assert result is not None
    assert hs.api.calls["create deals"] == 3
    assert len(hs.sleeps) >= 2
    assert _counts(hs.fake)["deals"] == 1


def test_deal_create_after_a_lost_answer_reads_the_deal_by_its_key(hs: Harness) -> None:
    """A deal created but its answer lost: the retried create gets 409, the deal is read by
    its lead key and updated by id; one deal."""
    hs.fake.crash_after_commit("/crm/v3/objects/deals", method="POST")
    result, error = hs.sync()
    assert error is None
    assert result is not None
    assert hs.api.calls["create deals"] == 2
    assert hs.api.calls["batch read deals"] == 1
    # The update leaves the stage alone (it may not be ours to set); the stage step,
    # not knowing what the lost create wrote, sets it once more.
    assert hs.api.calls["batch update deals"] == 2
    assert hs.api.calls["upsert deals"] == 0
    assert _counts(hs.fake)["deals"] == 1
    deal = hs.fake.objects("deals")[0]
    assert result.lead.id == deal["id"]
    assert deal["properties"]["dealstage"] == "appointmentscheduled"
    assert hs.fake.associations("deals", deal["id"], "contacts")


def test_persistent_outage_is_retryable(hs: Harness) -> None:
    """When retries run out the job fails retryable, so the outbox tries again later."""
    hs.fake.fail("POST", "/crm/v3/objects/contacts/batch/upsert", 502, times=None)
    _, error = hs.sync()
    assert isinstance(error, RetryableError)
    hs.fake.clear_faults()
    result, error = hs.sync()
    assert error is None
    assert result is not None


def test_validation_error_is_permanent_with_hubspots_message(hs: Harness) -> None:
    """A 400 is a CrmValidationError carrying HubSpot's message (the event is dead-lettered)."""
    hs.fake.fail(
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        400,
        body={
            "status": "error",
            "message": "Property values were not valid: email is invalid",
            "category": "VALIDATION_ERROR",
        },
    )
    _, error = hs.sync()
    assert isinstance(error, CrmValidationError)
    assert "Property values were not valid" in str(error)
    assert hs.api.calls["upsert contacts"] == 1


def test_unknown_stage_is_a_mapping_error(hs: Harness) -> None:
    """A lead stage without a HubSpot stage id quarantines the booking (MappingError)."""
    text = DEFAULT_MAPPING.read_text().replace("stage: CONTACTED", "stage: NURTURE")
    hs.mapping = load_mapping_text(text, "custom.yaml")
    _, error = hs.sync()
    assert isinstance(error, MappingError)
    assert "NURTURE" in str(error)


def test_crash_after_meeting_create_then_retry_makes_exactly_one_meeting(hs: Harness) -> None:
    """A meeting created but unanswered is found on retry through its deal's associations,
    while search still lags, and is not created again."""
    hs.fake.configure(search_lag=300.0)
    hs.fake.crash_after_commit("/crm/v3/objects/meetings", method="POST")
    _, error = hs.sync()
    assert isinstance(error, RetryableError)
    assert len(hs.fake.objects("meetings")) == 1
    assert hs.api.calls["create meetings"] == 1  # a create is never blindly retried

    result, error = hs.sync()
    assert error is None
    assert hs.api.calls["list associations deals->meetings"] == 1
    assert hs.api.calls["search meetings"] == 0
    assert result is not None
    meetings = hs.fake.objects("meetings")
    assert len(meetings) == 1
    assert result.activity.id == meetings[0]["id"]
    assert meetings[0]["properties"]["hs_meeting_outcome"] == "SCHEDULED"
    assert _counts(hs.fake)["tasks"] == 2


def test_lost_create_is_made_again_after_the_search_window(hs: Harness) -> None:
    """A create that never reached HubSpot is retried once the search-lag window has passed."""
    hs.fake.drop("/crm/v3/objects/meetings", method="POST")
    _, error = hs.sync()
    assert isinstance(error, RetryableError)
    assert hs.fake.objects("meetings") == []

    hs.clock.now = NOW + timedelta(seconds=10)
    _, error = hs.sync()
    assert isinstance(error, RetryableError)  # still inside the window
    hs.clock.now = NOW + timedelta(seconds=31)
    result, error = hs.sync()
    assert error is None
    assert result is not None
    assert len(hs.fake.objects("meetings")) == 1


def test_setup_is_idempotent_and_checks_stages(fake: FakeHubSpot) -> None:
    """Setup creates the properties once, reports 'exists' after, and flags a missing stage."""
    api = _api(fake, [])
    try:
        mapping = load_mapping(DEFAULT_MAPPING)
        first = run_setup(api, mapping)
        second = run_setup(api, mapping)
        text = DEFAULT_MAPPING.read_text().replace("LOST: closedlost", "LOST: gone")
        broken = run_setup(api, load_mapping_text(text, "custom.yaml"))
    finally:
        api.close()
    assert first.ok
    assert second.ok
    assert any("bookme_lead_key (unique): created" in line for line in first.lines)
    assert not any("created" in line for line in second.lines)
    assert not broken.ok
    assert any("'gone'" in problem for problem in broken.problems)
    custom = fake.state()["customProperties"]
    assert {p["name"]: p["hasUniqueValue"] for p in custom["deals"]}["bookme_lead_key"] is True


def test_setup_command_reports_and_exits(fake: FakeHubSpot, tmp_path: Path) -> None:
    """``bookme-crm hubspot setup`` exits 0 when ready, 1 when a stage is missing."""
    from adapter.cli import app

    env = {
        "HUBSPOT_ACCESS_TOKEN": fake.token or "",
        "HUBSPOT_BASE_URL": fake.url,
        "MAPPINGS_PATH": str(DEFAULT_MAPPING),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    runner = CliRunner()
    ok = runner.invoke(app, ["hubspot", "setup"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "HubSpot is ready" in ok.output
    broken_mapping = tmp_path / "mapping.yaml"
    broken_mapping.write_text(
        DEFAULT_MAPPING.read_text().replace("pipeline: default", "pipeline: x")
    )
    bad = runner.invoke(
        app, ["hubspot", "setup"], env={**env, "MAPPINGS_PATH": str(broken_mapping)}
    )
    assert bad.exit_code == 1
    assert "MISSING" in bad.output
    assert "'x'" in bad.output


def test_rolling_window_spreads_requests() -> None:
    """The budget admits ``limit`` requests per window and makes the next one wait."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    budget = RollingWindow(3, 10.0, clock=lambda: now[0], sleep=sleep, margin=0.0)
    waits = [budget.acquire() for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(10.0)
    budget.hold(5.0)
    assert budget.acquire() == pytest.approx(5.0)


def test_webhook_to_hubspot_end_to_end(
    fake: FakeHubSpot, make_settings: Callable[..., Settings]
) -> None:
    """Through the webhook, outbox and worker: 200 with HubSpot's ids, one meeting per booking."""
    from fastapi.testclient import TestClient

    from adapter.api.app import create_app
    from adapter.services import build_services

    settings = make_settings(
        crm_backend="hubspot",
        hubspot_access_token=fake.token,
        hubspot_base_url=fake.url,
    )
    services = build_services(settings)
    try:
        assert isinstance(services.backend, HubSpotBackend)
        assert run_setup(services.backend.api, load_mapping(DEFAULT_MAPPING)).ok
        headers = {"X-Webhook-Secret": WEBHOOK_SECRET}
        with TestClient(create_app(services=services, embedded_workers=1)) as client:
            body = seed_booking(company="Acme")
            first = client.post("/api/bookings/incoming", json=body, headers=headers)
            again = client.post("/api/bookings/incoming", json=body, headers=headers)
            metrics = client.get("/metrics").text
    finally:
        services.close()
    assert first.status_code == 200, first.text
    data = first.json()
    meeting = fake.find("meetings", bookme_booking_id="test-123")
    assert len(meeting) == 1
    assert data["activity"]["id"] == meeting[0]["id"]
    assert data["lead"]["id"] == fake.objects("deals")[0]["id"]
    assert again.status_code == 200
    assert _counts(fake) == {"contacts": 1, "companies": 1, "deals": 1, "meetings": 1, "tasks": 2}
    ok_calls = next(
        line
        for line in metrics.splitlines()
        if line.startswith('bookme_crm_calls_total{backend="hubspot",status="ok"}')
    )
    assert float(ok_calls.split()[-1]) >= 5


def _burst(hs: Harness, count: int, **booking: Any) -> list[SyncJob]:
    jobs = []
    for index in range(count):
        body = seed_booking(
            bookingId=f"burst-{index}",
            email=f"person{index % (count // 2 or 1)}@example.com",
            company=f"Company {index % 7}",
            **booking,
        )
        plan = plan_booking(parse_booking(body), hs.mapping, now=NOW)
        jobs.append(SyncJob(f"evt-{index}", plan.booking_id, "lease", plan))
    return jobs


def test_burst_is_written_with_batch_calls(hs: Harness) -> None:
    """250 bookings in one batch cost a few dozen calls and land exactly once each."""
    jobs = _burst(hs, 250)
    settled: dict[str, SyncResult] = {}
    failures = hs.backend.apply(
        jobs, lambda _c, job, result: settled.setdefault(job.event_id, result)
    )
    assert failures == {}
    assert len(settled) == 250
    calls = sum(hs.api.calls.values())
    assert calls <= 30, hs.api.calls
    assert _counts(hs.fake) == {
        "contacts": 125,
        "companies": 7,
        "deals": 7,
        "meetings": 250,
        "tasks": 500,
    }
    meeting = hs.one("meetings", bookme_booking_id="burst-9")
    assert settled["evt-9"].activity.id == meeting["id"]
    deal_id = settled["evt-9"].lead.id
    assert 212 in hs.linked("meetings", meeting["id"], "deals")[deal_id]

    # The same burst again: updates only, still batched, nothing new.
    hs.api.calls.clear()
    assert hs.backend.apply(jobs, lambda *_: None) == {}
    assert sum(hs.api.calls.values()) <= 30, hs.api.calls
    assert _counts(hs.fake)["meetings"] == 250
    assert _counts(hs.fake)["tasks"] == 500


def test_a_failing_job_does_not_fail_its_batch(hs: Harness) -> None:
    """When a batch call fails, each job is applied alone: only the bad one fails."""
    jobs = _burst(hs, 4)
    hs.fake.fail(
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        400,
        times=2,  # the batch, then the first job alone
        body={"status": "error", "message": "Property values were not valid", "category": "X"},
    )
    failures = hs.backend.apply(jobs, lambda *_: None)
    assert list(failures) == ["evt-0"]
    assert isinstance(failures["evt-0"], CrmValidationError)
    assert len(hs.fake.objects("meetings")) == 3


@pytest.mark.slow
def test_worker_killed_during_meeting_create_leaves_one_meeting(
    fake: FakeHubSpot, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A worker SIGKILLed while HubSpot creates the meeting: the next worker finds it, no second."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fastapi.testclient import TestClient

    from adapter.api.app import create_app
    from adapter.services import build_services
    from outbox.store import OutboxStore

    api = _api(fake, [])
    try:
        assert run_setup(api, load_mapping(DEFAULT_MAPPING)).ok
    finally:
        api.close()
    settings = make_settings(sync_wait_ms=0)
    services = build_services(settings)
    with TestClient(create_app(services=services, embedded_workers=0)) as client:
        answer = client.post(
            "/api/bookings/incoming",
            json=seed_booking(company="Acme"),
            headers={"X-Webhook-Secret": WEBHOOK_SECRET},
        )
    services.close()
    assert answer.status_code == 202, answer.text

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "HUBSPOT_"))},
        "DATABASE_URL": settings.database_url,
        "CRM_BACKEND": "hubspot",
        "HUBSPOT_ACCESS_TOKEN": fake.token or "",
        "HUBSPOT_BASE_URL": fake.url,
        "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAPPINGS_PATH": str(DEFAULT_MAPPING),
        "DATA_DIR": str(tmp_path / "var"),
        "OUTBOX_LEASE_SECONDS": "1",
    }
    worker_bin = Path(sys.executable).parent / "bookme-crm"
    slow = fake.slow("/crm/v3/objects/meetings*", seconds=2.0, method="POST")
    with subprocess.Popen(
        [str(worker_bin), "worker", "--drain"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as worker:
        deadline = time.monotonic() + 30
        while slow.hits == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    assert slow.hits == 1
    deadline = time.monotonic() + 10
    while not fake.objects("meetings") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake.objects("meetings")) == 1  # HubSpot created it; the worker never knew

    time.sleep(1.2)  # the killed worker's lease expires
    # The fake's search lags writes by 2 s by default, as HubSpot's index does; this test
    # is about reconciling once the index has the meeting, so let it catch up now.
    fake.flush_search_index()
    done = subprocess.run(
        [str(worker_bin), "worker", "--drain"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    engine = db.make_engine(settings.database_url)
    try:
        counts = OutboxStore(engine).counts()
    finally:
        engine.dispose()
    assert counts["synced"] == 1, counts
    # Reconciled through the deal's associations, not the search index.
    assert fake.calls["GET /crm/v4/objects/deals/{id}/associations/meetings"] == 1
    assert fake.calls["POST /crm/v3/objects/meetings/search"] == 0
    assert fake.calls["POST /crm/v3/objects/meetings"] == 1  # created once
    assert _counts(fake) == {"contacts": 1, "companies": 1, "deals": 1, "meetings": 1, "tasks": 2}
    meeting = fake.objects("meetings")[0]
    assert meeting["properties"]["hs_meeting_title"] == "workshop - Scheduled"


def test_migration_matches_the_id_table(engine: Engine) -> None:
    """Migrations 0004 and 0008 create ``hubspot_objects`` exactly as ``store`` defines it."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from adapter.backends.hubspot.store import hubspot_metadata

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), hubspot_metadata)
    ours = [d for d in diff if "hubspot_objects" in repr(d)]
    assert ours == []


def test_mapping_reload_reaches_the_deal_stage_table(
    fake: FakeHubSpot, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """After a mapping reload, new deals take the stage id the reloaded file names."""
    from adapter.services import build_services

    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(DEFAULT_MAPPING.read_text())
    services = build_services(
        make_settings(
            crm_backend="hubspot",
            hubspot_access_token=fake.token,
            hubspot_base_url=fake.url,
            mappings_path=mapping_file,
        )
    )
    try:
        assert isinstance(services.backend, HubSpotBackend)
        assert run_setup(services.backend.api, load_mapping(mapping_file)).ok
        text = mapping_file.read_text()
        assert "CONTACTED: appointmentscheduled" in text
        mapping_file.write_text(
            text.replace("CONTACTED: appointmentscheduled", "CONTACTED: qualifiedtobuy")
        )
        assert services.reload_mappings()
        body = seed_booking(company="Reload AB")
        accept_booking(services.store, parse_booking(body), body, services.mappings.current)
        assert services.new_worker().drain() == 1
    finally:
        services.close()
    (deal,) = fake.objects("deals")
    assert deal["properties"]["dealstage"] == "qualifiedtobuy"


def test_a_later_booking_adds_its_tags_instead_of_replacing_them(hs: Harness) -> None:
    """Contact and company tags by event type (an ops mapping): a workshop, then a
    consultation by the same person at the same company leaves both event types' tags
    on the contact and the company, as in the local CRM, and each deal its own."""
    text = DEFAULT_MAPPING.read_text()
    for record in ("contact", "company"):
        text = text.replace(
            f"  {record}:\n    tags: [bookme]", f'  {record}:\n    tags: [bookme, "{{eventType}}"]'
        )
    hs.mapping = load_mapping_text(text)
    prop = hs.mapping.defaults.hubspot.tags_property
    hs.sync(company="Acme AB")
    hs.sync(bookingId="test-456", eventType="30min-consultation", company="Acme AB")
    both = {"bookme", "workshop", "30min-consultation"}
    contact = hs.one("contacts", email="test@example.com")
    company = hs.one("companies", bookme_company_key="acme ab")
    assert set(contact["properties"][prop].split(";")) == both
    assert set(company["properties"][prop].split(";")) == both
    deals = {d["properties"]["bookme_lead_key"]: d for d in hs.fake.objects("deals")}
    assert set(deals["company:acme ab|workshop"]["properties"][prop].split(";")) == {
        "bookme",
        "workshop",
    }


# --- HubSpot as it really answers (issue 11) ---------------------------------------------

LEAD_KEY = "company:acme ab|workshop"
TAKEN_400 = {
    "status": "error",
    "message": 'Property values were not valid: [{"isValid":false,"message":'
    '"bookme_lead_key already has that value","error":"INVALID_VALUE","name":"bookme_lead_key"}]',
    "category": "VALIDATION_ERROR",
}
TAKEN_409_NO_ID = {"status": "error", "message": "Object already exists", "category": "CONFLICT"}


def _existing_deal(hs: Harness) -> str:
    """A deal someone made in HubSpot with the lead key our booking will use."""
    return hs.api.create(
        "deals",
        {
            "dealname": "made by hand",
            "pipeline": "default",
            "dealstage": "appointmentscheduled",
            "bookme_lead_key": LEAD_KEY,
        },
    )


@pytest.mark.parametrize(
    "answer",
    [None, (409, TAKEN_409_NO_ID), (400, TAKEN_400)],
    ids=["409-existing-id", "409-without-id", "400-already-has-that-value"],
)
def test_a_taken_lead_key_resolves_to_the_existing_deal_in_every_shape(
    hs: Harness, answer: tuple[int, dict[str, str]] | None
) -> None:
    """Whichever way HubSpot refuses a taken unique value, the booking adopts the deal
    that holds it (read by its key), never dead-letters, never makes a second."""
    deal_id = _existing_deal(hs)
    if answer is not None:
        hs.fake.fail("POST", "/crm/v3/objects/deals", answer[0], body=answer[1])
    result, error = hs.sync(company="Acme AB")
    assert error is None
    assert result is not None
    assert result.lead.id == deal_id
    deals = hs.fake.objects("deals")
    assert [d["id"] for d in deals] == [deal_id]
    assert deals[0]["properties"]["dealname"] == "workshop - Acme AB"
    assert hs.fake.associations("deals", deal_id, "contacts")
    assert hs.api.calls["batch read deals"] == 1


@pytest.mark.parametrize(
    "answer", [(409, TAKEN_409_NO_ID), (400, TAKEN_400)], ids=["409-without-id", "400"]
)
def test_a_company_upsert_conflict_resolves_by_reading_the_key(
    hs: Harness, answer: tuple[int, dict[str, str]]
) -> None:
    """A batch upsert refused for a taken company key reads the company by its key and
    updates it by id, instead of retrying the refused upsert until it dead-letters."""
    hs.sync(company="Acme AB")
    (company,) = hs.fake.objects("companies")
    hs.fake.fail("POST", "/crm/v3/objects/companies/batch/upsert", answer[0], body=answer[1])
    result, error = hs.sync(
        bookingId="test-456", email="other@example.com", company="Acme AB", name="Other Person"
    )
    assert error is None
    assert result is not None
    assert result.company is not None
    assert result.company.id == company["id"]
    assert len(hs.fake.objects("companies")) == 1


def test_a_deal_deleted_in_hubspot_comes_back_with_pipeline_and_stage(hs: Harness) -> None:
    """A deal a salesperson deleted is created again on the booking's next event, with
    the pipeline and stage HubSpot requires of a new deal, and its associations."""
    first, _ = hs.sync(company="Acme AB")
    assert first is not None
    hs.api.archive("deals", first.lead.id)
    moved, error = hs.sync(
        company="Acme AB", event="booking.rescheduled", updatedAt="2026-12-01T00:00:00Z"
    )
    assert error is None
    assert moved is not None
    assert moved.lead.id != first.lead.id
    deal = hs.one("deals", bookme_lead_key=LEAD_KEY)
    assert deal["id"] == moved.lead.id
    assert deal["properties"]["pipeline"] == "default"
    assert deal["properties"]["dealstage"] == "appointmentscheduled"
    assert deal["properties"]["dealname"] == "workshop - Acme AB"
    assert hs.fake.associations("deals", deal["id"], "contacts")
    assert hs.fake.associations("deals", deal["id"], "companies")
    meeting = hs.one("meetings", bookme_booking_id="test-123")
    assert _live_links(hs, "meetings", meeting["id"], "deals") == {deal["id"]: [212]}


def _live_links(hs: Harness, from_type: str, from_id: str, to_type: str) -> dict[str, list[int]]:
    """Associations to records that still exist (HubSpot hides those to deleted ones)."""
    return {
        to_id: types
        for to_id, types in hs.fake.associations(from_type, from_id, to_type)
        if hs.fake.get(to_type, to_id) is not None
    }


def _deleted_rows(engine: Engine) -> dict[tuple[str, str], bool]:
    from adapter.backends.hubspot import store

    with engine.connect() as conn:
        return {
            (d.object_type, d.natural_key): d.recreated for d in store.deletions(conn, limit=100)
        }


def test_every_record_deleted_in_hubspot_is_recreated_while_the_booking_is_live(
    hs: Harness, engine: Engine
) -> None:
    """Contact, company, deal, meeting and tasks deleted in HubSpot all come back, once,
    on the booking's next event, associated again; each deletion is recorded."""
    first, _ = hs.sync(company="Acme AB")
    assert first is not None
    assert first.company is not None
    for kind, object_id in [
        ("contacts", first.contact.id),
        ("companies", first.company.id),
        ("deals", first.lead.id),
        ("meetings", first.activity.id),
        *[("tasks", task.id) for task in first.tasks],
    ]:
        hs.api.archive(kind, object_id)
    again, error = hs.sync(
        company="Acme AB", event="booking.rescheduled", updatedAt="2026-12-01T00:00:00Z"
    )
    assert error is None
    assert again is not None
    assert _counts(hs.fake) == {
        "contacts": 1,
        "companies": 1,
        "deals": 1,
        "meetings": 1,
        "tasks": 2,
    }
    meeting = hs.one("meetings", bookme_booking_id="test-123")
    assert meeting["id"] == again.activity.id != first.activity.id
    assert _live_links(hs, "meetings", meeting["id"], "contacts") == {again.contact.id: [200]}
    assert _live_links(hs, "contacts", again.contact.id, "companies")
    for task in hs.fake.objects("tasks"):
        assert _live_links(hs, "tasks", task["id"], "deals") == {again.lead.id: [216]}
    assert _deleted_rows(engine) == {
        ("contact", "test@example.com"): True,
        ("company", "acme ab"): True,
        ("deal", LEAD_KEY): True,
        ("meeting", "test-123"): True,
        ("task", "test-123|follow-up"): True,
        ("task", "test-123|prep-info"): True,
    }
    # Settled: the next event finds everything in place and recreates nothing.
    hs.sync(company="Acme AB", event="booking.updated", updatedAt="2026-12-02T00:00:00Z")
    assert _counts(hs.fake)["meetings"] == 1
    assert _counts(hs.fake)["tasks"] == 2


def test_records_deleted_for_a_cancelled_booking_stay_deleted(hs: Harness, engine: Engine) -> None:
    """A booking that is no longer live does not bring back what a salesperson deleted;
    the deletion is recorded as left deleted, and the event still syncs."""
    first, _ = hs.sync()
    assert first is not None
    task = hs.fake.get("tasks", first.tasks[0].id)
    assert task is not None
    hs.api.archive("meetings", first.activity.id)
    hs.api.archive("tasks", task["id"])
    _, error = hs.sync(event="booking.cancelled", updatedAt="2026-12-01T00:00:00Z")
    assert error is None
    assert _counts(hs.fake)["meetings"] == 0
    assert _counts(hs.fake)["tasks"] == 1
    assert _deleted_rows(engine) == {
        ("meeting", "test-123"): False,
        ("task", task["properties"]["bookme_task_key"]): False,
    }


def test_the_batch_path_recreates_deleted_meetings_as_the_single_path_does(
    hs: Harness,
) -> None:
    """Two bookings in one batch, both meetings deleted in HubSpot: the 207 of the batch
    update names them and both are created again, as one booking alone would be."""
    jobs = []
    for index in range(2):
        body = seed_booking(bookingId=f"b-{index}", email=f"p{index}@example.com")
        plan = plan_booking(parse_booking(body), hs.mapping, now=NOW)
        jobs.append(SyncJob(f"evt-a{index}", plan.booking_id, "lease", plan))
    assert hs.backend.apply(jobs, lambda *_: None) == {}
    for meeting in hs.fake.objects("meetings"):
        hs.api.archive("meetings", meeting["id"])
    hs.api.calls.clear()
    again = [SyncJob(f"evt-b{i}", job.booking_id, "lease", job.plan) for i, job in enumerate(jobs)]
    assert hs.backend.apply(again, lambda *_: None) == {}
    assert hs.api.calls["batch update meetings"] == 1
    assert hs.api.calls["update meetings"] == 0  # one batch call, not a per-job fallback
    assert sorted(m["properties"]["bookme_booking_id"] for m in hs.fake.objects("meetings")) == [
        "b-0",
        "b-1",
    ]


def test_a_207_on_associations_is_retried_not_recorded_as_done(hs: Harness) -> None:
    """An association batch answered 207 with errors fails the job (retried); the links
    are not recorded as made, so the retry makes them."""
    hs.sync(company="Acme AB")
    hs.fake.fail(
        "POST",
        "/crm/v4/associations/deals/contacts/batch/create",
        207,
        body={
            "status": "COMPLETE",
            "results": [],
            "numErrors": 1,
            "errors": [
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": "Association could not be created",
                    "context": {},
                }
            ],
            "startedAt": "2026-11-29T10:00:00Z",
            "completedAt": "2026-11-29T10:00:00Z",
        },
    )
    second = {"bookingId": "test-456", "email": "other@example.com", "company": "Acme AB"}
    _, error = hs.sync(**second)
    assert isinstance(error, RetryableError)
    assert "207" in str(error)
    result, error = hs.sync(**second)
    assert error is None
    assert result is not None
    assert result.contact.id in dict(hs.fake.associations("deals", result.lead.id, "contacts"))


def test_an_interrupted_task_create_is_found_through_the_deal_with_search_lagging(
    hs: Harness,
) -> None:
    """Tasks created but unanswered, search five minutes behind: the retry lists the
    deal's tasks and adopts them; none is created twice and search is not needed."""
    hs.fake.configure(search_lag=300.0)
    hs.fake.crash_after_commit("/crm/v3/objects/tasks/batch/create", method="POST")
    _, error = hs.sync()
    assert isinstance(error, RetryableError)
    assert _counts(hs.fake)["tasks"] == 2
    result, error = hs.sync()
    assert error is None
    assert result is not None
    assert _counts(hs.fake)["tasks"] == 2
    assert {t.id for t in result.tasks} == {t["id"] for t in hs.fake.objects("tasks")}
    assert hs.api.calls["search tasks"] == 0
    assert hs.api.calls["list associations deals->tasks"] == 1


def test_the_sync_page_says_what_was_deleted_in_hubspot_and_recreated(
    fake: FakeHubSpot, make_settings: Callable[..., Settings]
) -> None:
    """A meeting deleted in HubSpot and created again on the next event is listed on the
    dashboard's sync page with its old and new ids."""
    from fastapi.testclient import TestClient

    from adapter.api.app import create_app
    from adapter.services import build_services
    from tests.integration.test_dashboard import log_in

    settings = make_settings(
        crm_backend="hubspot", hubspot_access_token=fake.token, hubspot_base_url=fake.url
    )
    services = build_services(settings)
    headers = {"X-Webhook-Secret": WEBHOOK_SECRET}
    try:
        assert isinstance(services.backend, HubSpotBackend)
        assert run_setup(services.backend.api, load_mapping(DEFAULT_MAPPING)).ok
        app = create_app(services=services, embedded_workers=1)
        with TestClient(app, base_url="https://testserver") as client:
            first = client.post("/api/bookings/incoming", json=seed_booking(), headers=headers)
            old_id = first.json()["activity"]["id"]
            services.backend.api.archive("meetings", old_id)
            moved = seed_booking(event="booking.rescheduled", updatedAt="2026-12-01T00:00:00Z")
            again = client.post("/api/bookings/incoming", json=moved, headers=headers)
            new_id = again.json()["activity"]["id"]
            log_in(client)
            page = client.get("/ui/sync").text
    finally:
        services.close()
    assert new_id != old_id
    assert "Deleted in HubSpot" in page
    listed = page[page.index('id="deleted-list"') :]
    assert f"{old_id} deleted" in listed
    assert "created again as" in listed
    assert new_id in listed


def test_a_refused_create_names_the_missing_properties(hs: Harness) -> None:
    """HubSpot names a create's missing required properties in ``context``; the error kept
    for the dead letter names them too."""
    with pytest.raises(CrmValidationError, match=r"properties: .*dealstage"):
        hs.api.create("deals", {"dealname": "no stage", "pipeline": "default"})


def test_a_create_refused_by_a_pause_leaves_no_intent_to_wait_out(
    hs: Harness, engine: Engine
) -> None:
    """A 477 on a meeting create applied nothing: its intent is dropped, so once the
    pause ends the meeting is created at once, not after the search-lag window."""
    from adapter.backends.hubspot import store
    from adapter.errors import PausedError

    hs.fake.migration_in_progress("/crm/v3/objects/meetings", retry_after=1)
    _, error = hs.sync()
    assert isinstance(error, PausedError)
    with engine.connect() as conn:
        assert store.get(conn, "meeting", "test-123") is None
    assert hs.fake.objects("meetings") == []
    time.sleep(1.2)  # the pause HubSpot asked for
    result, error = hs.sync()
    assert error is None
    assert result is not None
    assert len(hs.fake.objects("meetings")) == 1
    assert hs.api.calls["search meetings"] == 0


def test_sync_estimate_follows_hubspots_answer_time(hs: Harness) -> None:
    """The webhook's wait asks the backend how long a sync takes: HubSpot's recent answer
    time times the calls a sync makes one after another, following a slower HubSpot."""
    fast = hs.backend.sync_estimate()
    assert fast is not None
    assert fast < 0.5  # setup's calls, on loopback
    hs.fake.slow("/crm/*", 0.2, times=None)
    for _ in range(6):
        hs.backend.ping()
    slow = hs.backend.sync_estimate()
    assert slow is not None
    assert 0.7 < slow < SYNC_CALLS * 0.3, slow
