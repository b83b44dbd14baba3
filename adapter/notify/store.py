"""The sends: one row per automatic task of a booking, the intent recorded before SMTP.

States::

    scheduled ──due──▶ sending ──accepted──▶ sent
        ▲                 │ (phase data: the message went out, no answer seen)
        │                 ├──▶ uncertain ──"send again"──▶ scheduled
        │                 │               └─"mark sent"──▶ sent
        │                 ├─refused (5xx)──▶ failed
        │                 └─4xx / no connection──▶ scheduled (the outbox retries)
        └─ reschedule ── dropped (cancelled, no-show, task gone) / skipped (done by hand)
                         / missed (due longer ago than the mapping's window)

A row in ``sending`` whose phase is ``data`` names a send interrupted after
the server may have accepted it: it is never repeated blindly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    select,
    update,
)

from adapter.db import upsert_insert

sends_metadata = MetaData()

SCHEDULED = "scheduled"
SENDING = "sending"
SENT = "sent"
UNCERTAIN = "uncertain"
FAILED = "failed"
DROPPED = "dropped"
SKIPPED = "skipped"
MISSED = "missed"
# A send in flight or done: a later snapshot of its booking never reschedules it.
SETTLED_FOR_GOOD = (SENDING, SENT, UNCERTAIN)

sends = Table(
    "notify_sends",
    sends_metadata,
    Column("booking_id", String(200), nullable=False),
    Column("task_key", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    # Only while sending: "connect" (nothing handed over yet) or "data" (maybe delivered).
    Column("phase", String(16), nullable=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("to_address", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("message_id", String(200), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("booking_id", "task_key", name="pk_notify_sends"),
    Index("ix_notify_sends_state_due", "state", "due_at"),
)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Send:
    """One automatic task's mail as stored."""

    booking_id: str
    task_key: str
    state: str
    phase: str | None
    due_at: datetime
    to_address: str
    subject: str
    message_id: str | None
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    updated_at: datetime


def _from_row(row: object) -> Send:
    m = row._mapping  # type: ignore[attr-defined]
    return Send(
        booking_id=m["booking_id"],
        task_key=m["task_key"],
        state=m["state"],
        phase=m["phase"],
        due_at=_utc(m["due_at"]),  # type: ignore[arg-type]
        to_address=m["to_address"],
        subject=m["subject"],
        message_id=m["message_id"],
        attempts=m["attempts"],
        last_error=m["last_error"],
        sent_at=_utc(m["sent_at"]),
        updated_at=_utc(m["updated_at"]),  # type: ignore[arg-type]
    )


def _key(booking_id: str, task_key: str) -> object:
    return (sends.c.booking_id == booking_id) & (sends.c.task_key == task_key)


def get(conn: Connection, booking_id: str, task_key: str) -> Send | None:
    """The send, or ``None``."""
    row = conn.execute(select(sends).where(_key(booking_id, task_key))).first()  # type: ignore[arg-type]
    return None if row is None else _from_row(row)


def for_booking(conn: Connection, booking_id: str) -> list[Send]:
    """The booking's sends, by task key."""
    query = select(sends).where(sends.c.booking_id == booking_id).order_by(sends.c.task_key)
    return [_from_row(row) for row in conn.execute(query)]


def listing(conn: Connection, *, limit: int = 200) -> list[Send]:
    """The ``limit`` sends due latest (the dashboard's list)."""
    query = select(sends).order_by(sends.c.due_at.desc()).limit(limit)
    return [_from_row(row) for row in conn.execute(query)]


def schedule(
    conn: Connection,
    booking_id: str,
    task_key: str,
    *,
    due_at: datetime,
    to_address: str,
    subject: str,
    now: datetime,
) -> bool:
    """Schedule (or move) the send; ``False`` when it is in flight or done already."""
    current = get(conn, booking_id, task_key)
    if current is not None and current.state in SETTLED_FOR_GOOD:
        return False
    values = {
        "state": SCHEDULED,
        "phase": None,
        "due_at": due_at,
        "to_address": to_address,
        "subject": subject,
        "last_error": None,
        "updated_at": now,
    }
    stmt = upsert_insert(conn, sends).values(
        booking_id=booking_id, task_key=task_key, attempts=0, **values
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[sends.c.booking_id, sends.c.task_key], set_=values
        )
    )
    return True


def settle(
    conn: Connection,
    booking_id: str,
    task_key: str,
    state: str,
    *,
    now: datetime,
    error: str | None = None,
    only_from: tuple[str, ...] | None = None,
) -> bool:
    """Move the send to ``state`` (optionally only from ``only_from``); whether it moved."""
    where = _key(booking_id, task_key)
    if only_from is not None:
        where = where & sends.c.state.in_(only_from)  # type: ignore[operator]
    values: dict[str, object] = {
        "state": state,
        "phase": None,
        "last_error": error,
        "updated_at": now,
    }
    if state == SENT:
        values["sent_at"] = now
    return conn.execute(update(sends).where(where).values(**values)).rowcount == 1  # type: ignore[arg-type]


def begin(conn: Connection, booking_id: str, task_key: str, message_id: str, now: datetime) -> None:
    """Record the intent: sending, nothing handed to the server yet."""
    conn.execute(
        update(sends)
        .where(_key(booking_id, task_key))  # type: ignore[arg-type]
        .values(
            state=SENDING,
            phase="connect",
            message_id=message_id,
            attempts=sends.c.attempts + 1,
            updated_at=now,
        )
    )


def enter_data(conn: Connection, booking_id: str, task_key: str, now: datetime) -> None:
    """From here on the server may accept the message whatever we see next."""
    conn.execute(
        update(sends)
        .where(_key(booking_id, task_key))  # type: ignore[arg-type]
        .values(phase="data", updated_at=now)
    )
