"""The local reference CRM's tables, on their own ``crm_metadata``.

Every identity rule of contract §4 is a unique constraint here, so no
interleaving of writers can create a duplicate. Migrations ``0002_local_crm``
and ``0003_lifecycle`` mirror these definitions.

Records shared by several bookings (companies, contacts, leads) carry a
``version``: the ``snapshot_version`` of the newest booking snapshot whose
descriptive fields they hold. An upsert overwrites those fields only with a
version at least as new, so bookings may be applied in any order. ``''`` (the
server default, and the value of rows written before 0003) sorts before every
real version.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from adapter.timeutil import as_utc

crm_metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware.

    SQLite keeps no offset, so a value is converted to UTC before it is
    stored; without that, a ``+01:00`` time would be stored as wall-clock.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Tags(TypeDecorator[list[str]]):
    """A list of tags stored as JSON text (portable, and readable in a SQLite shell)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(list(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str] | None:
        if value is None:
            return None
        tags = json.loads(value)
        return [str(tag) for tag in tags]


def _id() -> Column[str]:
    return Column("id", String(32), primary_key=True)


VERSION_LENGTH = 240
"""A version: 27 characters of UTC timestamp, ``|`` and a booking id of at most 200."""


def _version(name: str = "version") -> Column[str]:
    return Column(name, String(VERSION_LENGTH), nullable=False, server_default="")


def _timestamps() -> tuple[Column[datetime], Column[datetime]]:
    return (
        Column("created_at", UtcDateTime(), nullable=False),
        Column("updated_at", UtcDateTime(), nullable=False),
    )


def _owner() -> tuple[Column[str]]:
    # The owner's email (lower-cased), NULL when the mapping names no owner (0012).
    return (Column("owner_email", String(320), nullable=True),)


companies = Table(
    "crm_companies",
    crm_metadata,
    _id(),
    Column("name_key", String(300), nullable=False),
    Column("name", String(300), nullable=False),
    Column("tags", Tags(), nullable=False),
    _version(),
    *_timestamps(),
    UniqueConstraint("name_key", name="uq_crm_companies_name_key"),
)

contacts = Table(
    "crm_contacts",
    crm_metadata,
    _id(),
    Column("email_key", String(320), nullable=False),
    Column("email", String(320), nullable=False),
    Column("first_name", String(200), nullable=False),
    Column("last_name", String(200), nullable=False),
    Column("phone", String(100), nullable=True),
    Column(
        "company_id",
        String(32),
        ForeignKey("crm_companies.id", name="fk_crm_contacts_company_id"),
        nullable=True,
    ),
    Column("tags", Tags(), nullable=False),
    # ``phone`` and ``company_id`` are those of the newest snapshot that had one.
    _version(),
    *_owner(),
    _version("phone_version"),
    _version("company_version"),
    *_timestamps(),
    UniqueConstraint("email_key", name="uq_crm_contacts_email_key"),
    Index("ix_crm_contacts_company_id", "company_id"),
)

leads = Table(
    "crm_leads",
    crm_metadata,
    _id(),
    Column("lead_key", String(400), nullable=False),
    Column("title", String(500), nullable=False),
    Column("stage", String(64), nullable=False),
    Column("source", String(100), nullable=False),
    Column("source_details", Text, nullable=False),
    Column("estimated_value", Integer, nullable=False),
    Column("lead_score", Integer, nullable=False),
    Column(
        "company_id",
        String(32),
        ForeignKey("crm_companies.id", name="fk_crm_leads_company_id"),
        nullable=True,
    ),
    Column(
        "contact_id",
        String(32),
        ForeignKey("crm_contacts.id", name="fk_crm_leads_contact_id"),
        nullable=False,
    ),
    Column("tags", Tags(), nullable=False),
    Column("last_activity_date", UtcDateTime(), nullable=False),
    # The stage rules of the newest snapshot; ``stage`` is derived from them and
    # the outcomes of the lead's meetings (see ``LeadPlan``). ``live_stage`` is
    # NULL only on a row written before 0003 that no snapshot has touched since.
    Column("live_stage", String(64), nullable=True),
    Column("cancelled_stage", String(64), nullable=True),
    Column("no_show_stage", String(64), nullable=True),
    # The stage a salesperson set (``PATCH /api/leads/{id}``, 0021): while set, it is
    # the lead's stage whatever its meetings say.
    Column("manual_stage", String(64), nullable=True),
    *_owner(),
    _version(),
    *_timestamps(),
    UniqueConstraint("lead_key", name="uq_crm_leads_lead_key"),
    Index("ix_crm_leads_company_id", "company_id"),
    Index("ix_crm_leads_contact_id", "contact_id"),
    Index("ix_crm_leads_owner_email", "owner_email"),
)

# The activity's ``metadata`` of the read API is built from booking_id,
# meeting_url and source, kept as columns so that they can be queried.
activities = Table(
    "crm_activities",
    crm_metadata,
    _id(),
    Column("booking_id", String(200), nullable=False),
    Column(
        "lead_id",
        String(32),
        ForeignKey("crm_leads.id", name="fk_crm_activities_lead_id"),
        nullable=False,
    ),
    Column(
        "contact_id",
        String(32),
        ForeignKey("crm_contacts.id", name="fk_crm_activities_contact_id"),
        nullable=False,
    ),
    Column("type", String(32), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("description", Text, nullable=False),
    Column("activity_date", UtcDateTime(), nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("meeting_url", Text, nullable=True),
    Column("source", String(100), nullable=False),
    # The ``snapshot_at`` of the plan last applied (NULL on rows written before 0003).
    Column("snapshot_at", UtcDateTime(), nullable=True),
    *_owner(),
    *_timestamps(),
    UniqueConstraint("booking_id", name="uq_crm_activities_booking_id"),
    Index("ix_crm_activities_type_date", "type", "activity_date"),
    Index("ix_crm_activities_lead_date", "lead_id", "activity_date"),
    Index("ix_crm_activities_contact_id", "contact_id"),
)

tasks = Table(
    "crm_tasks",
    crm_metadata,
    _id(),
    Column(
        "lead_id",
        String(32),
        ForeignKey("crm_leads.id", name="fk_crm_tasks_lead_id"),
        nullable=False,
    ),
    Column(
        "booking_id",
        String(200),
        ForeignKey("crm_activities.booking_id", name="fk_crm_tasks_booking_id"),
        nullable=False,
    ),
    Column("key", String(100), nullable=False),
    Column("title", String(500), nullable=False),
    Column("description", Text, nullable=False),
    Column("due_date", UtcDateTime(), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    *_owner(),
    *_timestamps(),
    UniqueConstraint("booking_id", "key", name="uq_crm_tasks_booking_id_key"),
    CheckConstraint("status IN ('todo', 'done', 'cancelled')", name="ck_crm_tasks_status"),
    CheckConstraint("priority IN ('low', 'medium', 'high')", name="ck_crm_tasks_priority"),
    Index("ix_crm_tasks_status_due", "status", "due_date"),
    Index("ix_crm_tasks_lead_id", "lead_id"),
    Index("ix_crm_tasks_owner_status_due", "owner_email", "status", "due_date"),
)
