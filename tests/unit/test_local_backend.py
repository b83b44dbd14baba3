"""LocalBackend: identity rules of contract §4 held by the database itself."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select, update
from sqlalchemy.exc import OperationalError

from adapter.backends.base import CrmBackend, SyncJob, SyncResult
from adapter.backends.local import (
    LocalBackend,
    activities,
    companies,
    contacts,
    crm_metadata,
    leads,
    tasks,
    translate_error,
)
from adapter.changes import changes_metadata
from adapter.changes.tasks import tasks_metadata
from adapter.errors import PermanentError, RetryableError
from adapter.owners import owners_metadata
from adapter.plan import BookingPlan, CompanyPlan, ContactPlan, LeadPlan, MeetingPlan, TaskPlan
from outbox.db import make_engine
from outbox.exceptions import LeaseLost

START = datetime(2027, 2, 15, 10, 0, tzinfo=UTC)
VERSIONS = Path(__file__).resolve().parents[2] / "adapter/migrations/versions"
MIGRATIONS = (
    VERSIONS / "0002_local_crm.py",
    VERSIONS / "0003_lifecycle.py",
    VERSIONS / "0012_crm_properties.py",  # the mapped properties beside the records
    VERSIONS / "0015_owner_rotations.py",
    VERSIONS / "0019_crm_changes.py",  # the backend records what it wrote (record_written)
    VERSIONS / "0021_bookme_push.py",  # a lead's stage set by hand
)


def make_plan(
    *,
    booking_id: str = "test-123",
    event_type: str = "workshop",
    name: str = "Test Person",
    email: str = "test@example.com",
    phone: str | None = None,
    company: str | None = None,
    start: datetime = START,
    event: str = "booking.created",
    tags: tuple[str, ...] = ("bookme", "workshop"),
    snapshot_at: datetime | None = None,
) -> BookingPlan:
    """A plan as the mapping would build it, with the identity keys of contract §4."""
    cancelled = event == "booking.cancelled"
    email_key = email.strip().lower()
    name_key = " ".join(company.split()).casefold() if company else None
    owner = f"company:{name_key}" if name_key else f"contact:{email_key}"
    first, _, last = name.partition(" ")
    return BookingPlan(
        booking_id=booking_id,
        event_type=event_type,
        event=event,
        lifecycle="cancelled" if cancelled else "active",
        snapshot_at=snapshot_at or start - timedelta(days=30),
        contact=ContactPlan(
            email_key=email_key,
            email=email.strip(),
            first_name=first,
            last_name=last,
            phone=phone,
            tags=tags,
        ),
        company=CompanyPlan(name_key=name_key, name=company.strip(), tags=tags)
        if company and name_key
        else None,
        lead=LeadPlan(
            lead_key=f"{owner}|{event_type}",
            title=f"{event_type} - {company or name}",
            stage="CONTACTED",
            source="BookMe",
            source_details=f"BookMe booking {booking_id}",
            estimated_value=15000,
            lead_score=60,
            tags=tags,
            activity_at=start,
        ),
        meeting=MeetingPlan(
            booking_id=booking_id,
            subject=f"{event_type} - Scheduled",
            description="Bokning via BookMe",
            start=start,
            duration_minutes=120,
            end=start + timedelta(minutes=120),
            meeting_url="https://meet.example.com/abc",
            outcome="CANCELED" if cancelled else "SCHEDULED",
            source="bookme",
        ),
        tasks=(
            TaskPlan(
                key="prep",
                title="Send workshop prep info",
                description="Prep",
                due=start - timedelta(days=7),
                priority="high",
                status="cancelled" if cancelled else "todo",
            ),
            TaskPlan(
                key="follow_up",
                title="Workshop follow-up",
                description="Follow up",
                due=start + timedelta(days=1),
                priority="medium",
                status="cancelled" if cancelled else "todo",
            ),
        ),
    )


def job_for(plan: BookingPlan, event_id: str | None = None) -> SyncJob:
    """A claimed outbox job carrying ``plan``."""
    return SyncJob(
        event_id=event_id or uuid.uuid4().hex,
        booking_id=plan.booking_id,
        lease_token=uuid.uuid4().hex,
        plan=plan,
    )


class Settles:
    """A settle callback that records what it was given (thread-safe)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, SyncResult]] = []
        self._lock = threading.Lock()

    def __call__(self, conn: Connection, job: SyncJob, result: SyncResult) -> None:
        with self._lock:
            self.calls.append((job.event_id, result))


