"""``LocalBackend``: the reference CRM, written on the outbox's own database.

A batch is one transaction: its CRM writes and its outbox marks commit together
or not at all. Should any job of it fail, that transaction is rolled back and
each job runs again in a SAVEPOINT of a new one, with its settle in the same
savepoint, so one job's failure never undoes another's.

Every write is a single ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` on a
unique identity key (contract §4), never a read followed by an insert, so
concurrent writers converge on one row per identity. Tag unions and the lead's
derived stage are then written under the row lock that upsert took.

A plan is absolute (see ``BookingPlan``): the booking's meeting and tasks become
exactly what it says, except tasks a CRM user marked ``done``, which are never
touched. The outbox hands one booking's snapshots over one at a time and never
an older one after a newer one, so that alone makes a booking converge.

Records shared by bookings are made order-independent here. Companies, contacts
and leads keep the descriptive fields of the newest snapshot by
``snapshot_version`` (last writer wins by version, not by arrival); a contact's
phone and company are those of the newest snapshot that had one; tags are a
sorted union; a lead's last activity only moves forward; a lead's stage is
derived from the outcomes of all its meetings after every change to them.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.dml import ReturningInsert

from adapter.backends.base import (
    ActivityRef,
    CompanyRef,
    ContactRef,
    LeadRef,
    Settle,
    SettleMany,
    SyncJob,
    SyncResult,
    TaskRef,
)
from adapter.backends.local.models import activities, companies, contacts, leads, tasks
from adapter.backends.local.properties import properties, write_properties
from adapter.db import upsert_insert
from adapter.errors import AdapterError, PermanentError, RetryableError
from adapter.plan import BookingPlan, CompanyPlan
from adapter.timeutil import as_utc, iso_z, utcnow
from outbox.exceptions import LeaseLost

MEETING = "MEETING"
DONE = "done"
LIVE_OUTCOMES = ("SCHEDULED", "RESCHEDULED", "COMPLETED")

log = logging.getLogger(__name__)


class LocalBackend:
    """The local reference CRM; the engine is the caller's (usually the outbox's)."""

    name = "local"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def apply(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        """Apply and settle the batch in one transaction; should any job fail, roll it
        back and apply each job in its own savepoint. Returns failures by event id."""
        if not jobs:
            return {}
        if len(jobs) > 1 and len({job.plan.booking_id for job in jobs}) == len(jobs):
            try:
                with self._engine.begin() as conn:
                    results = write_plans(conn, [job.plan for job in jobs])
                    if isinstance(settle, SettleMany):
                        settle.many(conn, list(zip(jobs, results, strict=True)))
                    else:
                        for job, result in zip(jobs, results, strict=True):
                            settle(conn, job, result)
            except Exception as exc:
                # One bad booking or a lost lease: nothing of the batch was kept, and the
                # jobs one by one tell which it was (their settles are called again).
                log.info(
                    "batch of %d failed as a whole (%s); applying its jobs one by one",
                    len(jobs),
                    type(exc).__name__,
                )
            else:
                return {}
        return self._apply_each(jobs, settle)

    def _apply_each(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        """Apply and settle each job in its own savepoint; return failures by event id."""
        failures: dict[str, AdapterError] = {}
        lost: set[str] = set()
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


def snapshot_version(snapshot_at: datetime, booking_id: str) -> str:
    """The version of a booking snapshot: sorts as (``snapshot_at`` in UTC, ``booking_id``).

    Two bookings never share a version, so every pair of snapshots is ordered
    the same way whichever is applied first.
    """
    return f"{as_utc(snapshot_at):%Y-%m-%dT%H:%M:%S.%fZ}|{booking_id}"


def write_plan(conn: Connection, plan: BookingPlan, now: datetime | None = None) -> SyncResult:
    """Make the CRM hold what ``plan`` says, on ``conn``; returns the CRM's ids."""
    return write_plans(conn, [plan], now)[0]


