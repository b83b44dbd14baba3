"""LocalBackend and the booking lifecycle (contract §5): absolute, order-independent plans."""

from __future__ import annotations

import importlib.util
import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, Table, inspect, select, text, update

from adapter.backends.base import SyncJob, SyncResult
from adapter.backends.local import (
    LocalBackend,
    activities,
    companies,
    contacts,
    crm_metadata,
    leads,
    tasks,
)
from adapter.backends.local.backend import snapshot_version
from adapter.changes import changes_metadata
from adapter.changes.tasks import tasks_metadata
from adapter.owners import owners_metadata
from adapter.plan import (
    BookingPlan,
    CompanyPlan,
    ContactPlan,
    LeadPlan,
    Lifecycle,
    MeetingOutcome,
    MeetingPlan,
    PlannedTaskStatus,
    Priority,
    TaskPlan,
)
from outbox.db import make_engine

START = datetime(2027, 2, 15, 10, 0, tzinfo=UTC)
T0 = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)
VERSIONS = Path(__file__).resolve().parents[2] / "adapter/migrations/versions"
OUTCOMES: dict[Lifecycle, MeetingOutcome] = {
    "active": "SCHEDULED",
    "cancelled": "CANCELED",
    "no_show": "NO_SHOW",
}
EVENTS: dict[Lifecycle, str] = {
    "active": "booking.created",
    "cancelled": "booking.cancelled",
    "no_show": "booking.no_show",
}


def task(
    key: str, due: datetime, status: PlannedTaskStatus = "todo", priority: Priority = "medium"
) -> TaskPlan:
    """A planned task titled after its key."""
    return TaskPlan(
        key=key,
        title=f"Task {key}",
        description=f"About {key}",
        due=due,
        priority=priority,
        status=status,
    )


def default_tasks(start: datetime, lifecycle: Lifecycle) -> tuple[TaskPlan, ...]:
    """The workshop's tasks as a mapping would plan them for ``lifecycle``."""
    if lifecycle == "no_show":
        return (
            task("follow_up", start + timedelta(days=1), "cancelled"),
            task("no_show", start + timedelta(days=1), priority="high"),
        )
    status: PlannedTaskStatus = "cancelled" if lifecycle == "cancelled" else "todo"
    return (
        task("prep", start - timedelta(days=7), status, priority="high"),
        task("follow_up", start + timedelta(days=1), status),
    )


def make_plan(
    *,
    booking_id: str = "bk-1",
    snapshot_at: datetime = T0,
    start: datetime = START,
    lifecycle: Lifecycle = "active",
    outcome: MeetingOutcome | None = None,
    email: str = "erik@holm.se",
    name: str = "Erik Holm",
    phone: str | None = None,
    company: str | None = "Holm Design",
    tasks_: tuple[TaskPlan, ...] | None = None,
    value: int = 15000,
    score: int = 60,
    tags: tuple[str, ...] = ("bookme", "workshop"),
) -> BookingPlan:
    """A workshop booking snapshot built by hand, with the identity keys of contract §4."""
    email_key = email.strip().lower()
    name_key = " ".join(company.split()).casefold() if company else None
    owner = f"company:{name_key}" if name_key else f"contact:{email_key}"
    first, _, last = name.partition(" ")
    display = " ".join(company.split()) if company else None
    return BookingPlan(
        booking_id=booking_id,
        event_type="workshop",
        event=EVENTS[lifecycle],
        lifecycle=lifecycle,
        snapshot_at=snapshot_at,
        contact=ContactPlan(
            email_key=email_key,
            email=email.strip(),
            first_name=first,
            last_name=last,
            phone=phone,
            tags=tags,
        ),
        company=CompanyPlan(name_key=name_key, name=display, tags=tags)
        if name_key and display
        else None,
        lead=LeadPlan(
            lead_key=f"{owner}|workshop",
            title=f"workshop - {display or name}",
            stage="CONTACTED",
            source="BookMe",
            source_details=f"BookMe booking {booking_id}",
            estimated_value=value,
            lead_score=score,
            tags=tags,
            activity_at=snapshot_at,
            cancelled_stage="LOST",
            no_show_stage="NO_SHOW_FOLLOW_UP",
        ),
        meeting=MeetingPlan(
            booking_id=booking_id,
            subject="workshop - Scheduled",
            description=f"{lifecycle} at {snapshot_at.isoformat()}",
            start=start,
            duration_minutes=120,
            end=start + timedelta(minutes=120),
            meeting_url="https://meet.example.com/abc",
            outcome=outcome or OUTCOMES[lifecycle],
            source="bookme",
        ),
        tasks=default_tasks(start, lifecycle) if tasks_ is None else tasks_,
    )


