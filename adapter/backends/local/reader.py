"""The local CRM's read API queries (contract §6) and the records they return.

Reads run on ``sqlite_begin="DEFERRED"`` connections so that they never take
SQLite's write lock; on PostgreSQL the option is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel
from sqlalchemy import Engine, Row, Select, select

from adapter.backends.local.models import activities, companies, contacts, leads, tasks
from adapter.backends.local.properties import read_properties
from adapter.plan import PropertyValue, TaskStatus
from adapter.timeutil import iso_z, utcnow

ZDateTime = Annotated[datetime, PlainSerializer(iso_z, return_type=str)]
"""A datetime written as ISO 8601 in UTC with a ``Z``."""


class _Record(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, frozen=True
    )


OwnerEmail = Annotated[str | None, Field(default=None, exclude_if=lambda v: v is None)]
"""A record's owner; left out when it has none, like ``properties``, so a mapping
without ``owner:`` keeps the seed's shapes (contract §6)."""


class _Entity(_Record):
    """A CRM record: an id, and the mapping's properties."""

    id: str
    # The mapping's ``properties:``, by name (keys are CRM property names, not camelCased).
    # Left out when empty, so the seed's shapes (contract §6) stand for a mapping without any.
    properties: dict[str, PropertyValue] = Field(default_factory=dict, exclude_if=lambda v: not v)


_R = TypeVar("_R", bound=_Entity)


class Contact(_Entity):
    id: str
    first_name: str
    last_name: str
    email: str
    phone: str | None
    company_id: str | None
    tags: list[str]
    owner_email: OwnerEmail = None


class Company(_Entity):
    id: str
    name: str
    tags: list[str]


class Lead(_Entity):
    id: str
    title: str
    stage: str
    source: str
    source_details: str
    estimated_value: int
    lead_score: int
    company_id: str | None
    contact_id: str
    tags: list[str]
    last_activity_date: ZDateTime
    owner_email: OwnerEmail = None


class ActivityMetadata(_Record):
    booking_id: str
    meeting_url: str | None
    source: str


class LeadSummary(_Record):
    id: str
    title: str


class Activity(_Entity):
    id: str
    lead_id: str
    contact_id: str
    type: str
    subject: str
    description: str
    activity_date: ZDateTime
    duration_minutes: int
    outcome: str
    metadata: ActivityMetadata
    lead: LeadSummary
    owner_email: OwnerEmail = None


class Task(_Entity):
    id: str
    lead_id: str
    booking_id: str
    key: str
    title: str
    description: str
    due_date: ZDateTime
    priority: str
    status: TaskStatus
    owner_email: OwnerEmail = None


def owner_key(email: str) -> str:
    """An owner as stored: the mapping lower-cases owner emails, so a filter does too."""
    return email.strip().lower()


def _fields(row: Row[Any], model: type[_Record]) -> dict[str, Any]:
    mapping = row._mapping
    return {name: mapping[name] for name in model.model_fields if name in mapping}