def lose_lease(conn: Connection, job: SyncJob, result: SyncResult) -> None:
    """A settle fenced out by another worker."""
    raise LeaseLost(job.event_id)


def count(engine: Engine, table: Table) -> int:
    """Rows in ``table``."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def rows(engine: Engine, table: Table) -> list[Any]:
    """Every row of ``table``."""
    with engine.connect() as conn:
        return list(conn.execute(select(table)))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite file with the local CRM's tables."""
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    crm_metadata.create_all(engine)
    changes_metadata.create_all(engine)  # the backend's record_written
    yield engine
    engine.dispose()


@pytest.fixture
def backend(engine: Engine) -> LocalBackend:
    """The backend under test."""
    return LocalBackend(engine)


def assert_one_of_each(engine: Engine, n_tasks: int = 2) -> None:
    """Exactly one contact, lead and meeting and ``n_tasks`` tasks exist."""
    assert count(engine, contacts) == 1
    assert count(engine, leads) == 1
    assert count(engine, activities) == 1
    assert count(engine, tasks) == n_tasks


def test_backend_satisfies_protocol_and_pings(backend: LocalBackend) -> None:
    """LocalBackend is a CrmBackend named "local" whose ping and close succeed."""
    assert isinstance(backend, CrmBackend)
    assert backend.name == "local"
    backend.ping()
    backend.close()


def test_new_booking_creates_one_of_each_and_settles(engine: Engine, backend: LocalBackend) -> None:
    """A new booking makes one company, contact, lead, meeting and its tasks, and settles once."""
    settle = Settles()
    plan = make_plan(company="Nordkap Konsult AB", phone="+46 70 123")
    job = job_for(plan)

    assert backend.apply([job], settle) == {}

    assert count(engine, companies) == 1
    assert_one_of_each(engine)
    [(event_id, result)] = settle.calls
    assert event_id == job.event_id
    [lead] = rows(engine, leads)
    [contact] = rows(engine, contacts)
    [company] = rows(engine, companies)
    [meeting] = rows(engine, activities)
    assert result.lead.id == lead.id
    assert result.lead.title == "workshop - Nordkap Konsult AB"
    assert result.contact.id == contact.id
    assert result.contact.email == "test@example.com"
    assert result.company is not None
    assert result.company.id == company.id
    assert result.activity.id == meeting.id
    assert [t.title for t in result.tasks] == ["Send workshop prep info", "Workshop follow-up"]
    assert result.tasks[1].dueDate == "2027-02-16T10:00:00.000Z"
    assert lead.contact_id == contact.id
    assert lead.company_id == company.id
    assert contact.company_id == company.id
    assert contact.phone == "+46 70 123"
    assert meeting.lead_id == lead.id
    assert meeting.type == "MEETING"
    assert {t.status for t in rows(engine, tasks)} == {"todo"}


def test_same_plan_twenty_times_keeps_one_of_each(engine: Engine, backend: LocalBackend) -> None:
    """Applying one plan 20 times leaves exactly one record per identity, with stable ids."""
    settle = Settles()
    plan = make_plan(company="Acme")
    for _ in range(20):
        assert backend.apply([job_for(plan)], settle) == {}

    assert count(engine, companies) == 1
    assert_one_of_each(engine)
    assert len({result.model_dump_json() for _, result in settle.calls}) == 1


def test_concurrent_applies_of_one_plan_keep_one_of_each(
    engine: Engine, backend: LocalBackend
) -> None:
    """Eight threads applying the same plan at once still leave one record per identity."""
    settle = Settles()
    plan = make_plan(company="Acme")
    barrier = threading.Barrier(8)

    def apply_once(_: int) -> dict[str, Any]:
        barrier.wait()
        return dict(backend.apply([job_for(plan)], settle))

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(apply_once, range(8)))

    assert outcomes == [{}] * 8
    assert len(settle.calls) == 8
    assert count(engine, companies) == 1
    assert_one_of_each(engine)


