"""Changes sales staff make in HubSpot, seen by the poll and by app webhooks, against the fake."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from adapter.backends.base import SyncJob, SyncResult
from adapter.backends.hubspot import HubSpotApi, HubSpotBackend, RollingWindow, build_api, run_setup
from adapter.booking import parse_booking
from adapter.changes import PUSH_KIND, changes_for_booking
from adapter.changes.store import crm_changes
from adapter.hubspot_sync import store as poll_store
from adapter.hubspot_sync.poll import Poller
from adapter.mapping import MappingConfig, load_mapping, plan_booking
from adapter.timeutil import utcnow
from outbox.store import OutboxStore
from tests.conftest import DEFAULT_MAPPING, seed_booking
from tests.fakes.hubspot import FakeHubSpot


def _budget() -> RollingWindow:
    return RollingWindow(10_000, 10.0, sleep=lambda _s: None)


def _api(fake: FakeHubSpot) -> HubSpotApi:
    return build_api(
        fake.token or "",
        fake.url,
        (100, 10.0),
        timeout=5.0,
        max_attempts=3,
        sleep=lambda _s: None,
        budget=_budget(),
        search_budget=_budget(),
    )


@dataclass
class Sync:
    """The fake, the backend and the poller on one migrated SQLite file."""

    fake: FakeHubSpot
    api: HubSpotApi
    backend: HubSpotBackend
    mapping: MappingConfig
    engine: Engine
    outbox: OutboxStore
    pollers: list[Poller] = field(default_factory=list)
    events: int = 0

    def book(self, **booking: Any) -> SyncResult:
        """Apply one booking snapshot (the seed's fields overridden) through the backend."""
        plan = plan_booking(parse_booking(seed_booking(**booking)), self.mapping, now=utcnow())
        self.events += 1
        settled: dict[str, SyncResult] = {}
        job = SyncJob(f"evt-{self.events}", plan.booking_id, "lease", plan)
        failures = self.backend.apply(
            [job], lambda _conn, job, result: settled.__setitem__(job.event_id, result)
        )
        assert not failures, failures
        return settled[job.event_id]

    def poller(self, **options: Any) -> Poller:
        poller = Poller(
            self.api,
            self.engine,
            self.outbox,
            lambda: self.mapping.defaults.hubspot.deal_stages,
            **{"lag_seconds": 5.0, **options},
        )
        self.pollers.append(poller)
        return poller

    def changes(self, booking_id: str = "test-123") -> list[Any]:
        with self.engine.connect() as conn:
            return changes_for_booking(conn, booking_id)

    def pushes(self) -> list[Any]:
        return [e for e in self.outbox.list(limit=1000) if e.kind == PUSH_KIND]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Engine]:
    """The service's migrated database: the SQLite file, and again a fresh PostgreSQL one."""
    if request.param == "sqlite":
        yield engine
        return
    from adapter import db

    postgres = db.make_engine(request.getfixturevalue("pg_url"))
    db.upgrade(postgres)
    yield postgres
    postgres.dispose()


@pytest.fixture
def sync(fake: FakeHubSpot, database: Engine) -> Iterator[Sync]:
    """A prepared portal whose search sees writes at once, and the service around it."""
    engine = database
    fake.configure(search_lag=0.0)
    api = _api(fake)
    mapping = load_mapping(DEFAULT_MAPPING)
    assert run_setup(api, mapping).ok
    backend = HubSpotBackend(api, engine, lambda: mapping.defaults.hubspot)
    yield Sync(fake, api, backend, mapping, engine, OutboxStore(engine))
    backend.close()


def _meeting(sync: Sync, booking_id: str = "test-123") -> dict[str, Any]:
    (meeting,) = sync.fake.find("meetings", bookme_booking_id=booking_id)
    return meeting


def test_a_salesperson_moving_the_meeting_is_one_change_and_one_push(sync: Sync) -> None:
    """Rescheduled in HubSpot's UI: the poll records one start change and queues one push."""
    sync.book()
    meeting = _meeting(sync)
    sync.fake.reschedule_meeting(meeting["id"], "2027-02-16T13:30:00Z")

    report = sync.poller().poll_once()
    assert report is not None

    (change,) = sync.changes()
    assert (change.object_type, change.field, change.source) == ("meeting", "start", "poll")
    assert change.old_value == "2027-02-15T10:00:00.000Z"
    assert change.new_value == "2027-02-16T13:30:00.000Z"
    assert change.actor == "userId:7001"
    assert change.state == "pending"
    (push,) = sync.pushes()
    assert push.payload["action"] == "reschedule"
    assert push.payload["scheduledStart"] == "2027-02-16T13:30:00.000Z"
    assert push.payload["duration"] == 120
    assert push.payload["changeId"] == change.id

    # Polled again (and again): nothing new.
    sync.poller().poll_once()
    sync.poller().poll_once()
    assert len(sync.changes()) == 1
    assert len(sync.pushes()) == 1