class LocalCrmReader:
    """Queries behind the read API; ``clock`` decides what is upcoming."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._reads = engine.execution_options(sqlite_begin="DEFERRED")
        self._clock = clock

    def _all(self, query: Select[Any]) -> list[Row[Any]]:
        with self._reads.connect() as conn:
            return list(conn.execute(query))

    def _with_properties(self, record_type: str, records: list[_R]) -> list[_R]:
        if not records:
            return records
        with self._reads.connect() as conn:
            found = read_properties(conn, record_type, (record.id for record in records))
        return [
            record.model_copy(update={"properties": found[record.id]})
            if record.id in found
            else record
            for record in records
        ]

    def contacts(self, *, email: str | None = None, limit: int, offset: int) -> list[Contact]:
        """Contacts, oldest first; ``email`` matches trimmed and case-insensitively."""
        query = select(contacts).order_by(contacts.c.created_at, contacts.c.id)
        if email is not None:
            query = query.where(contacts.c.email_key == email.strip().lower())
        rows = self._all(query.limit(limit).offset(offset))
        return self._with_properties("contact", [Contact(**_fields(row, Contact)) for row in rows])

    def companies(self, *, limit: int, offset: int) -> list[Company]:
        """Companies, oldest first."""
        query = select(companies).order_by(companies.c.created_at, companies.c.id)
        rows = self._all(query.limit(limit).offset(offset))
        return self._with_properties("company", [Company(**_fields(row, Company)) for row in rows])

    def leads(self, *, owner: str | None = None, limit: int, offset: int) -> list[Lead]:
        """Leads, oldest first; ``owner`` matches the owner's email case-insensitively."""
        query = select(leads).order_by(leads.c.created_at, leads.c.id)
        if owner is not None:
            query = query.where(leads.c.owner_email == owner_key(owner))
        rows = self._all(query.limit(limit).offset(offset))
        return self._with_properties("lead", [Lead(**_fields(row, Lead)) for row in rows])

    def lead(self, lead_id: str) -> Lead | None:
        """One lead, or ``None``."""
        rows = self._all(select(leads).where(leads.c.id == lead_id))
        found = self._with_properties("lead", [Lead(**_fields(row, Lead)) for row in rows])
        return found[0] if found else None

    def activities(
        self,
        *,
        type_: str | None = None,
        upcoming: bool = False,
        lead_id: str | None = None,
        owner: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Activity]:
        """Activities by date, earliest first; ``upcoming`` keeps those not yet started."""
        query = (
            select(activities, leads.c.title.label("lead_title"))
            .join(leads, leads.c.id == activities.c.lead_id)
            .order_by(activities.c.activity_date, activities.c.id)
        )
        if type_ is not None:
            query = query.where(activities.c.type == type_.upper())
        if upcoming:
            query = query.where(activities.c.activity_date >= self._clock())
        if lead_id is not None:
            query = query.where(activities.c.lead_id == lead_id)
        if owner is not None:
            query = query.where(activities.c.owner_email == owner_key(owner))
        rows = self._all(query.limit(limit).offset(offset))
        return self._with_properties("meeting", [_activity(row) for row in rows])

    def activity(self, activity_id: str) -> Activity | None:
        """One activity, or ``None``."""
        query = (
            select(activities, leads.c.title.label("lead_title"))
            .join(leads, leads.c.id == activities.c.lead_id)
            .where(activities.c.id == activity_id)
        )
        found = self._with_properties("meeting", [_activity(row) for row in self._all(query)])
        return found[0] if found else None

    def task(self, task_id: str) -> Task | None:
        """One task, or ``None``."""
        rows = self._all(select(tasks).where(tasks.c.id == task_id))
        found = self._with_properties("task", [Task(**_fields(row, Task)) for row in rows])
        return found[0] if found else None

    def tasks(
        self,
        *,
        status: TaskStatus | None = None,
        upcoming: bool = False,
        booking_id: str | None = None,
        owner: str | None = None,
        limit: int,
        offset: int,
    ) -> list[Task]:
        """Tasks by due date, earliest first; ``upcoming`` keeps those not yet due."""
        query = select(tasks).order_by(tasks.c.due_date, tasks.c.id)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if upcoming:
            query = query.where(tasks.c.due_date >= self._clock())
        if booking_id is not None:
            query = query.where(tasks.c.booking_id == booking_id)
        if owner is not None:
            query = query.where(tasks.c.owner_email == owner_key(owner))
        rows = self._all(query.limit(limit).offset(offset))
        return self._with_properties("task", [Task(**_fields(row, Task)) for row in rows])

    def task_owners(self) -> list[str]:
        """The owners of open tasks, sorted: the dashboard's "my tasks" choices."""
        query = (
            select(tasks.c.owner_email)
            .where(tasks.c.status == "todo", tasks.c.owner_email.is_not(None))
            .distinct()
            .order_by(tasks.c.owner_email)
        )
        return [str(row.owner_email) for row in self._all(query)]


def _activity(row: Row[Any]) -> Activity:
    fields = _fields(row, Activity)
    fields["metadata"] = ActivityMetadata(
        booking_id=row.booking_id, meeting_url=row.meeting_url, source=row.source
    )
    fields["lead"] = LeadSummary(id=row.lead_id, title=row.lead_title)
    return Activity(**fields)
