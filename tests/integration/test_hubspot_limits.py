"""HubSpot's pauses and limits, against the fake over real sockets on a real SQLite file
(and PostgreSQL where the shared budget's table is the point): 477 and the daily limit
pause the portal, 423 and 503 are retried, search has a budget of its own, and the
``X-HubSpot-RateLimit-*`` headers are followed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from adapter import db
from adapter.api.app import create_app
from adapter.backends.hubspot import HubSpotApi, HubSpotBackend, account, build_api, run_setup
from adapter.backends.hubspot.budget import DatabaseWindow, rate_holds, rate_slots
from adapter.backends.hubspot.client import SEARCH_LIMIT, HubSpotPaused
from adapter.booking import parse_booking
from adapter.errors import PausedError
from adapter.ingest import accept_booking
from adapter.mapping import load_mapping
from adapter.settings import Settings
from adapter.worker import Worker
from outbox.db import make_engine
from outbox.retry import RetryPolicy
from outbox.store import OutboxStore
from tests.conftest import ADMIN_TOKEN, DEFAULT_MAPPING, seed_booking
from tests.fakes.hubspot import FakeHubSpot, rate_limit_body
from tests.integration.test_dashboard import log_in

START = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)


@dataclass
class FakeTime:
    """One clock for the budgets (epoch seconds), the outbox and HubSpot's answers (UTC)."""

    now: float = START.timestamp()
    slept: list[float] = field(default_factory=list)
    on_sleep: Callable[[], None] | None = None

    def clock(self) -> float:
        return self.now

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def sleep(self, seconds: float) -> None:
        if self.on_sleep is not None:
            self.on_sleep()
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'limits.db'}"
    engine = make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


def _process(
    url: str,
    fake: FakeHubSpot,
    t: FakeTime | None = None,
    *,
    limit: tuple[int, float] = (100, 10.0),
    time_zone: str = "UTC",
) -> tuple[HubSpotApi, Engine]:
    """One worker process's HubSpotApi: its own engine, budgets shared through the database."""
    engine = make_engine(url)
    clock, sleep = (t.clock, t.sleep) if t is not None else (time.time, time.sleep)

    def budget(name: str, limit: int, window: float) -> DatabaseWindow:
        return DatabaseWindow(engine, name, limit, window, clock=clock, sleep=sleep)

    api = build_api(
        fake.token or "",
        fake.url,
        limit,
        timeout=5.0,
        max_attempts=4,
        sleep=sleep,
        budget=budget("requests:portal", *limit),
        search_budget=budget("search:portal", *SEARCH_LIMIT),
        wall=t.utc if t is not None else (lambda: datetime.now(UTC)),
    )
    api.time_zone = ZoneInfo(time_zone)
    return api, engine


def test_477_pauses_every_process_until_its_retry_after_and_sends_nothing_meanwhile(
    sqlite_file: str, fake: FakeHubSpot
) -> None:
    """A 477 with Retry-After: 7200 pauses both processes' budgets for two hours, at once."""
    t = FakeTime()
    first, _ = _process(sqlite_file, fake, t)
    second, _ = _process(sqlite_file, fake, t)
    fake.migration_in_progress(retry_after=7200, times=None)

    with pytest.raises(HubSpotPaused) as caught:
        first.ping()
    assert caught.value.until == START + timedelta(hours=2)
    assert fake.total_calls == 1  # not retried here: the outbox waits it out
    with pytest.raises(PausedError):
        second.ping()
    with pytest.raises(PausedError):
        second.search_ids("meetings", "bookme_booking_id", "b-1")
    assert fake.total_calls == 1
    pause = second.paused()
    assert pause is not None
    assert (pause.until, pause.reason) == (START + timedelta(hours=2), caught.value.reason)
    assert t.slept == []

    fake.clear_faults()
    t.now += 7200
    second.ping()
    assert second.paused() is None


def test_events_meeting_477_thirty_times_burn_no_attempt_and_never_die(
    sqlite_file: str, fake: FakeHubSpot
) -> None:
    """30 × 477 (one an hour) leave the event retrying with no attempt spent; then it syncs."""
    t = FakeTime()
    api, engine = _process(sqlite_file, fake, t)
    mapping = load_mapping(DEFAULT_MAPPING)
    assert run_setup(api, mapping).ok
    backend = HubSpotBackend(api, engine, lambda: mapping.defaults.hubspot, clock=t.utc)
    store = OutboxStore(engine, retry=RetryPolicy(max_attempts=3), clock=t.utc)
    worker = Worker(store, backend, lambda: mapping, clock=t.utc)
    body = seed_booking()
    event, _ = accept_booking(store, parse_booking(body), body, mapping)
    fault = fake.migration_in_progress("/crm/*", retry_after=3600, times=30)

    for _ in range(30):
        assert worker.run_once() == 1
        waiting = store.get(event.id)
        assert waiting is not None
        assert (waiting.state, waiting.attempts) == ("retrying", 0)
        assert waiting.next_attempt_at == t.utc() + timedelta(hours=1)
        assert worker.run_once() == 0  # nothing is claimed while the portal is paused
        t.now += 3600

    assert fault.hits == 30
    assert worker.run_once() == 1
    synced = store.get(event.id)
    assert synced is not None
    assert (synced.state, synced.attempts) == ("synced", 1)
    backend.close()