def test_the_services_own_writes_are_never_changes(sync: Sync) -> None:
    """Bookings written, rescheduled and cancelled by BookMe: polls see only echoes."""
    sync.book()
    poller = sync.poller()
    poller.poll_once()
    sync.book(scheduledDate="2027-02-20T09:00:00Z", duration=45)
    poller.poll_once()
    sync.book(scheduledDate="2027-02-20T09:00:00Z", duration=45, status="cancelled")
    poller.poll_once()
    assert sync.changes() == []
    assert sync.pushes() == []
    with sync.engine.connect() as conn:
        assert poll_store.own_source(conn) == f"INTEGRATION:{sync.fake.app_id}"


def test_progress_in_hubspot_is_recorded_without_a_push(sync: Sync) -> None:
    """A deal lost, a task completed, a meeting completed: progress, kept, nothing pushed."""
    result = sync.book()
    assert result.lead is not None
    sync.fake.set_deal_stage(result.lead.id, "closedlost")
    task = sync.fake.objects("tasks")[0]
    sync.fake.set_task_status(task["id"], "COMPLETED")
    sync.fake.set_meeting_outcome(_meeting(sync)["id"], "COMPLETED")

    sync.poller().poll_once()

    found = {(c.object_type, c.field): c for c in sync.changes()}
    assert set(found) == {("deal", "stage"), ("task", "status"), ("meeting", "outcome")}
    # The stage id read back through the mapping's deal_stages (closedlost is LOST).
    assert found[("deal", "stage")].new_value == "LOST"
    assert found[("task", "status")].new_value == "done"
    assert found[("meeting", "outcome")].new_value == "COMPLETED"
    assert {c.state for c in found.values()} == {"recorded"}
    assert sync.pushes() == []


def test_a_meeting_cancelled_in_hubspot_is_pushed_with_its_notes(sync: Sync) -> None:
    """Outcome CANCELED with internal notes: one cancel push carrying the notes as reason."""
    sync.book()
    sync.fake.set_meeting_outcome(_meeting(sync)["id"], "CANCELED", notes="Client is ill")
    sync.poller().poll_once()
    (change,) = sync.changes()
    assert (change.field, change.new_value, change.state) == ("outcome", "CANCELED", "pending")
    (push,) = sync.pushes()
    assert (push.payload["action"], push.payload["reason"]) == ("cancel", "Client is ill")


def test_bookmes_newer_time_wins_and_the_crm_change_is_superseded(sync: Sync) -> None:
    """Moved in HubSpot, then rescheduled in BookMe before the poll: the CRM's move is
    recorded as superseded (shown, not lost), and nothing is pushed."""
    sync.book()
    poller = sync.poller()
    poller.poll_once()
    sync.fake.reschedule_meeting(_meeting(sync)["id"], "2027-02-16T13:30:00Z")
    sync.book(scheduledDate="2027-02-18T08:00:00Z")  # BookMe's newer snapshot, written over it

    poller.poll_once()

    (change,) = sync.changes()
    assert (change.field, change.new_value) == ("start", "2027-02-16T13:30:00.000Z")
    assert change.state == "superseded"
    assert change.detail is not None
    assert "2027-02-18T08:00:00.000Z" in change.detail
    assert sync.pushes() == []
    assert _meeting(sync)["properties"]["hs_meeting_start_time"] == "2027-02-18T08:00:00.000Z"
    poller.poll_once()
    assert len(sync.changes()) == 1


def test_a_change_the_search_index_shows_late_is_still_recorded(sync: Sync) -> None:
    """Search lags writes: a change invisible to one poll is found by the next (the
    position minus the lag), and recorded once."""
    sync.book()
    poller = sync.poller(lag_seconds=30.0)
    poller.poll_once()
    sync.fake.configure(search_lag=3600.0)  # the index is behind: the edit is not searchable
    sync.fake.reschedule_meeting(_meeting(sync)["id"], "2027-02-16T13:30:00Z")
    poller.poll_once()
    assert sync.changes() == []
    sync.fake.flush_search_index()
    poller.poll_once()
    poller.poll_once()
    (change,) = sync.changes()
    assert change.new_value == "2027-02-16T13:30:00.000Z"