def write_plans(
    conn: Connection, plans: Sequence[BookingPlan], now: datetime | None = None
) -> list[SyncResult]:
    """Make the CRM hold what each plan says, in order, on ``conn``; returns their CRM ids.

    The CRM ends as if each plan were written alone, one after the other, and
    each plan gets the values its own upserts would have returned, in fewer
    statements. Each kind of record is written for every plan in one statement
    (``_upsert_in_order``); a record several plans share (a company, contact or
    lead) is upserted by them in their order. Each lead's stage is derived once,
    after all its meetings are written. The plans must be of distinct bookings.
    """
    now = now or utcnow()
    shared = _upsert_shared(conn, plans, now)
    lead_ids = [records.lead_id for records in shared]
    previous = _lock_previous_leads(conn, plans, lead_ids)
    meetings = _upsert_meetings(conn, plans, shared, now)
    _derive_stages(conn, [*lead_ids, *previous])
    task_refs = _upsert_tasks(conn, plans, lead_ids, now)
    _delete_unplanned_tasks(conn, plans)
    results = []
    for plan, records, task_ref in zip(plans, shared, task_refs, strict=True):
        activity_id = meetings[plan.booking_id]
        _write_properties(conn, plan, records, activity_id, task_ref, now)
        _write_owner(conn, plan, records.contact_id, records.lead_id)
        results.append(
            SyncResult(
                lead=LeadRef(id=records.lead_id, title=records.lead_title),
                contact=ContactRef(id=records.contact_id, email=records.contact_email),
                company=records.company,
                activity=ActivityRef(id=activity_id),
                tasks=task_ref,
            )
        )
    return results


@dataclass(frozen=True)
class _Shared:
    """What a plan's upserts of its shared records returned, and its version."""

    version: str
    company: CompanyRef | None
    contact_id: str
    contact_email: str
    lead_id: str
    lead_title: str


def _upsert_shared(conn: Connection, plans: Sequence[BookingPlan], now: datetime) -> list[_Shared]:
    """The plans' companies, then contacts, then leads: each kind in one statement."""
    versions = [snapshot_version(plan.snapshot_at, plan.booking_id) for plan in plans]
    with_company = [
        (plan.company, version)
        for plan, version in zip(plans, versions, strict=True)
        if plan.company
    ]
    rows = iter(_upsert_companies(conn, with_company, now))
    company_refs = [next(rows) if plan.company else None for plan in plans]
    contacts_ = _upsert_contacts(conn, plans, company_refs, versions, now)
    leads_ = _upsert_leads(conn, plans, contacts_, company_refs, versions, now)
    return [
        _Shared(version, company, contact.id, contact.email, lead.id, lead.title)
        for version, company, contact, lead in zip(
            versions, company_refs, contacts_, leads_, strict=True
        )
    ]


def _write_properties(
    conn: Connection,
    plan: BookingPlan,
    records: _Shared,
    activity_id: str,
    task_refs: Sequence[TaskRef],
    now: datetime,
) -> None:
    """The mapped properties of every record, each after its row was upserted (and locked)."""
    version = records.version
    if records.company is not None and plan.company is not None:
        write_properties(conn, "company", records.company.id, plan.company.properties, version, now)
    write_properties(conn, "contact", records.contact_id, plan.contact.properties, version, now)
    write_properties(conn, "lead", records.lead_id, plan.lead.properties, version, now)
    write_properties(conn, "meeting", activity_id, plan.meeting.properties, version, now)
    for task, ref in zip(plan.tasks, task_refs, strict=True):
        write_properties(conn, "task", ref.id, task.properties, version, now)


def _greatest(dialect: str, left: Any, right: Any) -> Any:
    # SQLite's two-argument max() is scalar; stored UTC timestamps compare as text.
    if dialect == "sqlite":
        return func.max(left, right)
    return func.greatest(left, right)


def _not_older(dialect: str, incoming: Any, stored: Any) -> ColumnElement[bool]:
    """``incoming >= stored`` for versions, compared byte by byte on every database.

    Equal versions are one snapshot of one booking applied again (or two with
    the same ``updatedAt``, which the outbox applies in receipt order): the one
    applied last wins, as it does for the booking's meeting.
    """
    if dialect == "postgresql":
        # The database's default collation may ignore punctuation or case.
        return incoming.collate("C") >= stored.collate("C")  # type: ignore[no-any-return]
    return incoming >= stored  # type: ignore[no-any-return]