def apply(backend: LocalBackend, *plans: BookingPlan) -> list[SyncResult]:
    """Apply ``plans`` one job each, in order; returns each settled result."""
    results: list[SyncResult] = []

    def settle(conn: Connection, job: SyncJob, result: SyncResult) -> None:
        results.append(result)

    for plan in plans:
        job = SyncJob(uuid.uuid4().hex, plan.booking_id, uuid.uuid4().hex, plan)
        assert backend.apply([job], settle) == {}
    return results


def rows(engine: Engine, table: Table, **where: Any) -> list[Any]:
    """The rows of ``table`` whose columns equal ``where``."""
    query = select(table).where(*(table.c[k] == v for k, v in where.items()))
    with engine.connect() as conn:
        return list(conn.execute(query))


def task_states(engine: Engine, booking_id: str) -> dict[str, tuple[str, datetime]]:
    """The booking's tasks as key -> (status, due date)."""
    return {t.key: (t.status, t.due_date) for t in rows(engine, tasks, booking_id=booking_id)}


def mark_done(engine: Engine, booking_id: str, key: str) -> None:
    """What a CRM user does with PATCH /api/tasks/{id}."""
    with engine.begin() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.booking_id == booking_id, tasks.c.key == key)
            .values(status="done")
        )


def lead_stage(engine: Engine, email: str = "erik@holm.se") -> str:
    """The stage of the lead of the meeting(s) of ``email``'s contact."""
    [contact] = rows(engine, contacts, email_key=email)
    [stage] = {
        lead.stage
        for meeting in rows(engine, activities, contact_id=contact.id)
        for lead in rows(engine, leads, id=meeting.lead_id)
    }
    return str(stage)


def shared_state(engine: Engine) -> dict[str, list[tuple[tuple[str, Any], ...]]]:
    """Contacts, companies and leads, ids replaced by the natural keys they point at."""
    natural = {contacts: "email_key", companies: "name_key", leads: "lead_key"}
    by_id = {
        row.id: f"{table.name}:{row._mapping[key]}"
        for table, key in natural.items()
        for row in rows(engine, table)
    }
    skip = {"id", "created_at", "updated_at"}
    return {
        table.name: sorted(
            tuple(
                (k, by_id.get(v, v) if k.endswith("_id") else v)
                for k, v in sorted(row._mapping.items())
                if k not in skip
            )
            for row in rows(engine, table)
        )
        for table in natural
    }


def new_engine(path: Path) -> Engine:
    """A SQLite file with the local CRM's tables."""
    engine = make_engine(f"sqlite:///{path}")
    crm_metadata.create_all(engine)
    changes_metadata.create_all(engine)  # the backend's record_written
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite file with the local CRM's tables."""
    engine = new_engine(tmp_path / "crm.db")
    yield engine
    engine.dispose()


@pytest.fixture
def backend(engine: Engine) -> LocalBackend:
    """The backend under test."""
    return LocalBackend(engine)


