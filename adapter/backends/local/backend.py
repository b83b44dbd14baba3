"""``LocalBackend``: the reference CRM, written on the outbox's own database.

Each job runs in a SAVEPOINT of one transaction per batch, and its settle runs
in the same savepoint, so a job's CRM writes and its outbox mark commit
together or not at all, and one job's failure never undoes another's.

Every write is a single ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on a
unique identity key (contract §4), never a read followed by an insert, so
concurrent writers converge on one row per identity. Tag unions are then
written under the row lock that upsert took.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, case, func, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from adapter.backends.base import (
    ActivityRef,
    CompanyRef,
    ContactRef,
    LeadRef,
    Settle,
    SyncJob,
    SyncResult,
    TaskRef,
)
from adapter.backends.local.models import activities, companies, contacts, leads, tasks
from adapter.errors import AdapterError, PermanentError, RetryableError
from adapter.plan import BookingPlan, CompanyPlan, ContactPlan, TaskPlan
from adapter.timeutil import iso_z, utcnow
from outbox.exceptions import LeaseLost

CANCELLED_EVENT = "booking.cancelled"
MEETING = "MEETING"

_Insert = sqlite.Insert | postgresql.Insert


class LocalBackend:
    """The local reference CRM; the engine is the caller's (usually the outbox's)."""

    name = "local"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def apply(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        """Apply and settle each job in its own savepoint; return failures by event id."""
        failures: dict[str, AdapterError] = {}
        lost: set[str] = set()
        if not jobs:
            return failures
        try:
            with self._engine.begin() as conn:
                for job in jobs:
                    savepoint = conn.begin_nested()
                    try:
                        result = write_plan(conn, job.plan)
                        settle(conn, job, result)
                    except LeaseLost:
                        savepoint.rollback()
                        lost.add(job.event_id)
                    except Exception as exc:
                        savepoint.rollback()
                        failures[job.event_id] = translate_error(exc, job)
                    else:
                        savepoint.commit()
        except Exception as exc:
            # BEGIN, a savepoint rollback or COMMIT failed: nothing of this batch was kept.
            return {
                job.event_id: failures.get(job.event_id) or translate_error(exc, job)
                for job in jobs
                if job.event_id not in lost
            }
        return failures

    def ping(self) -> None:
        """Run ``SELECT 1`` without taking SQLite's write lock."""
        with self._engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        """Nothing to release: the engine belongs to the caller."""


def translate_error(exc: BaseException, job: SyncJob) -> AdapterError:
    """The adapter error for ``exc``: lost connections and locks are retryable."""
    if isinstance(exc, AdapterError):
        return exc
    error: AdapterError
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, OperationalError)
    ):
        error = RetryableError(f"local CRM database unavailable: {exc.orig}")
    elif isinstance(exc, DisconnectionError | PoolTimeoutError):
        error = RetryableError(f"local CRM database unavailable: {exc}")
    else:
        detail = exc.orig if isinstance(exc, DBAPIError) else exc
        error = PermanentError(
            f"local CRM could not apply booking {job.booking_id!r}: {type(exc).__name__}: {detail}"
        )
    error.__cause__ = exc
    return error


def write_plan(conn: Connection, plan: BookingPlan, now: datetime | None = None) -> SyncResult:
    """Upsert every record ``plan`` names on ``conn``; returns the CRM's ids."""
    now = now or utcnow()
    company = _upsert_company(conn, plan.company, now) if plan.company else None
    contact_id, contact_email = _upsert_contact(conn, plan.contact, company, now)
    lead_id, lead_title = _upsert_lead(conn, plan, contact_id, company, now)
    activity_id = _upsert_meeting(conn, plan, lead_id, contact_id, now)
    cancelled = plan.event == CANCELLED_EVENT
    task_refs = [_upsert_task(conn, plan, task, lead_id, cancelled, now) for task in plan.tasks]
    if cancelled:
        conn.execute(
            update(tasks)
            .where(tasks.c.booking_id == plan.booking_id, tasks.c.status == "todo")
            .values(status="cancelled", updated_at=now)
        )
    return SyncResult(
        lead=LeadRef(id=lead_id, title=lead_title),
        contact=ContactRef(id=contact_id, email=contact_email),
        company=company,
        activity=ActivityRef(id=activity_id),
        tasks=task_refs,
    )


def _insert(conn: Connection, table: Table) -> _Insert:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise PermanentError(f"the local CRM supports SQLite and PostgreSQL, not {dialect}")


def _greatest(conn: Connection, left: Any, right: Any) -> Any:
    # SQLite's two-argument max() is scalar; stored UTC timestamps compare as text.
    if conn.dialect.name == "sqlite":
        return func.max(left, right)
    return func.greatest(left, right)


def _new_id() -> str:
    return uuid.uuid4().hex


def _union_tags(
    conn: Connection, table: Table, row_id: str, existing: list[str], new: Sequence[str]
) -> None:
    merged = existing + [tag for tag in dict.fromkeys(new) if tag not in existing]
    if merged != existing:
        conn.execute(update(table).where(table.c.id == row_id).values(tags=merged))