def _if(condition: ColumnElement[bool], new: Any, old: Any) -> Any:
    return case((condition, new), else_=old)


def _one_of(column: Any, constants: Sequence[str]) -> ColumnElement[bool]:
    """``column IN (...)`` of constants written as SQL literals, not an expanding
    parameter: a statement run for many rows at once (executemany) cannot expand one."""
    return column.in_([literal_column(f"'{constant}'") for constant in constants])  # type: ignore[no-any-return]


def _new_id() -> str:
    return uuid.uuid4().hex


def _tags(tags: Sequence[str]) -> list[str]:
    """Tags in their canonical order (sorted, unique), so that a union is order-independent."""
    return sorted(set(tags))


# Statements are built once (per dialect where they differ) and executed with a
# parameters dict: a reused statement keeps its memoized cache key, so SQLAlchemy
# neither rebuilds nor re-keys it per row. An INSERT's VALUES come from the keys
# of that dict, as column-typed parameters (``Tags`` JSON, ``UtcDateTime``); every
# other per-row value is a ``bindparam`` named ``p_*``, never a column's name, so
# that it is not taken for a VALUES or SET column.


@functools.cache
def _set_tags(table: Table) -> Update:
    return (
        update(table)
        .where(table.c.id == bindparam("p_id", type_=table.c.id.type))
        .values(tags=bindparam("p_tags", type_=table.c.tags.type))
    )


def _upsert_in_order(
    conn: Connection,
    table: Table,
    stmt: ReturningInsert[Any],
    key: str,
    rows: Sequence[dict[str, Any]],
    tags: Sequence[Sequence[str]],
) -> list[Any]:
    """Upsert ``rows`` (``stmt``'s parameters) one after the other, as far as anyone can
    tell; returns what each row's upsert returned, after its ``tags`` were added.

    Rows of distinct ``key`` touch distinct records, so a statement may write them
    all at once; a row whose key came earlier waits for a later statement (a wave),
    so each record sees its rows in their order. Each wave's tags are merged into
    its records before the next wave, as one upsert after another would see them.
    """
    returned: list[Any] = [None] * len(rows)
    waves: list[list[int]] = []
    seen: dict[Any, int] = {}
    for index, row in enumerate(rows):
        order = seen.get(row[key], 0)
        seen[row[key]] = order + 1
        if order == len(waves):
            waves.append([])
        waves[order].append(index)
    for wave in waves:
        by_key = {r._mapping[key]: r for r in conn.execute(stmt, [rows[i] for i in wave])}
        merged = []
        for index in wave:
            record = returned[index] = by_key[rows[index][key]]
            union = _tags([*record.tags, *tags[index]])
            if union != record.tags:
                merged.append({"p_id": record.id, "p_tags": union})
        if merged:
            conn.execute(_set_tags(table), merged)
    return returned


@functools.cache
def _company_upsert(dialect: str) -> ReturningInsert[tuple[str, str, list[str], str]]:
    stmt = upsert_insert(dialect, companies)
    new = stmt.excluded
    newer = _not_older(dialect, new.version, companies.c.version)
    return stmt.on_conflict_do_update(
        index_elements=[companies.c.name_key],
        set_={
            "name": _if(newer, new.name, companies.c.name),
            "version": _if(newer, new.version, companies.c.version),
            "updated_at": new.updated_at,
        },
    ).returning(companies.c.id, companies.c.name, companies.c.tags, companies.c.name_key)


def _upsert_companies(
    conn: Connection, companies_: Sequence[tuple[CompanyPlan, str]], now: datetime
) -> list[CompanyRef]:
    """Each (company, version), in order; returns their refs."""
    rows = [
        {
            "id": _new_id(),
            "name_key": plan.name_key,
            "name": plan.name,
            "tags": _tags(plan.tags),
            "version": version,
            "created_at": now,
            "updated_at": now,
        }
        for plan, version in companies_
    ]
    if not rows:
        return []
    stmt = _company_upsert(conn.dialect.name)
    tags = [plan.tags for plan, _ in companies_]
    returned = _upsert_in_order(conn, companies, stmt, "name_key", rows, tags)
    return [CompanyRef(id=row.id, name=row.name) for row in returned]