def test_reschedule_updates_meeting_in_place_and_moves_open_tasks(
    engine: Engine, backend: LocalBackend
) -> None:
    """A reschedule keeps the meeting's id, moves its open tasks and leaves done ones alone."""
    [created] = apply(backend, make_plan())
    mark_done(engine, "bk-1", "follow_up")
    later = START + timedelta(days=3)

    [moved] = apply(
        backend,
        make_plan(snapshot_at=T0 + timedelta(hours=1), start=later, outcome="RESCHEDULED"),
    )

    [meeting] = rows(engine, activities)
    assert meeting.id == created.activity.id == moved.activity.id
    assert (meeting.activity_date, meeting.outcome) == (later, "RESCHEDULED")
    assert meeting.snapshot_at == T0 + timedelta(hours=1)
    assert task_states(engine, "bk-1") == {
        "prep": ("todo", later - timedelta(days=7)),
        "follow_up": ("done", START + timedelta(days=1)),
    }
    assert [t.id for t in moved.tasks] == [t.id for t in created.tasks]
    assert [t.dueDate for t in moved.tasks] == [
        "2027-02-11T10:00:00.000Z",
        "2027-02-16T10:00:00.000Z",
    ]
    assert lead_stage(engine) == "CONTACTED"


def test_reschedule_without_prep_deletes_open_prep_keeps_done_one(
    engine: Engine, backend: LocalBackend
) -> None:
    """A plan that drops the prep task deletes an open prep task but keeps a done one."""
    apply(
        backend,
        make_plan(booking_id="bk-open", email="open@holm.se"),
        make_plan(booking_id="bk-done", email="done@holm.se"),
    )
    mark_done(engine, "bk-done", "prep")
    soon = T0 + timedelta(days=2)
    only_follow_up = (task("follow_up", soon + timedelta(days=1)),)

    apply(
        backend,
        *(
            make_plan(
                booking_id=booking_id,
                email=email,
                snapshot_at=T0 + timedelta(hours=1),
                start=soon,
                outcome="RESCHEDULED",
                tasks_=only_follow_up,
            )
            for booking_id, email in (("bk-open", "open@holm.se"), ("bk-done", "done@holm.se"))
        ),
    )

    assert task_states(engine, "bk-open") == {"follow_up": ("todo", soon + timedelta(days=1))}
    assert task_states(engine, "bk-done") == {
        "prep": ("done", START - timedelta(days=7)),
        "follow_up": ("todo", soon + timedelta(days=1)),
    }


def test_cancel_sets_outcome_cancels_tasks_and_lead_stage(
    engine: Engine, backend: LocalBackend
) -> None:
    """A cancel makes the meeting CANCELED, its tasks cancelled and the lead's stage LOST."""
    apply(backend, make_plan())

    [result] = apply(backend, make_plan(snapshot_at=T0 + timedelta(days=1), lifecycle="cancelled"))

    [meeting] = rows(engine, activities)
    assert meeting.outcome == "CANCELED"
    assert {status for status, _ in task_states(engine, "bk-1").values()} == {"cancelled"}
    assert [t.title for t in result.tasks] == ["Task prep", "Task follow_up"]
    assert lead_stage(engine) == "LOST"


def test_cancelling_one_of_two_bookings_keeps_the_live_stage(
    engine: Engine, backend: LocalBackend
) -> None:
    """A lead keeps its live stage while any meeting is live; LOST once all are cancelled."""
    apply(backend, make_plan(booking_id="bk-1"), make_plan(booking_id="bk-2"))
    assert len(rows(engine, leads)) == 1

    apply(
        backend, make_plan(booking_id="bk-1", snapshot_at=T0 + timedelta(1), lifecycle="cancelled")
    )
    assert lead_stage(engine) == "CONTACTED"

    apply(
        backend, make_plan(booking_id="bk-2", snapshot_at=T0 + timedelta(2), lifecycle="cancelled")
    )
    assert lead_stage(engine) == "LOST"


