"""``hubspot_objects``: which HubSpot object belongs to which booking key, in our database.

One row per (object type, natural key): contacts by email key, companies by
name key, deals by lead key, meetings by booking id, tasks by
``{bookingId}|{task key}``. For meetings and tasks, which HubSpot cannot upsert
by a unique property, the row is first written as an *intent* (committed
before the create call), then given the HubSpot id once the create answers.
An intent without an id is an interrupted create: the backend reconciles it by
searching HubSpot before creating again.

Besides the id, a row keeps what we last wrote that later decisions need:
``lead_key`` and ``status`` (a meeting's outcome, so a deal's stage can be
derived from all its meetings; a task's status as we set it, so a task a
salesperson completed is told from one we closed as cancelled), and
``links`` (the associations made, so unchanged ones are not made again), and
``tags`` (what we wrote to a contact's, company's or deal's tags property, so
a later booking adds its tags to them instead of replacing them).
Migrations ``0004_hubspot_ids`` and ``0008_hubspot_tags`` mirror this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    select,
    update,
)

from adapter.backends.local.models import UtcDateTime
from adapter.db import upsert_insert

hubspot_metadata = MetaData()

INTENT = "intent"
CREATED = "created"

hubspot_objects = Table(
    "hubspot_objects",
    hubspot_metadata,
    Column("object_type", String(32), nullable=False),
    Column("natural_key", String(600), nullable=False),
    Column("hubspot_id", String(64), nullable=True),
    Column("state", String(16), nullable=False),
    Column("lead_key", String(600), nullable=True),
    Column("status", String(32), nullable=True),
    Column("links", String(600), nullable=True),
    Column("tags", String(2000), nullable=True),
    Column("deleted_id", String(64), nullable=True),
    Column("deleted_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    UniqueConstraint("object_type", "natural_key", name="uq_hubspot_objects_key"),
    Index("ix_hubspot_objects_lead", "object_type", "lead_key"),
)


@dataclass(frozen=True)
class Row:
    """One ``hubspot_objects`` row."""

    object_type: str
    natural_key: str
    hubspot_id: str | None
    state: str
    lead_key: str | None
    status: str | None
    links: str | None
    tags: str | None
    updated_at: datetime

    def tag_set(self) -> set[str]:
        """The tags we last wrote to this object (``;``-separated, as HubSpot takes them)."""
        return {tag for tag in (self.tags or "").split(";") if tag}


_COLUMNS = (
    hubspot_objects.c.object_type,
    hubspot_objects.c.natural_key,
    hubspot_objects.c.hubspot_id,
    hubspot_objects.c.state,
    hubspot_objects.c.lead_key,
    hubspot_objects.c.status,
    hubspot_objects.c.links,
    hubspot_objects.c.tags,
    hubspot_objects.c.updated_at,
)


def _key(object_type: str, natural_key: str) -> ColumnElement[bool]:
    return and_(
        hubspot_objects.c.object_type == object_type,
        hubspot_objects.c.natural_key == natural_key,
    )


def get(conn: Connection, object_type: str, natural_key: str) -> Row | None:
    row = conn.execute(select(*_COLUMNS).where(_key(object_type, natural_key))).first()
    return Row(*row) if row is not None else None


def with_prefix(conn: Connection, object_type: str, prefix: str) -> list[Row]:
    """Rows of ``object_type`` whose natural key starts with ``prefix`` (a booking's tasks)."""
    rows = conn.execute(
        select(*_COLUMNS).where(
            hubspot_objects.c.object_type == object_type,
            hubspot_objects.c.natural_key.startswith(prefix, autoescape=True),
        )
    )
    return [Row(*row) for row in rows]


@dataclass(frozen=True)
class BookingRecords:
    """A booking's HubSpot object ids as we last recorded them (the dashboard's links)."""

    booking_id: str
    meeting_id: str | None
    contact_id: str | None
    company_id: str | None
    deal_id: str | None
    updated_at: datetime
    task_ids: dict[str, str] = field(default_factory=dict)  # task key -> HubSpot id


def recent_bookings(conn: Connection, *, limit: int) -> list[BookingRecords]:
    """The ``limit`` most recently written bookings, each with its HubSpot ids.

    A booking is its meeting row; the contact, company and deal ids are the
    associations recorded in that row's ``links``; its tasks are keyed
    ``{bookingId}|{task key}``.
    """
    meetings = conn.execute(
        select(*_COLUMNS)
        .where(hubspot_objects.c.object_type == "meeting")
        .order_by(hubspot_objects.c.updated_at.desc(), hubspot_objects.c.natural_key)
        .limit(limit)
    )
    out = []
    for meeting in [Row(*row) for row in meetings]:
        links = dict(part.split(":", 1) for part in (meeting.links or "").split(";") if ":" in part)
        prefix = f"{meeting.natural_key}|"
        tasks = {
            row.natural_key[len(prefix) :]: row.hubspot_id
            for row in with_prefix(conn, "task", prefix)
            if row.hubspot_id
        }
        out.append(
            BookingRecords(
                booking_id=meeting.natural_key,
                meeting_id=meeting.hubspot_id or None,
                contact_id=links.get("contact"),
                company_id=links.get("company"),
                deal_id=links.get("deal"),
                updated_at=meeting.updated_at,
                task_ids=tasks,
            )
        )
    return out


def statuses_for_lead(conn: Connection, object_type: str, lead_key: str) -> dict[str, str]:
    """natural key -> status of every ``object_type`` row recorded under ``lead_key``."""
    rows = conn.execute(
        select(hubspot_objects.c.natural_key, hubspot_objects.c.status).where(
            hubspot_objects.c.object_type == object_type,
            hubspot_objects.c.lead_key == lead_key,
            hubspot_objects.c.status.is_not(None),
        )
    )
    return {key: status for key, status in rows}


def save(
    conn: Connection,
    object_type: str,
    natural_key: str,
    now: datetime,
    *,
    hubspot_id: str | None,
    state: str = CREATED,
    fields: Mapping[str, str | None] | None = None,
) -> None:
    """Insert or update the row in one statement.

    Contacts, companies and deals are shared by bookings that different
    workers may apply at once, so this is an upsert, never update-then-insert.
    ``fields`` sets any of ``lead_key``, ``status``, ``links`` and ``tags``.
    """
    values: dict[str, object] = {"hubspot_id": hubspot_id, "state": state, "updated_at": now}
    values.update(fields or {})
    stmt = upsert_insert(conn, hubspot_objects).values(
        object_type=object_type, natural_key=natural_key, created_at=now, **values
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[hubspot_objects.c.object_type, hubspot_objects.c.natural_key],
            set_=values,
        )
    )