_CONTACT_FIELDS = ("email", "first_name", "last_name", "version")


@functools.cache
def _contact_upsert(dialect: str) -> ReturningInsert[tuple[str, str, list[str], str]]:
    stmt = upsert_insert(dialect, contacts)
    new = stmt.excluded
    newer = _not_older(dialect, new.version, contacts.c.version)
    # A snapshot without a phone (or company) says nothing about it: the newest
    # snapshot that had one decides.
    newer_phone = and_(
        new.phone.is_not(None), _not_older(dialect, new.phone_version, contacts.c.phone_version)
    )
    newer_company = and_(
        new.company_id.is_not(None),
        _not_older(dialect, new.company_version, contacts.c.company_version),
    )
    return stmt.on_conflict_do_update(
        index_elements=[contacts.c.email_key],
        set_={
            **{name: _if(newer, new[name], contacts.c[name]) for name in _CONTACT_FIELDS},
            "phone": _if(newer_phone, new.phone, contacts.c.phone),
            "phone_version": _if(newer_phone, new.phone_version, contacts.c.phone_version),
            "company_id": _if(newer_company, new.company_id, contacts.c.company_id),
            "company_version": _if(newer_company, new.company_version, contacts.c.company_version),
            "updated_at": new.updated_at,
        },
    ).returning(contacts.c.id, contacts.c.email, contacts.c.tags, contacts.c.email_key)


@dataclass(frozen=True)
class _Record:
    """What a contact's (id, email) or a lead's (id, title) upsert returned."""

    id: str
    email: str = ""
    title: str = ""


def _upsert_contacts(
    conn: Connection,
    plans: Sequence[BookingPlan],
    company_refs: Sequence[CompanyRef | None],
    versions: Sequence[str],
    now: datetime,
) -> list[_Record]:
    """Each plan's contact, in order; returns their ids and emails."""
    rows = [
        {
            "id": _new_id(),
            "email_key": plan.contact.email_key,
            "email": plan.contact.email,
            "first_name": plan.contact.first_name,
            "last_name": plan.contact.last_name,
            "phone": plan.contact.phone,
            "company_id": company.id if company else None,
            "tags": _tags(plan.contact.tags),
            "version": version,
            "phone_version": version if plan.contact.phone is not None else "",
            "company_version": version if company else "",
            "created_at": now,
            "updated_at": now,
        }
        for plan, company, version in zip(plans, company_refs, versions, strict=True)
    ]
    stmt = _contact_upsert(conn.dialect.name)
    tags = [plan.contact.tags for plan in plans]
    returned = _upsert_in_order(conn, contacts, stmt, "email_key", rows, tags)
    return [_Record(id=row.id, email=row.email) for row in returned]


_LEAD_FIELDS = (
    "title",
    "source",
    "source_details",
    "estimated_value",
    "lead_score",
    "company_id",
    "contact_id",
    "live_stage",
    "cancelled_stage",
    "no_show_stage",
    "version",
)


@functools.cache
def _lead_upsert(dialect: str) -> ReturningInsert[tuple[str, str, list[str], str]]:
    stmt = upsert_insert(dialect, leads)
    new = stmt.excluded
    newer = _not_older(dialect, new.version, leads.c.version)
    # A repeat booking never adds a lead; ``stage`` is derived after the meeting is written.
    return stmt.on_conflict_do_update(
        index_elements=[leads.c.lead_key],
        set_={
            **{name: _if(newer, new[name], leads.c[name]) for name in _LEAD_FIELDS},
            "last_activity_date": _greatest(
                dialect, leads.c.last_activity_date, new.last_activity_date
            ),
            "updated_at": new.updated_at,
        },
    ).returning(leads.c.id, leads.c.title, leads.c.tags, leads.c.lead_key)