def test_daily_limit_pauses_until_midnight_in_the_accounts_time_zone(
    sqlite_file: str, fake: FakeHubSpot
) -> None:
    """A 429 with policyName DAILY pauses the portal until the next midnight in its zone."""
    t = FakeTime()  # 12:00 UTC = 07:00 in New York
    api, _ = _process(sqlite_file, fake, t, time_zone="America/New_York")
    fake.daily_limit(times=None)

    with pytest.raises(HubSpotPaused) as caught:
        api.ping()
    midnight_in_new_york = datetime(2027, 1, 16, 5, 0, tzinfo=UTC)
    assert caught.value.until == midnight_in_new_york
    assert "daily" in caught.value.reason
    with pytest.raises(PausedError):
        api.ping()
    assert fake.total_calls == 1


def test_the_daily_reset_follows_the_time_zone_in_the_accounts_info(
    sqlite_file: str, fake: FakeHubSpot
) -> None:
    """Once the start-up refresh has read the portal's zone (US/Eastern), a DAILY 429 pauses
    until midnight there, not in UTC."""
    t = FakeTime()
    api, engine = _process(sqlite_file, fake, t)
    assert account.refresh(api, engine) is not None
    fake.daily_limit()
    with pytest.raises(HubSpotPaused) as caught:
        api.ping()
    assert caught.value.until == datetime(2027, 1, 16, 5, 0, tzinfo=UTC)


def test_the_days_last_request_pauses_before_any_daily_429(sqlite_file: str) -> None:
    """X-HubSpot-RateLimit-Daily-Remaining: 0 on an answer pauses the portal at once: the
    next call is not sent, so HubSpot never has to answer 429."""
    t = FakeTime()
    with FakeHubSpot(rate_limit=None, search_rate_limit=None, daily_limit=3) as fake:
        api, _ = _process(sqlite_file, fake, t)
        for _ in range(3):
            api.ping()
        with pytest.raises(PausedError) as caught:
            api.ping()
        assert caught.value.until == datetime(2027, 1, 16, tzinfo=UTC)
        assert (fake.total_calls, fake.rate_limited) == (3, 0)


def test_423_waits_out_the_lock_and_503_its_retry_after(
    sqlite_file: str, fake: FakeHubSpot
) -> None:
    """423 is retried after HubSpot's 2 s lock; 503 after its Retry-After; then the call works."""
    t = FakeTime()
    api, _ = _process(sqlite_file, fake, t)
    fake.locked()
    api.ping()
    fake.fail("*", "*", 503, times=1, retry_after=7)
    api.ping()
    assert t.slept[0] >= 2.0
    assert t.slept[1] >= 7.0
    assert fake.total_calls == 4
    assert api.paused() is None


def _holds(engine: Engine) -> dict[str, float]:
    with engine.connect() as conn:
        rows = conn.execute(select(rate_holds.c.budget, rate_holds.c.held_until)).all()
    return {row.budget: row.held_until for row in rows}


def _slots(engine: Engine, budget: str) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(rate_slots.c.budget == budget)
        return int(conn.execute(query).scalar_one())


def test_a_search_429_is_retried_and_holds_only_the_search_budget(
    sqlite_file: str, fake: FakeHubSpot
) -> None:
    """Another app spent the account's searches: retried after a second; the main budget runs on."""
    t = FakeTime()
    api, engine = _process(sqlite_file, fake, t)
    fake.fail("POST", "*/search", 429, times=2, body=rate_limit_body(search=True))

    assert api.search_ids("meetings", "bookme_booking_id", "b-1") == []
    assert fake.calls["POST /crm/v3/objects/meetings/search"] == 3
    holds = _holds(engine)
    assert set(holds) == {"search:portal"}
    assert holds["search:portal"] <= START.timestamp() + 2.5  # a second, not the 10 s interval