def mark_deleted(
    conn: Connection, object_type: str, natural_key: str, deleted_id: str, now: datetime
) -> None:
    """Record that HubSpot no longer holds ``deleted_id`` (someone deleted it there);
    the row's ``hubspot_id`` says whether it was created again."""
    conn.execute(
        update(hubspot_objects)
        .where(_key(object_type, natural_key))
        .values(deleted_id=deleted_id, deleted_at=now)
    )


@dataclass(frozen=True)
class Deletion:
    """A record deleted in HubSpot: created again (``now_id``) or left deleted."""

    object_type: str
    natural_key: str
    deleted_id: str
    now_id: str | None
    deleted_at: datetime

    @property
    def recreated(self) -> bool:
        return bool(self.now_id) and self.now_id != self.deleted_id


def deletions(conn: Connection, *, limit: int) -> list[Deletion]:
    """The ``limit`` latest records found deleted in HubSpot, newest first."""
    rows = conn.execute(
        select(
            hubspot_objects.c.object_type,
            hubspot_objects.c.natural_key,
            hubspot_objects.c.deleted_id,
            hubspot_objects.c.hubspot_id,
            hubspot_objects.c.deleted_at,
        )
        .where(hubspot_objects.c.deleted_id.is_not(None))
        .order_by(hubspot_objects.c.deleted_at.desc(), hubspot_objects.c.natural_key)
        .limit(limit)
    )
    return [Deletion(*row) for row in rows]


def forget(conn: Connection, object_type: str, natural_key: str) -> None:
    conn.execute(delete(hubspot_objects).where(_key(object_type, natural_key)))