def test_concurrent_colleagues_share_company_and_lead(
    engine: Engine, backend: LocalBackend
) -> None:
    """Eight colleagues booking at once make one company, one lead and eight contacts."""
    plans = [
        make_plan(booking_id=f"bk-{i}", email=f"p{i}@acme.test", company="Acme") for i in range(8)
    ]
    barrier = threading.Barrier(8)

    def apply_once(plan: BookingPlan) -> dict[str, Any]:
        barrier.wait()
        return dict(backend.apply([job_for(plan)], Settles()))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(apply_once, plans)) == [{}] * 8

    assert count(engine, companies) == 1
    assert count(engine, leads) == 1
    assert count(engine, contacts) == 8
    assert count(engine, activities) == 8


def test_two_people_of_one_company_share_company_and_lead(
    engine: Engine, backend: LocalBackend
) -> None:
    """Two people of one company: one company, two contacts, one lead."""
    first = make_plan(booking_id="bk-1", email="anna@acme.test", company="Acme")
    second = make_plan(booking_id="bk-2", email="bo@acme.test", name="Bo Ek", company="Acme")

    assert backend.apply([job_for(first), job_for(second)], Settles()) == {}

    assert count(engine, companies) == 1
    assert count(engine, contacts) == 2
    assert count(engine, leads) == 1
    assert {c.company_id for c in rows(engine, contacts)} == {rows(engine, companies)[0].id}


def test_repeat_booking_advances_lead_and_adds_meeting(
    engine: Engine, backend: LocalBackend
) -> None:
    """One person booking twice: one lead whose last activity only moves forward, two meetings."""
    later = START + timedelta(days=10)
    first = make_plan(booking_id="bk-1")
    second = make_plan(booking_id="bk-2", start=later)

    backend.apply([job_for(first), job_for(second)], Settles())
    [lead] = rows(engine, leads)
    assert lead.last_activity_date == later

    backend.apply([job_for(first)], Settles())
    [lead] = rows(engine, leads)
    assert lead.last_activity_date == later
    assert count(engine, activities) == 2
    assert count(engine, tasks) == 4


def test_email_variants_make_one_contact(engine: Engine, backend: LocalBackend) -> None:
    """Emails differing in case and whitespace are one contact, spelt as the newest snapshot."""
    variants = ["test@example.com", "Test@example.com\t", "  TEST@Example.COM "]
    for i, email in enumerate(variants):
        plan = make_plan(booking_id=f"bk-{i}", email=email, snapshot_at=START - timedelta(days=i))
        backend.apply([job_for(plan)], Settles())

    [contact] = rows(engine, contacts)
    assert contact.email == "test@example.com"
    assert count(engine, leads) == 1


def test_company_name_variants_make_one_company(engine: Engine, backend: LocalBackend) -> None:
    """Company names differing in case and whitespace are one company, named by the newest."""
    variants = [" nordkap  KONSULT ab", "Nordkap Konsult AB", "NORDKAP\tKonsult AB "]
    for i, name in enumerate(variants):
        plan = make_plan(
            booking_id=f"bk-{i}",
            email=f"p{i}@nordkap.se",
            company=name,
            snapshot_at=START - timedelta(days=[5, 1, 3][i]),
        )
        backend.apply([job_for(plan)], Settles())

    [company] = rows(engine, companies)
    assert company.name == "Nordkap Konsult AB"
    assert count(engine, leads) == 1
    assert count(engine, contacts) == 3


def test_reapply_updates_contact_keeps_phone_and_unions_tags(
    engine: Engine, backend: LocalBackend
) -> None:
    """A newer booking updates the name, keeps a phone it does not repeat and unions tags."""
    backend.apply([job_for(make_plan(phone="+46 70 1"))], Settles())
    again = make_plan(
        booking_id="bk-2",
        name="Test Persson",
        event_type="30min-consultation",
        tags=("bookme", "30min-consultation"),
        snapshot_at=START,
    )
    backend.apply([job_for(again)], Settles())

    [contact] = rows(engine, contacts)
    assert (contact.last_name, contact.phone) == ("Persson", "+46 70 1")
    assert contact.tags == ["30min-consultation", "bookme", "workshop"]
    assert count(engine, leads) == 2


