"""Sales staff's edits of the local CRM (the PATCH endpoints and the dashboard's forms).

Each edit is one transaction: the CRM row is changed, the change is recorded
(``adapter.changes.observe``, with its source and actor) and routed
(``adapter.changes.route``: a moved or cancelled meeting queues its push to
BookMe in the outbox). Either all of it commits or none of it. The row's values
before the edit are recorded as what the service wrote (``_baseline``), so the
edit is compared with what the CRM showed.

What a salesperson may not do is refused with ``EditRefused`` naming the
field, and nothing changes: moving or re-opening a cancelled meeting (BookMe
has no way to un-cancel a booking), moving a meeting into the past, or
moving and cancelling it in one edit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, select, update

from adapter.backends.local.backend import _derive_stage
from adapter.backends.local.models import activities, leads, tasks
from adapter.changes import store as changes
from adapter.changes.normalise import normalise
from adapter.changes.store import Change
from adapter.plan import MeetingOutcome, TaskStatus
from outbox.store import OutboxStore

log = logging.getLogger(__name__)

__all__ = ["EditRefused", "MeetingEdit", "edit_meeting", "set_lead_stage", "set_task_status"]

CLOSED = ("CANCELED", "NO_SHOW")
# A meeting may be moved to start a little in the past (a form filled in slowly), not more.
PAST_SLACK = timedelta(minutes=5)


class EditRefused(Exception):
    """The edit cannot be made; ``field`` names the input at fault, ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class MeetingEdit:
    """What a salesperson changes on a meeting; ``None`` leaves a field as it is."""

    start: datetime | None = None
    duration: int | None = None
    outcome: MeetingOutcome | None = None
    reason: str | None = None  # why it is cancelled: sent to BookMe with the cancellation


@dataclass(frozen=True)
class Edited:
    """An edit that was made: the changes it recorded (and routed)."""

    crm_id: str
    changes: list[Change]


def _meeting_values(row: Any) -> dict[str, str | None]:
    return {
        "start": normalise("start", row.activity_date),
        "duration": normalise("duration", row.duration_minutes),
        "outcome": normalise("outcome", row.outcome),
    }


def edit_meeting(
    store: OutboxStore,
    activity_id: str,
    edit: MeetingEdit,
    *,
    source: str,
    actor: str | None,
    now: datetime,
) -> Edited | None:
    """Move, cancel or set the outcome of a meeting; ``None`` when there is no such meeting."""
    with store.transaction() as conn:
        row = conn.execute(
            select(activities).where(activities.c.id == activity_id).with_for_update()
        ).first()
        if row is None:
            return None
        _check_meeting(row, edit, now)
        lead_key = conn.execute(select(leads.c.lead_key).where(leads.c.id == row.lead_id)).scalar()
        values: dict[str, Any] = {"updated_at": now}
        if edit.start is not None:
            values["activity_date"] = edit.start
        if edit.duration is not None:
            values["duration_minutes"] = edit.duration
        if edit.outcome is not None:
            values["outcome"] = edit.outcome
        conn.execute(update(activities).where(activities.c.id == activity_id).values(**values))
        fresh = conn.execute(select(activities).where(activities.c.id == activity_id)).one()
        if edit.outcome is not None and edit.outcome != row.outcome:
            _derive_stage(conn, fresh.lead_id)
        recorded, routed = _record(
            conn,
            store,
            Object("meeting", activity_id, row.booking_id, lead_key),
            _meeting_values(row),
            _meeting_values(fresh),
            source=source,
            actor=actor,
            now=now,
            reason=edit.reason,
        )
    _log(recorded, routed, source, actor)
    return Edited(activity_id, recorded)


def _check_meeting(row: Any, edit: MeetingEdit, now: datetime) -> None:
    moving = edit.start is not None or edit.duration is not None
    if moving and edit.outcome == "CANCELED":
        raise EditRefused("outcome", "a meeting is either moved or cancelled, not both at once")
    if row.outcome == "CANCELED" and (
        moving or (edit.outcome is not None and edit.outcome != "CANCELED")
    ):
        field = "activityDate" if moving else "outcome"
        raise EditRefused(
            field, "the meeting is cancelled; BookMe cannot reopen it (book a new one)"
        )
    if moving and row.outcome in CLOSED:
        raise EditRefused("activityDate", f"the meeting is {row.outcome}; it cannot be moved")
    if edit.start is not None and edit.start < now - PAST_SLACK:
        raise EditRefused("activityDate", "must not be in the past")
    if edit.reason is not None and edit.outcome != "CANCELED":
        raise EditRefused("reason", "only goes with outcome CANCELED")