def test_two_pollers_at_once_record_each_change_once(sync: Sync) -> None:
    """Four pollers (threads, one database) racing over the same edits: each change once."""
    for index in range(5):
        sync.book(bookingId=f"bk-{index}", email=f"p{index}@example.com")
    pollers = [sync.poller(owner=f"p{n}") for n in range(4)]
    for poller in pollers:
        poller.poll_once()
    for index in range(5):
        meeting = _meeting(sync, f"bk-{index}")
        sync.fake.reschedule_meeting(meeting["id"], f"2027-03-0{index + 1}T10:00:00Z")
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda p=poller: results.append(p.poll_once()))
        for poller in pollers
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with sync.engine.connect() as conn:
        rows = conn.execute(select(crm_changes.c.booking_id, crm_changes.c.field)).all()
    assert sorted(rows) == [(f"bk-{i}", "start") for i in range(5)]
    assert len(sync.pushes()) == 5


def test_the_position_is_kept_per_type_and_only_moves_forward(sync: Sync) -> None:
    """After a round every type has a committed position; an older one never replaces it."""
    sync.book()
    sync.poller().poll_once()
    with sync.engine.begin() as conn:
        first = {t: poll_store.position(conn, t) for t in ("meetings", "tasks", "deals")}
        assert all(first.values())
        poll_store.advance(conn, "meetings", 1, utcnow())
        assert poll_store.position(conn, "meetings") == first["meetings"]


def test_the_lease_keeps_a_second_poller_out_until_it_expires(sync: Sync) -> None:
    """A held lease: another poller's round is skipped; once expired it polls."""
    now = datetime.now(UTC)
    with sync.engine.begin() as conn:
        assert poll_store.take_lease(conn, "someone", 60, now)
    assert sync.poller().poll_once() is None
    with sync.engine.begin() as conn:
        assert not poll_store.take_lease(conn, "other", 60, now + timedelta(seconds=59))
        assert poll_store.take_lease(conn, "other", 60, now + timedelta(seconds=61))


def test_hubspot_reformatting_our_values_is_not_a_change(sync: Sync) -> None:
    """HubSpot answering our times as epoch milliseconds (and a whole booking's life
    written by the service) reads back as echoes: nothing recorded, nothing pushed."""
    sync.fake.configure(datetime_answers="epoch_ms")
    sync.book(scheduledDate="2027-02-15T10:00:00.000+00:00")
    found = sync.api.read_with_history(
        "meetings", [_meeting(sync)["id"]], ["hs_meeting_start_time"], []
    )
    assert next(iter(found.values())).properties["hs_meeting_start_time"] == "1802685600000"
    poller = sync.poller()
    poller.poll_once()
    sync.book(event="booking.rescheduled", scheduledDate="2027-02-15T11:00:00+01:00")
    report = poller.poll_once()
    assert report is not None
    assert report.tally.read >= 3  # the meeting, its deal and tasks were read and compared
    assert sync.changes() == []
    assert sync.pushes() == []