def test_done_task_is_not_reopened(engine: Engine, backend: LocalBackend) -> None:
    """A task marked done stays done (and unchanged) when its booking is applied again."""
    backend.apply([job_for(make_plan())], Settles())
    with engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.key == "follow_up").values(status="done"))

    moved = make_plan(start=START + timedelta(days=3))
    backend.apply([job_for(moved)], Settles())

    by_key = {t.key: t for t in rows(engine, tasks)}
    assert by_key["follow_up"].status == "done"
    assert by_key["follow_up"].due_date == START + timedelta(days=1)
    assert by_key["prep"].status == "todo"
    assert by_key["prep"].due_date == START + timedelta(days=3) - timedelta(days=7)
    assert rows(engine, activities)[0].activity_date == START + timedelta(days=3)


def test_cancellation_cancels_open_tasks_only(engine: Engine, backend: LocalBackend) -> None:
    """A cancelled booking's meeting is CANCELED and its open tasks cancelled; done ones stay."""
    backend.apply([job_for(make_plan())], Settles())
    with engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.key == "prep").values(status="done"))

    cancel = make_plan(event="booking.cancelled", snapshot_at=START - timedelta(days=2))
    backend.apply([job_for(cancel)], Settles())

    assert {t.key: t.status for t in rows(engine, tasks)} == {
        "prep": "done",
        "follow_up": "cancelled",
    }
    assert rows(engine, activities)[0].outcome == "CANCELED"