def test_searches_take_nothing_from_the_ten_second_budget(
    sqlite_file: str, fake: FakeHubSpot
) -> None:
    """HubSpot exempts search from the ten-second limit: ten searches, no request slot."""
    t = FakeTime()
    api, engine = _process(sqlite_file, fake, t)
    for index in range(10):
        api.search_ids("meetings", "bookme_booking_id", f"b-{index}")
    assert _slots(engine, "requests:portal") == 0
    assert _slots(engine, "search:portal") > 0


def test_a_pro_portals_max_header_lets_every_process_use_190(sqlite_file: str) -> None:
    """Configured 100/10 s, HubSpot says Max 190: 190 calls go out, the first 185+ unwaited."""
    t = FakeTime()
    with FakeHubSpot(rate_limit=190, rate_window=10.0, search_rate_limit=None) as fake:
        first, _ = _process(sqlite_file, fake, t)
        second, _ = _process(sqlite_file, fake, t)
        sent_before_waiting: list[int] = []
        t.on_sleep = lambda: sent_before_waiting.append(fake.total_calls)
        for index in range(190):
            (first if index % 2 else second).ping()
        assert fake.rate_limited == 0
        assert fake.total_calls == 190
        assert not sent_before_waiting or sent_before_waiting[0] >= 185


def test_a_portal_shared_with_other_apps_is_not_overrun(sqlite_file: str) -> None:
    """Other apps used 17 of 20: Remaining runs low, the budget holds, HubSpot sends no 429."""
    with FakeHubSpot(rate_limit=20, rate_window=1.0, search_rate_limit=None) as fake:
        api, engine = _process(sqlite_file, fake, limit=(20, 1.0))
        fake.spend(17)
        started = time.monotonic()
        for _ in range(12):
            api.ping()
        assert fake.rate_limited == 0
        assert time.monotonic() - started >= 0.9  # held for HubSpot's interval
        assert "requests:portal" in _holds(engine)


def test_a_pause_reaches_every_process_on_postgresql(pg_url: str) -> None:
    """On PostgreSQL too: one process's pause and Max seen apply to every other at once."""
    engine = make_engine(pg_url)
    db.upgrade(engine)
    first = DatabaseWindow(engine, "requests:pg", 3, 10.0)
    other_engine = make_engine(pg_url)
    second = DatabaseWindow(other_engine, "requests:pg", 3, 10.0)
    try:
        until = datetime.now(UTC) + timedelta(hours=3)
        first.pause(until, "HubSpot account migration in progress")
        first.pause(until - timedelta(hours=2), "a shorter one")  # never shortens
        with pytest.raises(PausedError) as caught:
            second.acquire()
        assert abs((caught.value.until - until).total_seconds()) < 0.01
        pause = second.paused()
        assert pause is not None
        assert pause.reason == "HubSpot account migration in progress"

        other = DatabaseWindow(engine, "requests:pg-max", 3, 10.0)
        DatabaseWindow(other_engine, "requests:pg-max", 3, 10.0).observe(190, 150, 10.0)
        waited = [other.acquire() for _ in range(10)]
        assert waited == [0.0] * 10  # 10 > the configured 3: HubSpot's Max rules
    finally:
        engine.dispose()
        other_engine.dispose()


def test_readyz_metrics_and_dashboard_show_the_pause(
    fake: FakeHubSpot, make_settings: Callable[..., Settings]
) -> None:
    """While HubSpot pauses the portal: /readyz is ready and names it, /metrics has its end,
    the sync page shows a banner with the reason."""
    from adapter.services import build_services

    settings = make_settings(
        crm_backend="hubspot", hubspot_access_token=fake.token, hubspot_base_url=fake.url
    )
    services = build_services(settings)
    try:
        assert isinstance(services.backend, HubSpotBackend)
        fake.migration_in_progress(retry_after=5400)
        with pytest.raises(HubSpotPaused) as caught:
            services.backend.ping()
        until = caught.value.until
        with TestClient(
            create_app(services=services, embedded_workers=0), base_url="https://testserver"
        ) as client:
            ready = client.get("/readyz")
            metrics = client.get("/metrics").text
            assert log_in(client, ADMIN_TOKEN, "/ui/sync").status_code == 303
            page = client.get("/ui/sync").text
    finally:
        services.close()
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["checks"]["backend"] == "paused"
    assert body["hubspot"]["reason"] == "HubSpot account migration in progress"
    assert body["hubspot"]["pausedUntil"].startswith(until.strftime("%Y-%m-%dT%H:%M:%S"))
    gauge = next(
        line
        for line in metrics.splitlines()
        if line.startswith('bookme_crm_paused_until_seconds{backend="hubspot"}')
    )
    assert float(gauge.split()[-1]) == pytest.approx(until.timestamp(), abs=1)
    assert 'id="crm-paused"' in page
    assert "HubSpot account migration in progress" in page