def test_no_show_sets_outcome_planned_tasks_and_stage(
    engine: Engine, backend: LocalBackend
) -> None:
    """A no-show makes the meeting NO_SHOW, its tasks as planned and the no-show stage."""
    apply(backend, make_plan(booking_id="bk-1"), make_plan(booking_id="bk-2"))
    apply(
        backend, make_plan(booking_id="bk-2", snapshot_at=T0 + timedelta(1), lifecycle="cancelled")
    )

    [result] = apply(
        backend, make_plan(booking_id="bk-1", snapshot_at=T0 + timedelta(2), lifecycle="no_show")
    )

    assert rows(engine, activities, booking_id="bk-1")[0].outcome == "NO_SHOW"
    assert task_states(engine, "bk-1") == {
        "follow_up": ("cancelled", START + timedelta(days=1)),
        "no_show": ("todo", START + timedelta(days=1)),
    }
    assert [t.title for t in result.tasks] == ["Task follow_up", "Task no_show"]
    assert lead_stage(engine) == "NO_SHOW_FOLLOW_UP"


def test_active_snapshot_after_cancel_reopens_cancelled_tasks_not_done_ones(
    engine: Engine, backend: LocalBackend
) -> None:
    """A newer active snapshot reopens cancelled tasks as todo; a done task stays done."""
    apply(backend, make_plan())
    mark_done(engine, "bk-1", "prep")
    apply(backend, make_plan(snapshot_at=T0 + timedelta(1), lifecycle="cancelled"))
    assert {k: s for k, (s, _) in task_states(engine, "bk-1").items()} == {
        "prep": "done",
        "follow_up": "cancelled",
    }

    apply(backend, make_plan(snapshot_at=T0 + timedelta(2), outcome="RESCHEDULED"))

    assert {k: s for k, (s, _) in task_states(engine, "bk-1").items()} == {
        "prep": "done",
        "follow_up": "todo",
    }
    assert rows(engine, activities)[0].outcome == "RESCHEDULED"
    assert lead_stage(engine) == "CONTACTED"


def test_active_snapshot_after_no_show_removes_the_open_no_show_task(
    engine: Engine, backend: LocalBackend
) -> None:
    """A newer active snapshot after a no-show deletes the open no-show task, reopens the rest."""
    apply(
        backend,
        make_plan(),
        make_plan(snapshot_at=T0 + timedelta(1), lifecycle="no_show"),
        make_plan(snapshot_at=T0 + timedelta(2), outcome="RESCHEDULED"),
    )

    assert {k: s for k, (s, _) in task_states(engine, "bk-1").items()} == {
        "prep": "todo",
        "follow_up": "todo",
    }
    assert lead_stage(engine) == "CONTACTED"


def test_cancel_of_an_unknown_booking_creates_everything_cancelled(
    engine: Engine, backend: LocalBackend
) -> None:
    """A cancel that arrives first creates the records, already cancelled."""
    [result] = apply(backend, make_plan(lifecycle="cancelled"))

    assert [len(rows(engine, t)) for t in (companies, contacts, leads, activities)] == [1] * 4
    assert rows(engine, activities)[0].outcome == "CANCELED"
    assert {status for status, _ in task_states(engine, "bk-1").values()} == {"cancelled"}
    assert len(result.tasks) == 2
    assert lead_stage(engine) == "LOST"


def lww_plans() -> list[BookingPlan]:
    """Three bookings of one contact and company, differing in every descriptive field."""
    return [
        make_plan(booking_id="bk-a", phone="+46 70 1", value=10000, tags=("bookme", "workshop")),
        make_plan(
            booking_id="bk-c",
            snapshot_at=T0 + timedelta(days=2),
            email="ERIK@Holm.se ",
            name="Erik Holmberg",
            company=" holm   DESIGN ",
            value=20000,
            score=70,
            lifecycle="cancelled",
            tags=("workshop", "vip"),
        ),
        make_plan(
            booking_id="bk-b",
            snapshot_at=T0 + timedelta(days=2),
            name="Erik Holmström",
            phone="+46 70 2",
            company="Holm design",
            value=30000,
            tags=("bookme", "repeat"),
        ),
    ]