def _upsert_leads(
    conn: Connection,
    plans: Sequence[BookingPlan],
    contacts_: Sequence[_Record],
    company_refs: Sequence[CompanyRef | None],
    versions: Sequence[str],
    now: datetime,
) -> list[_Record]:
    """Each plan's lead, in order; returns their ids and titles."""
    rows = [
        {
            "id": _new_id(),
            "lead_key": plan.lead.lead_key,
            "title": plan.lead.title,
            "stage": plan.lead.stage,
            "source": plan.lead.source,
            "source_details": plan.lead.source_details,
            "estimated_value": plan.lead.estimated_value,
            "lead_score": plan.lead.lead_score,
            "company_id": company.id if company else None,
            "contact_id": contact.id,
            "tags": _tags(plan.lead.tags),
            "last_activity_date": plan.lead.activity_at,
            "live_stage": plan.lead.stage,
            "cancelled_stage": plan.lead.cancelled_stage,
            "no_show_stage": plan.lead.no_show_stage,
            "version": version,
            "created_at": now,
            "updated_at": now,
        }
        for plan, contact, company, version in zip(
            plans, contacts_, company_refs, versions, strict=True
        )
    ]
    stmt = _lead_upsert(conn.dialect.name)
    tags = [plan.lead.tags for plan in plans]
    returned = _upsert_in_order(conn, leads, stmt, "lead_key", rows, tags)
    return [_Record(id=row.id, title=row.title) for row in returned]


_MEETING_LEADS = select(activities.c.booking_id, activities.c.lead_id).where(
    activities.c.booking_id.in_(
        bindparam("p_booking_ids", type_=activities.c.booking_id.type, expanding=True)
    )
)
_LOCK_LEADS = (
    select(leads.c.id)
    .where(leads.c.id.in_(bindparam("p_ids", type_=leads.c.id.type, expanding=True)))
    .order_by(leads.c.id)
    .with_for_update()
)


def _lock_previous_leads(
    conn: Connection, plans: Sequence[BookingPlan], lead_ids: Sequence[str]
) -> list[str]:
    """The leads the plans' meetings are leaving (for the plans' leads), locked.

    A meeting moves to another lead when a snapshot changes the email, company
    or event type. That lead's stage must then be derived again, under its lock,
    so that a concurrent writer of its other meetings cannot interleave.
    """
    params = {"p_booking_ids": [plan.booking_id for plan in plans]}
    held = {row.booking_id: row.lead_id for row in conn.execute(_MEETING_LEADS, params)}
    leaving = sorted(
        {
            previous
            for plan, lead_id in zip(plans, lead_ids, strict=True)
            if (previous := held.get(plan.booking_id)) is not None and previous != lead_id
        }
    )
    if leaving:
        conn.execute(_LOCK_LEADS, {"p_ids": leaving})
    return leaving


_MEETING_UPDATED = (
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
    "snapshot_at",
    "updated_at",
)


@functools.cache
def _meeting_upsert(dialect: str) -> ReturningInsert[tuple[str, str]]:
    stmt = upsert_insert(dialect, activities)
    new = stmt.excluded
    # A meeting a salesperson marked COMPLETED (BookMe never does) stays completed while
    # BookMe only says it is on; a cancellation or no-show from BookMe still wins.
    held = and_(
        activities.c.outcome == "COMPLETED", _one_of(new.outcome, ("SCHEDULED", "RESCHEDULED"))
    )
    # The same row (and id) for ever: the plan is the booking's newest snapshot.
    return stmt.on_conflict_do_update(
        index_elements=[activities.c.booking_id],
        set_={
            **{name: new[name] for name in _MEETING_UPDATED},
            "outcome": _if(held, activities.c.outcome, new.outcome),
        },
    ).returning(activities.c.id, activities.c.booking_id)


