"""The ``bookme.push`` job: a meeting moved or cancelled in the CRM, sent to BookMe.

``route`` queues the job in the transaction that records the change; the
worker hands it here (``PushHandler.handle``). BookMe is the system of record
for the booking's time, so:

- BookMe accepts (2xx) → the change is ``pushed``. BookMe's own
  ``booking.rescheduled`` / ``booking.cancelled`` webhook follows and syncs
  like any other; the CRM already shows those values (the backend recorded
  them as written), so nothing is pushed again.
- BookMe refuses (409/422) → the change is ``refused`` with BookMe's reason;
  the booking's newest snapshot is applied to the CRM again through the
  outbox (a copy of it, ordered just after it), which puts the meeting back
  at BookMe's time; and the booking gets a task "BookMe refused the
  reschedule: <reason>" (kept in ``adapter.changes.tasks`` so that the
  booking's later events keep it).
- BookMe unavailable (5xx, 429, timeouts) → ``RetryableError``: the outbox
  retries with backoff, with the same ``Idempotency-Key``
  (``bookme-crm:change:<id>``), so a push whose answer was lost is still one
  reschedule (we assume BookMe honours the key; README). When the attempts run
  out the job is dead with BookMe's reason and the change ``failed``; a replay
  runs it again.
- BookMe has a newer snapshot of the booking than the change that moved or
  cancelled it (in BookMe, after the salesperson's edit) → nothing is sent: the
  change is ``superseded`` (BookMe's newer snapshot wins), or ``pushed`` when
  that snapshot already shows what the change asked for. A newer snapshot that
  left the time alone (new notes) does not stop the push.
- Other refusals (404, the token, other 4xx, not configured) →
  ``PermanentError``: dead at once, the change ``failed`` with the reason.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from adapter.bookme.errors import BookMeError, BookMeRefused, BookMeUnavailable
from adapter.bookme.push import BookMePusher
from adapter.changes import store as changes
from adapter.changes import tasks as extra
from adapter.changes.normalise import normalise
from adapter.changes.store import Change
from adapter.errors import PermanentError, RetryableError
from adapter.timeutil import as_utc, iso_z, utcnow
from outbox.store import SUPERSEDED, Claim, Event, NewEvent, OutboxStore

log = logging.getLogger(__name__)

__all__ = ["PushHandler", "refusal_task_key"]

CANCELLED_EVENTS = ("booking.cancelled",)
RESCHEDULED_EVENTS = ("booking.rescheduled",)
# A re-applied snapshot is ordered this much after the one it copies: later than it
# (the outbox applies only newer snapshots), earlier than any BookMe can send next.
REAPPLY_OFFSET = timedelta(microseconds=1)


def refusal_task_key(change_id: int) -> str:
    """The task key of the "BookMe refused …" task for one change."""
    return f"bookme-refused-{change_id}"


class PushHandler:
    """Handles ``bookme.push`` jobs; ``pusher`` builds a client (raises ``BookMeError``
    when BookMe is not configured), ``wake`` tells this process's workers that a
    snapshot was queued again."""

    def __init__(
        self,
        store: OutboxStore,
        pusher: Callable[[], BookMePusher],
        *,
        clock: Callable[[], datetime] = utcnow,
        wake: Callable[[], None] | None = None,
        counted: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.pusher = pusher
        self.clock = clock
        self.wake = wake
        self.counted = counted or (lambda _outcome: None)

    def handle(self, claim: Claim) -> None:
        """Push the claimed change to BookMe; raises ``AdapterError`` to retry or dead-letter."""
        event = claim.event
        job = event.payload
        change_id = int(job["changeId"])
        booking_id = str(job["bookingId"])
        action = str(job["action"])
        with self.store.engine.connect() as conn:
            change = changes.get(conn, change_id)
            history = changes.changes_for_booking(conn, booking_id)
        replaced = [
            c
            for c in history
            if c.state == changes.PENDING and c.push_event_id not in (None, event.id)
        ]
        # One push carries every change of the edit that queued it (start and duration).
        group = sorted({change_id, *(c.id for c in history if c.push_event_id == event.id)})
        self._retire_replaced(replaced, change_id)
        if change is None:
            with self.store.transaction() as conn:
                self.store.mark_synced(conn, event.id, claim.token, {"outcome": "unknown"})
            return
        latest = self.store.newest_for_key(booking_id)
        members = [c for c in history if c.id in group] or [change]
        overtaken = _overtaken(members, job, latest)
        if overtaken is not None:
            state, detail = overtaken
            self._settle(claim, change, group, state, detail)
            self.counted(state)
            return
        extra_log = {"change_id": change_id, "booking_id": booking_id, "action": action}
        log.info("pushing change %s to BookMe: %s", change_id, action, extra=extra_log)
        try:
            answer = self._send(job, booking_id, action)
        except BookMeRefused as exc:
            self._refused(claim, change, group, action, exc.reason, latest)
            self.counted(changes.REFUSED)
            log.warning(
                "BookMe refused change %s (%s): %s",
                change_id,
                action,
                exc.reason,
                extra={**extra_log, "status": exc.status},
            )
            return
        except BookMeUnavailable as exc:
            self.counted("unavailable")
            if self.store.retry.exhausted(event.attempts):
                with self.store.transaction() as conn:
                    _set_states(
                        conn,
                        group,
                        changes.FAILED,
                        f"gave up after {event.attempts} attempts: {exc.message}",
                    )
            raise RetryableError(exc.message) from exc
        except BookMeError as exc:
            self.counted(changes.FAILED)
            with self.store.transaction() as conn:
                _set_states(conn, group, changes.FAILED, exc.message)
            raise PermanentError(exc.message) from exc
        detail = _accepted(action, answer)
        self._settle(
            claim, change, group, changes.PUSHED, detail, updated_at=answer.get("updatedAt")
        )
        self.counted(changes.PUSHED)
        log.info("BookMe accepted change %s: %s", change_id, detail, extra=extra_log)

    def _send(self, job: dict[str, Any], booking_id: str, action: str) -> dict[str, Any]:
        key = str(job["idempotencyKey"])
        with self.pusher() as client:
            if action == "cancel":
                return client.cancel(booking_id, reason=job.get("reason"), idempotency_key=key)
            if action != "reschedule" or not job.get("scheduledStart"):
                raise PermanentError(f"push job {job!r} has no action or start BookMe can take")
            start = datetime.fromisoformat(str(job["scheduledStart"]).replace("Z", "+00:00"))
            duration = job.get("duration")
            return client.reschedule(
                booking_id,
                start=start,
                duration=int(duration) if duration is not None else None,
                idempotency_key=key,
            )

    def _settle(
        self,
        claim: Claim,
        change: Change,
        group: list[int],
        state: str,
        detail: str,
        *,
        updated_at: Any = None,
    ) -> None:
        result: dict[str, Any] = {"outcome": state, "changeId": change.id, "detail": detail}
        if isinstance(updated_at, str):
            result["bookmeUpdatedAt"] = updated_at
        with self.store.transaction() as conn:
            _set_states(conn, group, state, detail)
            self.store.mark_synced(conn, claim.event.id, claim.token, result)

    def _refused(
        self,
        claim: Claim,
        change: Change,
        group: list[int],
        action: str,
        reason: str,
        latest: Event | None,
    ) -> None:
        """Refused: the change says why, the CRM goes back to BookMe's snapshot, and the
        booking gets a task, all in one transaction."""
        now = self.clock()
        what = "cancellation" if action == "cancel" else "reschedule"
        booking_id = change.booking_id
        with self.store.transaction() as conn:
            _set_states(conn, group, changes.REFUSED, reason)
            if latest is not None:
                extra.add(conn, _refusal_task(change, what, reason, latest, now), now=now)
                self.store.enqueue(conn, _reapply(latest, change.id))
            self.store.mark_synced(
                conn,
                claim.event.id,
                claim.token,
                {"outcome": changes.REFUSED, "changeId": change.id, "reason": reason},
            )
        if latest is None:
            log.warning("booking %s has no snapshot to go back to", booking_id)
        if self.wake is not None:
            self.wake()

    def _retire_replaced(self, pending: list[Change], change_id: int) -> None:
        """Pending changes whose push job the outbox coalesced into a newer one (a later
        edit of the same booking) will never be pushed themselves: say so."""
        for other in pending:
            job = self.store.get(other.push_event_id) if other.push_event_id else None
            if job is None or job.state != SUPERSEDED:
                continue
            with self.store.transaction() as conn:
                changes.set_state(
                    conn,
                    other.id,
                    changes.SUPERSEDED,
                    detail=f"replaced by a later change made in the CRM (change {change_id})",
                )


def _set_states(conn: Connection, group: list[int], state: str, detail: str) -> None:
    for change_id in group:
        changes.set_state(conn, change_id, state, detail=detail)


def _overtaken(
    members: list[Change], job: dict[str, Any], latest: Event | None
) -> tuple[str, str] | None:
    """(state, detail) when BookMe changed the booking after the CRM did (its newest
    snapshot is newer than the change and moved or cancelled the booking); else ``None``:
    push. A newer snapshot that left the time alone (new notes) does not stop the push.
    """
    changed_at = min(change.changed_at for change in members)
    if latest is None or latest.snapshot_at <= changed_at:
        return None
    payload = latest.payload
    stamp = iso_z(latest.snapshot_at)
    event = payload.get("event", latest.kind)
    cancelled = event in CANCELLED_EVENTS
    if job.get("action") == "cancel":
        if cancelled:
            return changes.PUSHED, f"BookMe already shows the booking cancelled ({stamp})"
        if event in RESCHEDULED_EVENTS:
            return (
                changes.SUPERSEDED,
                f"BookMe rescheduled the booking after this change ({stamp}); its snapshot wins",
            )
        return None
    start = normalise("start", payload.get("scheduledDate"))
    duration = payload.get("duration")
    wanted = (job.get("scheduledStart"), job.get("duration"))
    # What the CRM showed before the edit: the changed fields' old values, the rest as asked.
    before = {"start": wanted[0], "duration": None if wanted[1] is None else str(wanted[1])}
    before.update({change.field: change.old_value for change in members})
    shows = (start, duration if wanted[1] is not None else None)
    if shows == wanted and not cancelled:
        return changes.PUSHED, f"BookMe already shows {start}, {duration} min ({stamp})"
    unmoved = start == before["start"] and (
        before["duration"] is None or str(duration) == before["duration"]
    )
    if unmoved and not cancelled:
        return None
    shown = "cancelled" if cancelled else f"{start}, {duration} min"
    return (
        changes.SUPERSEDED,
        f"BookMe moved the booking after this change: {shown} ({stamp}); its snapshot wins",
    )


def _accepted(action: str, answer: dict[str, Any]) -> str:
    if action == "cancel":
        return "BookMe cancelled the booking"
    start = answer.get("scheduledStart")
    duration = answer.get("duration")
    if start is None:
        return "BookMe accepted the reschedule"
    return f"BookMe moved the booking to {start}" + (f", {duration} min" if duration else "")


def _refusal_task(
    change: Change, what: str, reason: str, latest: Event, now: datetime
) -> extra.ExtraTask:
    payload = latest.payload
    asked = change.new_value or ""
    back_to = normalise("start", payload.get("scheduledDate")) or "?"
    description = (
        f"Booking {change.booking_id}: the {change.field} was changed to {asked} in the CRM "
        f"and sent to BookMe, which refused the {what}: {reason}\n"
        f"The meeting is back at BookMe's time ({back_to}, {payload.get('duration')} min). "
        "Agree a new time with the customer and change it in BookMe."
    )
    return extra.ExtraTask(
        booking_id=change.booking_id,
        key=refusal_task_key(change.id),
        title=f"BookMe refused the {what}: {reason}",
        description=description,
        due_at=now,
        priority="high",
    )


def _reapply(latest: Event, change_id: int) -> NewEvent:
    """BookMe's newest snapshot once more, just after itself: the worker applies it (the
    booking's meeting back at BookMe's time, with the refusal task)."""
    digest = hashlib.sha256(f"reapply:{change_id}:{latest.body_hash}".encode()).hexdigest()
    return NewEvent(
        key=latest.key,
        kind=latest.kind,
        payload=latest.payload,
        body_hash=digest,
        snapshot_at=as_utc(latest.snapshot_at) + REAPPLY_OFFSET,
    )