def set_lead_stage(
    store: OutboxStore,
    lead_id: str,
    stage: str,
    *,
    source: str,
    actor: str | None,
    now: datetime,
) -> Edited | None:
    """Give the lead ``stage`` by hand (kept over the stage derived from its meetings)."""
    with store.transaction() as conn:
        row = conn.execute(select(leads).where(leads.c.id == lead_id).with_for_update()).first()
        if row is None:
            return None
        booking_id = conn.execute(
            select(activities.c.booking_id)
            .where(activities.c.lead_id == lead_id)
            .order_by(activities.c.activity_date.desc())
            .limit(1)
        ).scalar()
        conn.execute(
            update(leads)
            .where(leads.c.id == lead_id)
            .values(stage=stage, manual_stage=stage, updated_at=now)
        )
        recorded, routed = _record(
            conn,
            store,
            Object("deal", lead_id, booking_id or "", row.lead_key),
            {"stage": normalise("stage", row.stage)},
            {"stage": normalise("stage", stage)},
            source=source,
            actor=actor,
            now=now,
        )
    _log(recorded, routed, source, actor)
    return Edited(lead_id, recorded)


def set_task_status(
    store: OutboxStore,
    task_id: str,
    status: TaskStatus,
    *,
    source: str,
    actor: str | None,
    now: datetime,
) -> Edited | None:
    """Set a task's status; a task done drops its pending automatic mail (``route``)."""
    with store.transaction() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id).with_for_update()).first()
        if row is None:
            return None
        lead_key = conn.execute(select(leads.c.lead_key).where(leads.c.id == row.lead_id)).scalar()
        conn.execute(
            update(tasks).where(tasks.c.id == task_id).values(status=status, updated_at=now)
        )
        recorded, routed = _record(
            conn,
            store,
            Object("task", task_id, row.booking_id, lead_key, row.key),
            {"status": normalise("status", row.status)},
            {"status": normalise("status", status)},
            source=source,
            actor=actor,
            now=now,
        )
    _log(recorded, routed, source, actor)
    return Edited(task_id, recorded)


class Object(NamedTuple):
    """The CRM object an edit changes, as ``adapter.changes`` keys it."""

    type: str
    crm_id: str
    booking_id: str
    lead_key: str | None
    task_key: str | None = None


def _record(
    conn: Connection,
    store: OutboxStore,
    obj: Object,
    before: dict[str, str | None],
    after: dict[str, str | None],
    *,
    source: str,
    actor: str | None,
    now: datetime,
    reason: str | None = None,
) -> tuple[list[Change], list[Change]]:
    """Record the edit from ``before`` to ``after`` and route it; (recorded, routed).

    What the row held before the edit is what the service last wrote to it. In
    the local CRM the row is the truth: every write the service makes lands in
    it, so instead of recording each of its writes (a read and an upsert per
    record, which tripled the drain's cost), the row's values are recorded here,
    just before the edit is observed against them. ``old_value`` is then what the
    salesperson saw, and an edit back to a value BookMe restored is still a change.
    """
    changes.record_written(
        conn,
        obj.type,
        obj.crm_id,
        booking_id=obj.booking_id,
        values=before,
        now=now,
        lead_key=obj.lead_key,
        task_key=obj.task_key,
    )
    recorded = changes.observe(
        conn, obj.type, obj.crm_id, after, changed_at=now, source=source, actor=actor, now=now
    )
    return recorded, changes.route(conn, recorded, store=store, now=now, reason=reason)


def _log(recorded: list[Change], routed: list[Change], source: str, actor: str | None) -> None:
    pushed = {change.id: change for change in routed}
    for change in recorded:
        log.info(
            "CRM change %s recorded: %s %s %s %s → %s%s",
            change.id,
            change.object_type,
            change.crm_id,
            change.field,
            change.old_value,
            change.new_value,
            " (push to BookMe queued)" if change.id in pushed else "",
            extra={
                "change_id": change.id,
                "booking_id": change.booking_id,
                "source": source,
                "actor": actor,
                "push_event_id": pushed[change.id].push_event_id if change.id in pushed else None,
            },
        )