def _upsert_meetings(
    conn: Connection, plans: Sequence[BookingPlan], shared: Sequence[_Shared], now: datetime
) -> dict[str, str]:
    """Every plan's meeting in one statement; returns the meeting ids by booking id."""
    rows = conn.execute(
        _meeting_upsert(conn.dialect.name),
        [
            {
                "id": _new_id(),
                "booking_id": plan.meeting.booking_id,
                "lead_id": records.lead_id,
                "contact_id": records.contact_id,
                "type": MEETING,
                "subject": plan.meeting.subject,
                "description": plan.meeting.description,
                "activity_date": plan.meeting.start,
                "duration_minutes": plan.meeting.duration_minutes,
                "outcome": plan.meeting.outcome,
                "meeting_url": plan.meeting.meeting_url,
                "source": plan.meeting.source,
                "snapshot_at": plan.snapshot_at,
                "created_at": now,
                "updated_at": now,
            }
            for plan, records in zip(plans, shared, strict=True)
        ],
    )
    return {row.booking_id: row.id for row in rows}


def _build_derive_stage() -> Update:
    lead_id = bindparam("p_lead_id", type_=activities.c.lead_id.type)

    def any_meeting(*outcomes: str) -> ColumnElement[bool]:
        return exists().where(
            activities.c.lead_id == lead_id, _one_of(activities.c.outcome, outcomes)
        )

    live = func.coalesce(leads.c.live_stage, leads.c.stage)
    return (
        update(leads)
        .where(leads.c.id == lead_id)
        .values(
            stage=case(
                (leads.c.manual_stage.is_not(None), leads.c.manual_stage),
                (any_meeting(*LIVE_OUTCOMES), live),
                (any_meeting("NO_SHOW"), func.coalesce(leads.c.no_show_stage, live)),
                (any_meeting("CANCELED"), func.coalesce(leads.c.cancelled_stage, live)),
                else_=leads.c.stage,
            )
        )
    )


_DERIVE_STAGE = _build_derive_stage()


def _derive_stage(conn: Connection, lead_id: str) -> None:
    """``_derive_stages`` of one lead (a salesperson's edit of one meeting)."""
    _derive_stages(conn, [lead_id])


def _derive_stages(conn: Connection, lead_ids: Sequence[str]) -> None:
    """Set each lead's stage from the outcomes of all its meetings (see ``LeadPlan``),
    unless a salesperson set it (``manual_stage``): their stage is kept.

    Run after every meeting of the batch is written, while this transaction holds
    the leads' row locks, so each sees every committed meeting of its lead. A
    lead left with no meeting keeps its stage.
    """
    unique = sorted(set(lead_ids))
    if unique:
        conn.execute(_DERIVE_STAGE, [{"p_lead_id": lead_id} for lead_id in unique])


_TASK_FOLLOWED = (
    "lead_id",
    "title",
    "description",
    "due_date",
    "priority",
    "status",
    "updated_at",
)


@functools.cache
def _task_upsert(dialect: str) -> ReturningInsert[tuple[str, str, datetime, str, str]]:
    stmt = upsert_insert(dialect, tasks)
    new = stmt.excluded
    # A task the CRM user marked done is never changed; any other follows the plan
    # (so a cancelled task is open again when a newer snapshot says so).
    done = tasks.c.status == DONE
    return stmt.on_conflict_do_update(
        index_elements=[tasks.c.booking_id, tasks.c.key],
        set_={name: _if(done, tasks.c[name], new[name]) for name in _TASK_FOLLOWED},
    ).returning(tasks.c.id, tasks.c.title, tasks.c.due_date, tasks.c.booking_id, tasks.c.key)


def _upsert_tasks(
    conn: Connection, plans: Sequence[BookingPlan], lead_ids: Sequence[str], now: datetime
) -> list[list[TaskRef]]:
    """Every plan's tasks in one statement; returns each plan's task refs, in its order."""
    params = [
        {
            "id": _new_id(),
            "lead_id": lead_id,
            "booking_id": plan.booking_id,
            "key": task.key,
            "title": task.title,
            "description": task.description,
            "due_date": task.due,
            "priority": task.priority,
            "status": task.status,
            "created_at": now,
            "updated_at": now,
        }
        for plan, lead_id in zip(plans, lead_ids, strict=True)
        for task in plan.tasks
    ]
    if not params:
        return [[] for _ in plans]
    refs: dict[tuple[str, str], TaskRef] = {}
    for row in conn.execute(_task_upsert(conn.dialect.name), params):
        due = iso_z(row.due_date)
        assert due is not None  # due_date is NOT NULL
        refs[(row.booking_id, row.key)] = TaskRef(id=row.id, title=row.title, dueDate=due)
    return [[refs[(plan.booking_id, task.key)] for task in plan.tasks] for plan in plans]


