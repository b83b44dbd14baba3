"""Where a sent mail is recorded in the CRM, and where a task done by hand is read.

The local CRM: an ``EMAIL`` activity beside the booking's meeting (lead and
contact copied from it) and the task marked done, on the caller's
transaction. Keyed ``<bookingId>/email/<task key>`` because the activity
table keys activities by booking (the meeting), so a repeat records nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, select, update

from adapter.backends.local.models import activities, tasks
from adapter.db import upsert_insert


class MailRecord(Protocol):
    """A CRM's view of an automatic task: its status, and the sent mail's record.

    ``remote``: the CRM is reached over the network, so ``record`` gets a read
    connection after the send's commit instead of the commit's own transaction.
    """

    remote: bool

    def task_status(self, conn: Connection, booking_id: str, task_key: str) -> str | None:
        """``todo``, ``done`` or ``cancelled``; ``None`` when this CRM cannot tell cheaply."""
        ...

    def record(
        self,
        conn: Connection,
        booking_id: str,
        task_key: str,
        *,
        subject: str,
        text: str,
        at: datetime,
    ) -> None:
        """Record the sent mail on the booking and mark the task done."""
        ...


def email_activity_key(booking_id: str, task_key: str) -> str:
    return f"{booking_id}/email/{task_key}"


class LocalMailRecord:
    """The local reference CRM's tables, on the outbox database."""

    remote = False

    def task_status(self, conn: Connection, booking_id: str, task_key: str) -> str | None:
        query = select(tasks.c.status).where(
            tasks.c.booking_id == booking_id, tasks.c.key == task_key
        )
        status = conn.execute(query).scalar()
        return None if status is None else str(status)

    def record(
        self,
        conn: Connection,
        booking_id: str,
        task_key: str,
        *,
        subject: str,
        text: str,
        at: datetime,
    ) -> None:
        meeting = conn.execute(
            select(activities).where(activities.c.booking_id == booking_id)
        ).first()
        if meeting is not None:
            m = meeting._mapping
            conn.execute(
                upsert_insert(conn, activities)
                .values(
                    id=uuid.uuid4().hex,
                    booking_id=email_activity_key(booking_id, task_key),
                    lead_id=m["lead_id"],
                    contact_id=m["contact_id"],
                    type="EMAIL",
                    subject=subject,
                    description=text,
                    activity_date=at,
                    duration_minutes=0,
                    outcome="SENT",
                    meeting_url=None,
                    source=m["source"],
                    owner_email=m["owner_email"],
                    created_at=at,
                    updated_at=at,
                )
                .on_conflict_do_nothing(index_elements=[activities.c.booking_id])
            )
        conn.execute(
            update(tasks)
            .where(
                tasks.c.booking_id == booking_id, tasks.c.key == task_key, tasks.c.status == "todo"
            )
            .values(status="done", updated_at=at)
        )


class UnreadMailRecord:
    """A CRM this room cannot read or write: the plan's status is all that is known."""

    remote = True

    def task_status(self, conn: Connection, booking_id: str, task_key: str) -> str | None:
        return None

    def record(
        self,
        conn: Connection,
        booking_id: str,
        task_key: str,
        *,
        subject: str,
        text: str,
        at: datetime,
    ) -> None:
        return None