def _upsert_company(conn: Connection, plan: CompanyPlan, now: datetime) -> CompanyRef:
    stmt = _insert(conn, companies).values(
        id=_new_id(),
        name_key=plan.name_key,
        name=plan.name,
        tags=list(dict.fromkeys(plan.tags)),
        created_at=now,
        updated_at=now,
    )
    # The first display name stays; the no-op update makes RETURNING yield the row.
    stmt = stmt.on_conflict_do_update(
        index_elements=[companies.c.name_key],
        set_={"updated_at": stmt.excluded.updated_at},
    )
    row = conn.execute(stmt.returning(companies.c.id, companies.c.name, companies.c.tags)).one()
    _union_tags(conn, companies, row.id, row.tags, plan.tags)
    return CompanyRef(id=row.id, name=row.name)


def _upsert_contact(
    conn: Connection, plan: ContactPlan, company: CompanyRef | None, now: datetime
) -> tuple[str, str]:
    stmt = _insert(conn, contacts).values(
        id=_new_id(),
        email_key=plan.email_key,
        email=plan.email,
        first_name=plan.first_name,
        last_name=plan.last_name,
        phone=plan.phone,
        company_id=company.id if company else None,
        tags=list(dict.fromkeys(plan.tags)),
        created_at=now,
        updated_at=now,
    )
    new = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=[contacts.c.email_key],
        set_={
            "first_name": new.first_name,
            "last_name": new.last_name,
            "phone": func.coalesce(new.phone, contacts.c.phone),
            "company_id": func.coalesce(new.company_id, contacts.c.company_id),
            "updated_at": new.updated_at,
        },
    )
    row = conn.execute(stmt.returning(contacts.c.id, contacts.c.email, contacts.c.tags)).one()
    _union_tags(conn, contacts, row.id, row.tags, plan.tags)
    return row.id, row.email


def _upsert_lead(
    conn: Connection,
    plan: BookingPlan,
    contact_id: str,
    company: CompanyRef | None,
    now: datetime,
) -> tuple[str, str]:
    lead = plan.lead
    stmt = _insert(conn, leads).values(
        id=_new_id(),
        lead_key=lead.lead_key,
        title=lead.title,
        stage=lead.stage,
        source=lead.source,
        source_details=lead.source_details,
        estimated_value=lead.estimated_value,
        lead_score=lead.lead_score,
        company_id=company.id if company else None,
        contact_id=contact_id,
        tags=list(dict.fromkeys(lead.tags)),
        last_activity_date=lead.activity_at,
        created_at=now,
        updated_at=now,
    )
    new = stmt.excluded
    # A repeat booking never adds a lead: it only moves the last activity forward.
    stmt = stmt.on_conflict_do_update(
        index_elements=[leads.c.lead_key],
        set_={
            "last_activity_date": _greatest(
                conn, leads.c.last_activity_date, new.last_activity_date
            ),
            "updated_at": new.updated_at,
        },
    )
    row = conn.execute(stmt.returning(leads.c.id, leads.c.title, leads.c.tags)).one()
    _union_tags(conn, leads, row.id, row.tags, lead.tags)
    return row.id, row.title


def _upsert_meeting(
    conn: Connection, plan: BookingPlan, lead_id: str, contact_id: str, now: datetime
) -> str:
    meeting = plan.meeting
    stmt = _insert(conn, activities).values(
        id=_new_id(),
        booking_id=meeting.booking_id,
        lead_id=lead_id,
        contact_id=contact_id,
        type=MEETING,
        subject=meeting.subject,
        description=meeting.description,
        activity_date=meeting.start,
        duration_minutes=meeting.duration_minutes,
        outcome=meeting.outcome,
        meeting_url=meeting.meeting_url,
        source=meeting.source,
        created_at=now,
        updated_at=now,
    )
    new = stmt.excluded
    updated = [
        "lead_id",
        "contact_id",
        "type",
        "subject",
        "description",
        "activity_date",
        "duration_minutes",
        "outcome",
        "meeting_url",
        "source",
        "updated_at",
    ]
    stmt = stmt.on_conflict_do_update(
        index_elements=[activities.c.booking_id],
        set_={name: new[name] for name in updated},
    )
    row = conn.execute(stmt.returning(activities.c.id)).one()
    activity_id: str = row.id
    return activity_id


def _upsert_task(
    conn: Connection,
    plan: BookingPlan,
    task: TaskPlan,
    lead_id: str,
    cancelled: bool,
    now: datetime,
) -> TaskRef:
    stmt = _insert(conn, tasks).values(
        id=_new_id(),
        lead_id=lead_id,
        booking_id=plan.booking_id,
        key=task.key,
        title=task.title,
        description=task.description,
        due_date=task.due,
        priority=task.priority,
        status="cancelled" if cancelled else "todo",
        created_at=now,
        updated_at=now,
    )
    new = stmt.excluded
    # Only an open task follows the booking; a done or cancelled one is never reopened.
    is_open = tasks.c.status == "todo"
    followed = ("title", "description", "due_date", "priority", "status", "updated_at")
    stmt = stmt.on_conflict_do_update(
        index_elements=[tasks.c.booking_id, tasks.c.key],
        set_={name: case((is_open, new[name]), else_=tasks.c[name]) for name in followed},
    )
    row = conn.execute(stmt.returning(tasks.c.id, tasks.c.title, tasks.c.due_date)).one()
    due = iso_z(row.due_date)
    assert due is not None  # due_date is NOT NULL
    return TaskRef(id=row.id, title=row.title, dueDate=due)