_OPEN_TASKS = select(tasks.c.id, tasks.c.booking_id, tasks.c.key).where(
    tasks.c.booking_id.in_(
        bindparam("p_booking_ids", type_=tasks.c.booking_id.type, expanding=True)
    ),
    tasks.c.status != DONE,
)
_UNPLANNED = select(tasks.c.id).where(
    tasks.c.id.in_(bindparam("p_ids", type_=tasks.c.id.type, expanding=True)),
    tasks.c.status != DONE,
)
_DELETE_UNPLANNED_TASK_PROPERTIES = delete(properties).where(
    properties.c.record_type == "task", properties.c.record_id.in_(_UNPLANNED)
)
_DELETE_UNPLANNED_TASKS = delete(tasks).where(
    tasks.c.id.in_(bindparam("p_ids", type_=tasks.c.id.type, expanding=True)),
    tasks.c.status != DONE,
)


def _delete_unplanned_tasks(conn: Connection, plans: Sequence[BookingPlan]) -> None:
    """Remove the bookings' tasks that their plans no longer name, unless they are done."""
    planned = {(plan.booking_id, task.key) for plan in plans for task in plan.tasks}
    params = {"p_booking_ids": [plan.booking_id for plan in plans]}
    unplanned = [
        row.id
        for row in conn.execute(_OPEN_TASKS, params)
        if (row.booking_id, row.key) not in planned
    ]
    if not unplanned:
        return
    # Their mapped properties go first: the properties table has no foreign key to cascade.
    # Each statement re-checks ``done``: a salesperson may have just marked one done.
    conn.execute(_DELETE_UNPLANNED_TASK_PROPERTIES, {"p_ids": unplanned})
    conn.execute(_DELETE_UNPLANNED_TASKS, {"p_ids": unplanned})


_CONTACT_OWNER = select(contacts.c.owner_email).where(
    contacts.c.id == bindparam("p_id", type_=contacts.c.id.type)
)


def _write_owner(conn: Connection, plan: BookingPlan, contact_id: str, lead_id: str) -> None:
    """Give the booking's records their owner (``OwnerPlan``); no owner, no change.

    A contact takes an owner only when it has none: a salesperson keeps the
    accounts they hold (as in HubSpot). A lead, like its other fields, follows
    its newest snapshot's booking (its ``version`` is then this snapshot's), so
    the order bookings arrive in does not decide it. The booking's own meeting
    and open tasks always follow the booking's owner. With ``keep_existing``
    the contact's owner (read under the row lock its upsert took) is the
    booking's owner.
    """
    planned = plan.owner
    if planned is None:
        return
    owner = planned.email
    if planned.keep_existing:
        owner = conn.execute(_CONTACT_OWNER, {"p_id": contact_id}).scalar_one_or_none() or owner
    if owner is None:
        return
    conn.execute(
        update(contacts)
        .where(contacts.c.id == contact_id, contacts.c.owner_email.is_(None))
        .values(owner_email=owner)
    )
    version = snapshot_version(plan.snapshot_at, plan.booking_id)
    conn.execute(
        update(leads)
        .where(leads.c.id == lead_id, leads.c.version == version)
        .values(owner_email=owner)
    )
    conn.execute(
        update(activities)
        .where(activities.c.booking_id == plan.booking_id)
        .values(owner_email=owner)
    )
    conn.execute(
        update(tasks)
        .where(tasks.c.booking_id == plan.booking_id, tasks.c.status != DONE)
        .values(owner_email=owner)
    )