def test_past_the_search_cap_the_poll_queries_again_from_the_newest_seen(
    sync: Sync, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HubSpot pages one query through 10,000 results at most (shrunk here to 12, pages
    of 5): the poll starts a new query from the newest modification seen, the fake
    never answers its 400, and every one of 15 edits is recorded once."""
    import adapter.hubspot_sync.poll as poll_module
    import tests.fakes.hubspot as fake_module

    for index in range(15):
        sync.book(bookingId=f"bk-{index}", email=f"p{index}@example.com")
    poller = sync.poller()
    poller.poll_once()
    monkeypatch.setattr(fake_module, "MAX_SEARCH_RESULTS", 12)
    monkeypatch.setattr(poll_module, "MAX_SEARCH_RESULTS", 12)
    monkeypatch.setattr(poll_module, "PAGE_SIZE", 5)
    for index in range(15):
        sync.fake.reschedule_meeting(_meeting(sync, f"bk-{index}")["id"], "2027-04-01T10:00:00Z")
        time.sleep(0.003)  # a few milliseconds apart, as people edit
    report = poller.poll_once()
    assert report is not None
    assert report.pages["meetings"] >= 4
    with sync.engine.connect() as conn:
        rows = conn.execute(select(crm_changes.c.booking_id)).scalars().all()
    assert sorted(rows) == sorted(f"bk-{index}" for index in range(15))
    assert sync.fake.errors == []


def test_the_fake_search_takes_one_sort_and_compares_dates_as_instants(sync: Sync) -> None:
    """The search the poll makes, as HubSpot answers it: GTE on hs_lastmodifieddate in epoch
    ms, ascending; two sorts are refused (HubSpot allows one)."""
    import httpx

    sync.book()
    meeting = _meeting(sync)
    changed = sync.fake.reschedule_meeting(meeting["id"], "2027-02-16T13:30:00Z")
    since = int(datetime.fromisoformat(changed.replace("Z", "+00:00")).timestamp() * 1000)
    page = sync.api.search_modified("meetings", "bookme_booking_id", since, [])
    assert [found.id for found in page.results] == [meeting["id"]]
    assert sync.api.search_modified("meetings", "bookme_booking_id", since + 1, []).results == []
    answer = httpx.post(
        f"{sync.fake.url}/crm/v3/objects/meetings/search",
        headers={"Authorization": f"Bearer {sync.fake.token}"},
        json={
            "sorts": [
                {"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"},
                {"propertyName": "hs_object_id", "direction": "ASCENDING"},
            ]
        },
    )
    assert answer.status_code == 400
    assert "one sort" in answer.json()["message"]


def test_the_fake_keeps_each_propertys_history_with_its_source(sync: Sync) -> None:
    """Our writes are INTEGRATION with the app id; a salesperson's CRM_UI with the user;
    a batch read with propertiesWithHistory answers them newest first."""
    sync.book()
    meeting = _meeting(sync)
    sync.fake.reschedule_meeting(meeting["id"], "2027-02-16T13:30:00Z", user_id=42)
    found = sync.api.read_with_history(
        "meetings", [meeting["id"]], ["hs_meeting_start_time"], ["hs_meeting_start_time"]
    )[meeting["id"]]
    newest, oldest = found.history["hs_meeting_start_time"]
    assert (newest.value, newest.source_type, newest.source_id) == (
        "2027-02-16T13:30:00.000Z",
        "CRM_UI",
        "userId:42",
    )
    assert (oldest.value, oldest.source_type) == ("2027-02-15T10:00:00.000Z", "INTEGRATION")
    assert oldest.source_id == str(sync.fake.app_id)
    assert newest.timestamp > oldest.timestamp


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_migration_0020_makes_the_poll_table_with_its_lease_row_and_downgrades(
    request: pytest.FixtureRequest, tmp_path: Any, database: str
) -> None:
    """On SQLite and PostgreSQL, 0020 creates hubspot_poll as the store declares it with the
    lease row in place; the lease and positions work on it; downgrading to 0019 drops it."""
    from alembic import command
    from sqlalchemy import inspect

    from adapter import db

    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("hubspot_poll")}
        assert columns == {c.name for c in poll_store.hubspot_poll.columns}
        now = datetime.now(UTC)
        with engine.begin() as conn:
            assert poll_store.take_lease(conn, "a", 30, now)
            assert not poll_store.take_lease(conn, "b", 30, now)
            poll_store.advance(conn, "meetings", 10, now)
            poll_store.advance(conn, "meetings", 5, now)
            assert poll_store.position(conn, "meetings") == 10
            poll_store.release_lease(conn, "a", now)
            assert poll_store.take_lease(conn, "b", 30, now)
        with engine.begin() as conn:
            config = db._config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0019_crm_changes")
        assert "hubspot_poll" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_poll_command_runs_one_round_and_says_when_another_polls(
    sync: Sync, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bookme-crm hubspot poll --once`: one round, its counts; exit 1 while the lease is held."""
    from typer.testing import CliRunner

    from adapter.cli import app

    sync.book()
    sync.fake.reschedule_meeting(_meeting(sync)["id"], "2027-02-16T13:30:00Z")
    monkeypatch.chdir(tmp_path)
    env = {
        "CRM_BACKEND": "hubspot",
        "HUBSPOT_ACCESS_TOKEN": sync.fake.token or "",
        "HUBSPOT_BASE_URL": sync.fake.url,
        "MAPPINGS_PATH": str(DEFAULT_MAPPING),
        "DATABASE_URL": str(sync.engine.url),
        "DATA_DIR": str(tmp_path / "var"),
        "HUBSPOT_SEARCH_LAG_SECONDS": "5",
    }
    runner = CliRunner()
    ran = runner.invoke(app, ["hubspot", "poll", "--once"], env=env)
    assert ran.exit_code == 0, ran.output
    assert "1 change(s), 1 push(es) queued" in ran.output
    with sync.engine.begin() as conn:
        assert poll_store.take_lease(conn, "elsewhere", 60, datetime.now(UTC))
    busy = runner.invoke(app, ["hubspot", "poll", "--once"], env=env)
    assert busy.exit_code == 1
    assert "another process is polling" in busy.output
    local = runner.invoke(app, ["hubspot", "poll", "--once"], env={**env, "CRM_BACKEND": "local"})
    assert local.exit_code == 2
