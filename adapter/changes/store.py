"""The CRM-side history: each change sales staff made, recorded once, and what it triggers.

Two tables:

- ``crm_field_state``, one row per CRM object this service wrote (meeting,
  deal, task): the tracked values it last **wrote** and those the CRM last
  **showed**. The backends call ``record_written`` in the transaction that
  settles a write; a poll, a CRM webhook or a local edit calls ``observe``.
- ``crm_changes``, one row per change: a value the CRM shows that is neither
  what it showed before nor what the service wrote (an echo of our own write,
  however the CRM reformats it, is never a change: see ``normalise``). The
  same change seen twice (a poll and a webhook) is one row, by its
  ``dedupe_key``. This is the progress history (deal stages, tasks done,
  outcomes) and the list of pushes back to BookMe.

``route`` decides, in the caller's transaction, what a recorded change
triggers: a meeting moved or cancelled becomes a ``bookme.push`` job in the
outbox (state ``pending``); a task done drops its pending automatic mail;
everything else is progress, kept as ``recorded``.

States of a change::

    recorded                      progress only, nothing to push
    pending ──▶ pushed            BookMe accepted (its own webhook follows)
            ├─▶ refused           BookMe said no: the CRM goes back to BookMe's time
            ├─▶ superseded        BookMe's newer snapshot won
            └─▶ failed            retries ran out (the push job is dead; replayable)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from adapter.backends.local.models import UtcDateTime
from adapter.changes.normalise import FIELDS
from adapter.db import upsert_insert
from adapter.notify import store as sends
from adapter.timeutil import as_utc, iso_z
from outbox.store import NewEvent, OutboxStore

changes_metadata = MetaData()

PUSH_KIND = "bookme.push"

RECORDED = "recorded"
PENDING = "pending"
PUSHED = "pushed"
REFUSED = "refused"
SUPERSEDED = "superseded"
FAILED = "failed"
STATES = (RECORDED, PENDING, PUSHED, REFUSED, SUPERSEDED, FAILED)

SOURCES = ("poll", "webhook", "dashboard", "api")

crm_changes = Table(
    "crm_changes",
    changes_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(64), nullable=False, unique=True),
    Column("booking_id", String(200), nullable=False),
    Column("lead_key", String(600), nullable=True),
    Column("object_type", String(16), nullable=False),
    Column("crm_id", String(64), nullable=False),
    Column("task_key", String(100), nullable=True),
    Column("field", String(32), nullable=False),
    Column("old_value", Text, nullable=True),
    Column("new_value", Text, nullable=True),
    Column("changed_at", UtcDateTime(), nullable=False),
    Column("recorded_at", UtcDateTime(), nullable=False),
    Column("source", String(16), nullable=False),
    Column("actor", String(320), nullable=True),
    Column("state", String(16), nullable=False),
    Column("detail", Text, nullable=True),
    Column("push_event_id", String(36), nullable=True),
    Index("ix_crm_changes_booking_changed", "booking_id", "changed_at"),
    Index("ix_crm_changes_field_changed", "field", "changed_at"),
    Index("ix_crm_changes_lead_key", "lead_key"),
)

crm_field_state = Table(
    "crm_field_state",
    changes_metadata,
    Column("object_type", String(16), nullable=False),
    Column("crm_id", String(64), nullable=False),
    Column("booking_id", String(200), nullable=False),
    Column("lead_key", String(600), nullable=True),
    Column("task_key", String(100), nullable=True),
    Column("written", Text, nullable=False),
    Column("written_at", UtcDateTime(), nullable=False),
    Column("seen", Text, nullable=False),
    Column("seen_at", UtcDateTime(), nullable=True),
    PrimaryKeyConstraint("object_type", "crm_id", name="pk_crm_field_state"),
    Index("ix_crm_field_state_booking", "booking_id"),
)


@dataclass(frozen=True)
class Change:
    """One change made in the CRM, as recorded."""

    id: int
    booking_id: str
    lead_key: str | None
    object_type: str
    crm_id: str
    task_key: str | None
    field: str
    old_value: str | None
    new_value: str | None
    changed_at: datetime
    recorded_at: datetime
    source: str
    actor: str | None
    state: str
    detail: str | None
    push_event_id: str | None


def _change(row: Any) -> Change:
    m = row._mapping
    return Change(
        id=m["id"],
        booking_id=m["booking_id"],
        lead_key=m["lead_key"],
        object_type=m["object_type"],
        crm_id=m["crm_id"],
        task_key=m["task_key"],
        field=m["field"],
        old_value=m["old_value"],
        new_value=m["new_value"],
        changed_at=as_utc(m["changed_at"]),
        recorded_at=as_utc(m["recorded_at"]),
        source=m["source"],
        actor=m["actor"],
        state=m["state"],
        detail=m["detail"],
        push_event_id=m["push_event_id"],
    )


def _check(object_type: str, values: Mapping[str, str | None]) -> None:
    fields = FIELDS.get(object_type)
    if fields is None:
        raise ValueError(f"{object_type!r} is not a tracked CRM object type")
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{object_type} has no tracked field {sorted(unknown)}")


def _state_row(conn: Connection, object_type: str, crm_id: str) -> Any:
    return conn.execute(
        select(crm_field_state).where(
            (crm_field_state.c.object_type == object_type) & (crm_field_state.c.crm_id == crm_id)
        )
    ).first()


def record_written(
    conn: Connection,
    object_type: str,
    crm_id: str,
    *,
    booking_id: str,
    values: Mapping[str, str | None],
    now: datetime,
    lead_key: str | None = None,
    task_key: str | None = None,
) -> None:
    """The service wrote these (normalised) values to the CRM object: they are now
    both what it wrote and what the CRM shows. Fields not named keep their values."""
    _check(object_type, values)
    row = _state_row(conn, object_type, crm_id)
    written = json.loads(row.written) if row is not None else {}
    seen = json.loads(row.seen) if row is not None else {}
    written.update(values)
    seen.update(values)
    fresh = {
        "booking_id": booking_id,
        "lead_key": lead_key if lead_key is not None else (row.lead_key if row else None),
        "task_key": task_key if task_key is not None else (row.task_key if row else None),
        "written": json.dumps(written, sort_keys=True),
        "written_at": now,
        "seen": json.dumps(seen, sort_keys=True),
    }
    stmt = upsert_insert(conn, crm_field_state).values(
        object_type=object_type, crm_id=crm_id, seen_at=None, **fresh
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[crm_field_state.c.object_type, crm_field_state.c.crm_id], set_=fresh
        )
    )


def dedupe_key(
    object_type: str, crm_id: str, field: str, new_value: str | None, changed_at: datetime
) -> str:
    """The same change, however it reached us (poll, webhook), has one key."""
    text = "|".join((object_type, crm_id, field, new_value or "", iso_z(changed_at) or ""))
    return hashlib.sha256(text.encode()).hexdigest()


def observe(
    conn: Connection,
    object_type: str,
    crm_id: str,
    values: Mapping[str, str | None],
    *,
    changed_at: datetime,
    source: str,
    now: datetime,
    actor: str | None = None,
) -> list[Change]:
    """The CRM shows these (normalised) values for the object; record what changed.

    Per field: the value the CRM showed before → nothing; the value the service
    wrote → an echo (remembered as seen, not a change); anything else → a
    change (once per ``dedupe_key``). An object the service never wrote is not
    ours: ``[]``. Returns the changes newly recorded, in state ``recorded``.
    """
    _check(object_type, values)
    if source not in SOURCES:
        raise ValueError(f"unknown change source {source!r}")
    row = _state_row(conn, object_type, crm_id)
    if row is None:
        return []
    written: dict[str, str | None] = json.loads(row.written)
    seen: dict[str, str | None] = json.loads(row.seen)
    recorded: list[Change] = []
    for field, value in values.items():
        before = seen.get(field, written.get(field))
        if value == before:
            continue
        seen[field] = value
        if value == written.get(field):
            continue  # our own write, seen again
        key = dedupe_key(object_type, crm_id, field, value, changed_at)
        exists = conn.execute(
            select(crm_changes.c.id).where(crm_changes.c.dedupe_key == key)
        ).first()
        if exists is not None:
            continue
        change_id = conn.execute(
            insert(crm_changes)
            .values(
                dedupe_key=key,
                booking_id=row.booking_id,
                lead_key=row.lead_key,
                object_type=object_type,
                crm_id=crm_id,
                task_key=row.task_key,
                field=field,
                old_value=before,
                new_value=value,
                changed_at=changed_at,
                recorded_at=now,
                source=source,
                actor=actor,
                state=RECORDED,
            )
            .returning(crm_changes.c.id)
        ).scalar_one()
        recorded.append(get(conn, change_id))  # type: ignore[arg-type]
    conn.execute(
        update(crm_field_state)
        .where(
            (crm_field_state.c.object_type == object_type) & (crm_field_state.c.crm_id == crm_id)
        )
        .values(seen=json.dumps(seen, sort_keys=True), seen_at=now)
    )
    return recorded


def shown(conn: Connection, object_type: str, crm_id: str) -> dict[str, str | None]:
    """What the CRM last showed for the object (our writes included); ``{}`` if not ours."""
    row = _state_row(conn, object_type, crm_id)
    if row is None:
        return {}
    return {**json.loads(row.written), **json.loads(row.seen)}


def get(conn: Connection, change_id: int) -> Change | None:
    row = conn.execute(select(crm_changes).where(crm_changes.c.id == change_id)).first()
    return None if row is None else _change(row)


def set_state(
    conn: Connection,
    change_id: int,
    state: str,
    *,
    detail: str | None = None,
    push_event_id: str | None = None,
) -> None:
    """Move a change to ``state`` (with BookMe's reason or the superseding value)."""
    if state not in STATES:
        raise ValueError(f"unknown change state {state!r}")
    values: dict[str, Any] = {"state": state}
    if detail is not None:
        values["detail"] = detail
    if push_event_id is not None:
        values["push_event_id"] = push_event_id
    conn.execute(update(crm_changes).where(crm_changes.c.id == change_id).values(**values))


def changes_for_booking(conn: Connection, booking_id: str) -> list[Change]:
    """The booking's CRM-side changes, oldest first."""
    query = (
        select(crm_changes)
        .where(crm_changes.c.booking_id == booking_id)
        .order_by(crm_changes.c.changed_at, crm_changes.c.id)
    )
    return [_change(row) for row in conn.execute(query)]


def recent(conn: Connection, *, limit: int = 50, state: str | None = None) -> list[Change]:
    """The newest changes (optionally in one state), newest first."""
    query = select(crm_changes)
    if state is not None:
        query = query.where(crm_changes.c.state == state)
    query = query.order_by(crm_changes.c.recorded_at.desc(), crm_changes.c.id.desc()).limit(limit)
    return [_change(row) for row in conn.execute(query)]


def push_job(
    change: Change, action: str, *, start: str | None, duration: int | None, reason: str | None
) -> dict[str, Any]:
    """The ``bookme.push`` job's body for ``change``."""
    return {
        "changeId": change.id,
        "bookingId": change.booking_id,
        "action": action,
        "scheduledStart": start,
        "duration": duration,
        "reason": reason,
        "idempotencyKey": f"bookme-crm:change:{change.id}",
    }


def push_key(booking_id: str) -> str:
    """The outbox ordering key of a booking's pushes: one at a time, in order."""
    return f"bookme:{booking_id}"


def route(
    conn: Connection,
    changes: Sequence[Change],
    *,
    store: OutboxStore,
    now: datetime,
    reason: str | None = None,
) -> list[Change]:
    """Queue what ``changes`` trigger, in ``conn``'s transaction; returns the changes
    now ``pending`` a push.

    A meeting whose start or duration changed becomes one reschedule (both
    changes of one object in one call share one push: the job carries the
    meeting's whole time as the CRM shows it); a meeting set to ``CANCELED``
    becomes a cancellation with ``reason`` (the CRM's notes or the form's
    text). A task done drops its pending automatic mail. The rest is progress.
    """
    pending: list[Change] = []
    meetings: dict[str, list[Change]] = {}
    for change in changes:
        if change.object_type == "meeting" and change.field in ("start", "duration", "outcome"):
            meetings.setdefault(change.crm_id, []).append(change)
        elif change.object_type == "task" and change.new_value == "done" and change.task_key:
            sends.settle(
                conn,
                change.booking_id,
                change.task_key,
                sends.SKIPPED,
                now=now,
                error="done in the CRM",
                only_from=(sends.SCHEDULED,),
            )
    for crm_id, group in meetings.items():
        current = shown(conn, "meeting", crm_id)
        cancel = next(
            (c for c in group if c.field == "outcome" and c.new_value == "CANCELED"), None
        )
        moved = [c for c in group if c.field in ("start", "duration")]
        if cancel is not None:
            job, trigger = (
                push_job(cancel, "cancel", start=None, duration=None, reason=reason),
                [cancel],
            )
        elif moved:
            duration = current.get("duration")
            job = push_job(
                moved[0],
                "reschedule",
                start=current.get("start"),
                duration=int(duration) if duration else None,
                reason=None,
            )
            trigger = moved
        else:
            continue
        body = json.dumps(job, sort_keys=True, separators=(",", ":"))
        event, _ = store.enqueue(
            conn,
            NewEvent(
                key=push_key(group[0].booking_id),
                kind=PUSH_KIND,
                payload=job,
                body_hash=hashlib.sha256(body.encode()).hexdigest(),
                snapshot_at=group[0].changed_at,
            ),
        )
        for change in trigger:
            set_state(conn, change.id, PENDING, push_event_id=event.id)
            pending.append(get(conn, change.id))  # type: ignore[arg-type]
    return pending