def test_shared_records_are_identical_whatever_the_booking_order(tmp_path: Path) -> None:
    """Every order of three bookings of one contact gives the same contact, company and lead."""
    states = []
    for n, order in enumerate(itertools.permutations(lww_plans())):
        engine = new_engine(tmp_path / f"order-{n}.db")
        try:
            apply(LocalBackend(engine), *order)
            states.append(shared_state(engine))
            [contact] = rows(engine, contacts)
            [company] = rows(engine, companies)
            [lead] = rows(engine, leads)
        finally:
            engine.dispose()
        # bk-c (newest; ties with bk-b broken by booking id) names everything, but
        # says no phone: the newest phone is bk-b's.
        assert (contact.email, contact.last_name, contact.phone) == (
            "ERIK@Holm.se",
            "Holmberg",
            "+46 70 2",
        )
        assert company.name == "holm DESIGN"
        assert (lead.title, lead.estimated_value, lead.lead_score) == (
            "workshop - holm DESIGN",
            20000,
            70,
        )
        assert lead.stage == "CONTACTED"
        assert lead.last_activity_date == T0 + timedelta(days=2)
        assert lead.tags == contact.tags == ["bookme", "repeat", "vip", "workshop"]
        assert lead.version == snapshot_version(T0 + timedelta(days=2), "bk-c")
    assert all(state == states[0] for state in states)


def test_meeting_moving_to_another_lead_rederives_the_old_leads_stage(
    engine: Engine, backend: LocalBackend
) -> None:
    """A booking whose snapshot changes company moves its meeting; both leads' stages follow."""
    apply(
        backend,
        make_plan(booking_id="bk-x", lifecycle="cancelled"),
        make_plan(booking_id="bk-y"),
    )
    assert lead_stage(engine) == "CONTACTED"

    apply(backend, make_plan(booking_id="bk-y", snapshot_at=T0 + timedelta(1), company="Other AB"))

    by_key = {lead.lead_key: lead for lead in rows(engine, leads)}
    old, new = by_key["company:holm design|workshop"], by_key["company:other ab|workshop"]
    assert (old.stage, new.stage) == ("LOST", "CONTACTED")
    assert rows(engine, activities, booking_id="bk-y")[0].lead_id == new.id
    assert {t.lead_id for t in rows(engine, tasks, booking_id="bk-y")} == {new.id}