def test_datetimes_are_stored_in_utc(engine: Engine, backend: LocalBackend) -> None:
    """A start with a +01:00 offset is stored and read back as the same instant in UTC."""
    start = datetime(2027, 3, 4, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    backend.apply([job_for(make_plan(start=start))], Settles())

    [meeting] = rows(engine, activities)
    assert meeting.activity_date == start
    assert meeting.activity_date.tzinfo == UTC
    assert meeting.activity_date.hour == 8


def test_lease_lost_rolls_back_only_that_job(engine: Engine, backend: LocalBackend) -> None:
    """LeaseLost from settle undoes that job's writes, keeps the others and reports nothing
    (the batch is retried job by job, so the kept job's settle is called again)."""
    recorder = Settles()
    kept, lost = (
        job_for(make_plan(booking_id="bk-kept")),
        job_for(make_plan(booking_id="bk-lost", email="lost@example.com", company="Lost AB")),
    )

    def settle(conn: Connection, job: SyncJob, result: SyncResult) -> None:
        if job is lost:
            lose_lease(conn, job, result)
        recorder(conn, job, result)

    assert backend.apply([kept, lost], settle) == {}

    assert {event_id for event_id, _ in recorder.calls} == {kept.event_id}
    assert [a.booking_id for a in rows(engine, activities)] == ["bk-kept"]
    assert [c.email for c in rows(engine, contacts)] == ["test@example.com"]
    assert count(engine, companies) == 0
    assert count(engine, leads) == 1


def test_failing_job_does_not_undo_the_others(engine: Engine, backend: LocalBackend) -> None:
    """A job that fails is rolled back and reported; the jobs before and after it commit."""
    plans = [make_plan(booking_id=f"bk-{i}", email=f"p{i}@example.com") for i in range(3)]
    jobs = [job_for(plan) for plan in plans]

    def settle(conn: Connection, job: SyncJob, result: SyncResult) -> None:
        if job is jobs[1]:
            raise ValueError("settle broke")

    failures = backend.apply(jobs, settle)

    assert list(failures) == [jobs[1].event_id]
    error = failures[jobs[1].event_id]
    assert isinstance(error, PermanentError)
    assert "bk-1" in str(error)
    assert "settle broke" in str(error)
    assert sorted(a.booking_id for a in rows(engine, activities)) == ["bk-0", "bk-2"]
    assert count(engine, contacts) == 2


def test_database_errors_are_translated_by_kind() -> None:
    """Operational database errors are retryable; other failures are permanent."""
    job = job_for(make_plan())
    locked = OperationalError("INSERT", {}, Exception("database is locked"))

    assert isinstance(translate_error(locked, job), RetryableError)
    assert isinstance(translate_error(KeyError("x"), job), PermanentError)
    mine = RetryableError("kept")
    assert translate_error(mine, job) is mine


def test_unavailable_database_fails_every_job_retryably(tmp_path: Path) -> None:
    """When the transaction cannot even begin, every job is reported retryable."""
    missing = tmp_path / "no-such-dir" / "crm.db"
    engine = create_engine(f"sqlite:///{missing}")
    jobs = [job_for(make_plan(booking_id=f"bk-{i}")) for i in range(2)]
    try:
        failures = LocalBackend(engine).apply(jobs, Settles())
    finally:
        engine.dispose()

    assert set(failures) == {job.event_id for job in jobs}
    assert all(isinstance(error, RetryableError) for error in failures.values())


def migrate(conn: Connection, migrations: tuple[Path, ...] = MIGRATIONS) -> None:
    """Run the ``upgrade`` of each migration file in turn on ``conn``."""
    for path in migrations:
        spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with Operations.context(MigrationContext.configure(conn)):
            module.upgrade()


def test_migration_mirrors_the_tables(tmp_path: Path) -> None:
    """Migrations 0002, 0003, 0012, 0015, 0019, 0021 create exactly the CRM's tables,
    constraints and indexes."""
    engine = make_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        with engine.begin() as conn:
            migrate(conn)
            diff = compare_metadata(
                MigrationContext.configure(conn),
                [crm_metadata, owners_metadata, changes_metadata, tasks_metadata],  # type: ignore[arg-type]
            )
        assert diff == []
        LocalBackend(engine).apply([job_for(make_plan(company="Acme"))], Settles())
        assert count(engine, companies) == 1
    finally:
        engine.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """The shared fresh PostgreSQL database, migrated to 0015 (CRM, owners)."""
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            migrate(conn)
        yield engine
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_migration_and_concurrent_upserts(pg_engine: Engine) -> None:
    """On PostgreSQL the migration matches and 8 concurrent applies keep one of each."""
    with pg_engine.connect() as conn:
        context = MigrationContext.configure(conn)
        metadata = [crm_metadata, owners_metadata, changes_metadata, tasks_metadata]
        assert compare_metadata(context, metadata) == []  # type: ignore[arg-type]
    backend = LocalBackend(pg_engine)
    plan = make_plan(company="Acme")
    barrier = threading.Barrier(8)

    def apply_once(_: int) -> dict[str, Any]:
        barrier.wait()
        return dict(backend.apply([job_for(plan)], Settles()))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(apply_once, range(8))) == [{}] * 8

    assert count(pg_engine, companies) == 1
    assert_one_of_each(pg_engine)
    later = make_plan(booking_id="bk-2", company="Acme", start=START + timedelta(days=5))
    assert backend.apply([job_for(later), job_for(plan)], Settles()) == {}
    assert rows(pg_engine, leads)[0].last_activity_date == START + timedelta(days=5)


def _statements(engine: Engine) -> list[str]:
    """Every statement ``engine`` runs from now on, until the test ends."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen


def test_a_batch_is_one_transaction_of_few_statements(
    engine: Engine, backend: LocalBackend
) -> None:
    """A batch is written without savepoints, each kind of record in one statement for
    every booking; a record several bookings share takes one more statement for each."""
    plans = [
        make_plan(booking_id=f"bk-{i}", email=f"p{i}@example.com", company=f"Firm {i}")
        for i in range(10)
    ]
    statements = _statements(engine)

    assert backend.apply([job_for(plan) for plan in plans], Settles()) == {}

    assert not [s for s in statements if s.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))]
    # BEGIN; companies, contacts, leads; the meetings' leads, meetings, stages; tasks, open tasks
    assert len(statements) == 9, statements
    assert count(engine, activities) == 10
    assert count(engine, tasks) == 20

    shared = [
        make_plan(booking_id=f"bk-s{i}", email=f"q{i % 3}@example.com", company="Acme")
        for i in range(6)
    ]
    settle = Settles()
    statements.clear()
    assert backend.apply([job_for(plan) for plan in shared], settle) == {}

    assert len(settle.calls) == 6
    # Two bookings a contact, all six of one company and lead: 6 + 2 + 6 upserts.
    assert len(statements) == 9 - 3 + 6 + 2 + 6, statements
    assert count(engine, contacts) == 13


def _crm(engine: Engine) -> dict[str, Any]:
    """The CRM's rows by natural key, ids replaced by the keys they point at."""
    with engine.connect() as conn:
        keys = {
            **{r.id: r.name_key for r in conn.execute(select(companies))},
            **{r.id: r.email_key for r in conn.execute(select(contacts))},
            **{r.id: r.lead_key for r in conn.execute(select(leads))},
        }
        state: dict[str, Any] = {}
        for table, key in (
            (companies, "name_key"),
            (contacts, "email_key"),
            (leads, "lead_key"),
            (activities, "booking_id"),
            (tasks, "id"),
        ):
            for row in conn.execute(select(table)):
                values = {
                    k: keys.get(v, v) if isinstance(v, str) else v
                    for k, v in row._mapping.items()
                    if k not in ("id", "created_at", "updated_at")
                }
                name = f"{row.booking_id}|{row.key}" if table is tasks else row._mapping[key]
                state[f"{table.name}:{name}"] = values
    return state


def _refs(result: SyncResult) -> tuple[Any, ...]:
    """A result's names and titles, its ids aside."""
    return (
        result.lead.title,
        result.contact.email,
        result.company.name if result.company else None,
        [(t.title, t.dueDate) for t in result.tasks],
    )


def test_a_batch_ends_as_its_jobs_applied_one_by_one(tmp_path: Path) -> None:
    """Shared records raced by version, a meeting moving to another lead, a done task and a
    cancellation: one batch leaves the CRM, and returns results, as its jobs one at a time."""
    first = make_plan(booking_id="bk-move", email="ann@example.com", company="Old AB")
    batch = [
        make_plan(booking_id="bk-new", name="Ann Newer", email="ann@example.com",
                  company="Acme", snapshot_at=START - timedelta(days=1)),
        make_plan(booking_id="bk-old", name="Ann Older", email="ANN@example.com",
                  company="acme", snapshot_at=START - timedelta(days=20), phone="+46 1",
                  tags=("bookme", "vip")),
        make_plan(booking_id="bk-move", email="ann@example.com", company="Acme",
                  snapshot_at=START - timedelta(days=5)),
        make_plan(booking_id="bk-gone", email="bo@example.com", event="booking.cancelled"),
    ]  # fmt: skip
    outcomes = []
    for name in ("batch", "one-by-one"):
        engine = make_engine(f"sqlite:///{tmp_path / name}.db")
        crm_metadata.create_all(engine)
        changes_metadata.create_all(engine)
        backend = LocalBackend(engine)
        backend.apply([job_for(first)], Settles())
        with engine.begin() as conn:
            conn.execute(update(tasks).where(tasks.c.key == "prep").values(status="done"))
        settle = Settles()
        jobs = [job_for(plan) for plan in batch]
        if name == "batch":
            assert backend.apply(jobs, settle) == {}
        else:
            for job in jobs:
                assert backend.apply([job], settle) == {}
        outcomes.append((_crm(engine), [_refs(result) for _, result in settle.calls]))
        engine.dispose()

    assert outcomes[0] == outcomes[1]
    crm, _ = outcomes[0]
    assert crm["crm_contacts:ann@example.com"]["first_name"] == "Ann"
    assert crm["crm_contacts:ann@example.com"]["phone"] == "+46 1"
    assert crm["crm_activities:bk-move"]["lead_id"] == "company:acme|workshop"
    assert crm["crm_tasks:bk-move|prep"]["status"] == "done"
    assert crm["crm_leads:company:acme|workshop"]["tags"] == ["bookme", "vip", "workshop"]