def run_migration(conn: Connection, name: str, direction: str = "upgrade") -> None:
    """Run one migration file's ``upgrade`` or ``downgrade`` on ``conn``."""
    spec = importlib.util.spec_from_file_location(f"migration_{name}", VERSIONS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with Operations.context(MigrationContext.configure(conn)):
        getattr(module, direction)()


LEGACY_ROWS = [
    "INSERT INTO crm_companies VALUES ('c1', 'holm design', 'HOLM', '[\"bookme\"]', :t, :t)",
    "INSERT INTO crm_contacts VALUES "
    "('p1', 'erik@holm.se', 'erik@holm.se', 'E', 'H', '+46 1', 'c1', '[]', :t, :t)",
    "INSERT INTO crm_leads VALUES ('l1', 'company:holm design|workshop', 'old', 'CONTACTED', "
    "'BookMe', 'd', 1, 1, 'c1', 'p1', '[]', :t, :t, :t)",
]


def test_migration_0003_upgrades_a_populated_database(tmp_path: Path) -> None:
    """0003 on 0002 data backfills versions and stages, matches the tables and downgrades."""
    engine = make_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    try:
        with engine.begin() as conn:
            run_migration(conn, "0002_local_crm")
            for statement in LEGACY_ROWS:
                conn.execute(text(statement), {"t": "2026-01-01 00:00:00"})
            run_migration(conn, "0003_lifecycle")
            run_migration(conn, "0012_crm_properties")  # crm_metadata holds its table too
            run_migration(conn, "0015_owner_rotations")
            run_migration(conn, "0019_crm_changes")  # the backend's record_written
            run_migration(conn, "0021_bookme_push")  # crm_leads.manual_stage
            context = MigrationContext.configure(conn)
            metadata = [crm_metadata, owners_metadata, changes_metadata, tasks_metadata]
            assert compare_metadata(context, metadata) == []  # type: ignore[arg-type]
        [lead] = rows(engine, leads)
        assert (lead.live_stage, lead.version) == ("CONTACTED", "")

        apply(LocalBackend(engine), make_plan(lifecycle="cancelled"))

        [lead] = rows(engine, leads)
        [contact] = rows(engine, contacts)
        assert (lead.id, lead.title, lead.stage) == ("l1", "workshop - Holm Design", "LOST")
        assert (contact.first_name, contact.phone) == ("Erik", "+46 1")
        assert rows(engine, companies)[0].name == "Holm Design"
        with engine.begin() as conn:
            run_migration(conn, "0021_bookme_push", "downgrade")
            assert "manual_stage" not in {c["name"] for c in inspect(conn).get_columns("crm_leads")}
            run_migration(conn, "0019_crm_changes", "downgrade")
            run_migration(conn, "0015_owner_rotations", "downgrade")
            run_migration(conn, "0003_lifecycle", "downgrade")
            columns = {c["name"] for c in inspect(conn).get_columns("crm_leads")}
        assert "version" not in columns
        assert "live_stage" not in columns
    finally:
        engine.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """A fresh PostgreSQL database holding the CRM tables (and what the backend records)."""
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            run_migration(conn, "0002_local_crm")
            run_migration(conn, "0003_lifecycle")
            run_migration(conn, "0012_crm_properties")
            run_migration(conn, "0015_owner_rotations")
            run_migration(conn, "0019_crm_changes")
            run_migration(conn, "0021_bookme_push")
        yield engine
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_lifecycle_basics(pg_engine: Engine) -> None:
    """On PostgreSQL: the migration matches, and reschedule, cancel, stages and LWW hold."""
    with pg_engine.connect() as conn:
        context = MigrationContext.configure(conn)
        metadata = [crm_metadata, owners_metadata, changes_metadata, tasks_metadata]
        assert compare_metadata(context, metadata) == []  # type: ignore[arg-type]
    backend = LocalBackend(pg_engine)
    [created] = apply(backend, make_plan(), make_plan(booking_id="bk-2"))[:1]
    mark_done(pg_engine, "bk-1", "follow_up")
    later = START + timedelta(days=3)
    [moved] = apply(backend, make_plan(snapshot_at=T0 + timedelta(1), start=later))
    assert moved.activity.id == created.activity.id
    assert task_states(pg_engine, "bk-1") == {
        "prep": ("todo", later - timedelta(days=7)),
        "follow_up": ("done", START + timedelta(days=1)),
    }

    apply(backend, make_plan(snapshot_at=T0 + timedelta(2), start=later, lifecycle="cancelled"))
    assert lead_stage(pg_engine) == "CONTACTED"
    apply(backend, make_plan(booking_id="bk-2", snapshot_at=T0 + timedelta(3), lifecycle="no_show"))
    assert lead_stage(pg_engine) == "NO_SHOW_FOLLOW_UP"
    assert {k: s for k, (s, _) in task_states(pg_engine, "bk-1").items()} == {
        "prep": "cancelled",
        "follow_up": "done",
    }

    # Equal snapshot times: the booking id decides, byte by byte as in Python and
    # SQLite, whatever the database's collation ("bk-B" < "bk-a").
    tie = T0 + timedelta(days=5)
    upper = make_plan(booking_id="bk-B", snapshot_at=tie, name="Erik Upper", value=1)
    lower = make_plan(booking_id="bk-a", snapshot_at=tie, name="Erik Lower", value=2)
    apply(backend, lower, upper)
    [contact] = rows(pg_engine, contacts)
    [lead] = rows(pg_engine, leads)
    assert (contact.last_name, lead.estimated_value) == ("Lower", 2)
    assert lead.version == snapshot_version(tie, "bk-a")
