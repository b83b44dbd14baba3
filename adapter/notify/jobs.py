"""The send job: scheduled when a booking syncs, handled by the worker at the due moment.

A booking's sync schedules each automatic task's send in the transaction that
marks the booking synced (``SendScheduler.schedule``): a row in
``notify_sends`` and an outbox job of kind ``notify.send`` keyed by (booking,
task), not claimable before the due moment. A later snapshot of the booking
enqueues a newer job for the same key, which the outbox's per-key ordering
makes the one that runs: a reschedule moves the send, a cancellation drops it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from adapter.booking import parse_booking
from adapter.errors import PermanentError, RetryableError
from adapter.mapping import MappingConfig
from adapter.notify import store as sends
from adapter.notify.mail import message_id, render_mail
from adapter.notify.record import MailRecord
from adapter.notify.smtp import SendUncertain, SmtpSender
from adapter.plan import BookingPlan, SendPlan
from adapter.timeutil import utcnow
from outbox.store import Claim, Event, NewEvent, OutboxStore

log = logging.getLogger(__name__)

SEND_KIND = "notify.send"


def send_key(booking_id: str, task_key: str) -> str:
    """The outbox ordering key of one task's send: its jobs run one at a time, newest wins."""
    return f"notify:{booking_id}:{task_key}"


class SendScheduler:
    """Turns a synced booking's automatic tasks into scheduled sends."""

    def __init__(self, store: OutboxStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    def schedule(self, conn: Connection, plan: BookingPlan, payload: dict[str, Any]) -> None:
        """On the settle's ``conn``: schedule or move each open automatic task's send,
        drop those whose task was cancelled or is no longer planned."""
        now = self.clock()
        wanted: set[str] = set()
        for task in plan.tasks:
            if task.send is None or task.status != "todo":
                continue
            wanted.add(task.key)
            moved = sends.schedule(
                conn,
                plan.booking_id,
                task.key,
                due_at=task.due,
                to_address=task.send.to,
                subject=task.send.subject,
                now=now,
            )
            if not moved:
                continue
            job = {
                "bookingId": plan.booking_id,
                "taskKey": task.key,
                "due": task.due.isoformat(),
                "send": task.send.model_dump(mode="json"),
                "booking": payload,
            }
            body = json.dumps(job, sort_keys=True, separators=(",", ":"))
            self.store.enqueue(
                conn,
                NewEvent(
                    key=send_key(plan.booking_id, task.key),
                    kind=SEND_KIND,
                    payload=job,
                    body_hash=hashlib.sha256(body.encode()).hexdigest(),
                    snapshot_at=plan.snapshot_at,
                    not_before=task.due,
                ),
            )
        for existing in sends.for_booking(conn, plan.booking_id):
            if existing.task_key not in wanted and existing.state == sends.SCHEDULED:
                sends.settle(
                    conn,
                    plan.booking_id,
                    existing.task_key,
                    sends.DROPPED,
                    now=now,
                    error=f"booking {plan.event.removeprefix('booking.')}: task no longer open",
                    only_from=(sends.SCHEDULED,),
                )


class NotifyHandler:
    """Handles ``notify.send`` jobs: decide, record the intent, send, record the mail."""

    def __init__(
        self,
        store: OutboxStore,
        sender: SmtpSender,
        record: MailRecord,
        mapping: Callable[[], MappingConfig],
        *,
        templates: Path,
        mail_from: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.sender = sender
        self.record = record
        self.mapping = mapping
        self.templates = templates
        self.mail_from = mail_from
        self.clock = clock

    def handle(self, claim: Claim) -> None:
        """Send the claimed job's mail if it is still wanted; raises ``AdapterError`` to
        retry or dead-letter (the worker decides by type)."""
        event = claim.event
        booking_id, task_key = event.payload["bookingId"], event.payload["taskKey"]
        due = datetime.fromisoformat(event.payload["due"])
        plan = SendPlan.model_validate(event.payload["send"])
        booking = parse_booking(event.payload["booking"])
        now = self.clock()
        mid = message_id(booking_id, task_key, self.mail_from)
        # Read before the write transaction: HubSpot's answer must not be awaited while
        # holding the database's write lock (SQLite: every webhook would wait behind it).
        with self.store.engine.connect() as conn:
            status = self.record.task_status(conn, booking_id, task_key)
        with self.store.transaction() as conn:
            outcome = self._decide(conn, event, due, plan, now, status)
            if outcome is not None:
                self.store.mark_synced(conn, event.id, claim.token, {"outcome": outcome})
                return
            # The intent commits before SMTP is touched.
            sends.begin(conn, booking_id, task_key, mid, now)
        message = render_mail(
            plan, booking, self.templates, sender=self.mail_from, task_key=task_key, date=now
        )

        def entering_data() -> None:
            with self.store.transaction() as conn:
                sends.enter_data(conn, booking_id, task_key, self.clock())

        try:
            self.sender.send(message, on_data=entering_data)
        except SendUncertain as exc:
            self._finish(claim, sends.UNCERTAIN, str(exc))
            log.warning("send %s/%s uncertain: %s", booking_id, task_key, exc)
            return
        except (RetryableError, PermanentError) as exc:
            state = sends.FAILED if isinstance(exc, PermanentError) else sends.SCHEDULED
            with self.store.transaction() as conn:
                sends.settle(conn, booking_id, task_key, state, now=self.clock(), error=str(exc))
            raise
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        # The row first, in its own commit: if the outbox mark below is fenced out,
        # the next claim finds the send done instead of uncertain.
        with self.store.transaction() as conn:
            sends.settle(conn, booking_id, task_key, sends.SENT, now=self.clock())
            if not self.record.remote:  # the local CRM: recorded in the same commit
                self.record.record(
                    conn, booking_id, task_key, subject=plan.subject, text=text, at=now
                )
        if self.record.remote:
            with self.store.engine.connect() as conn:
                self.record.record(
                    conn, booking_id, task_key, subject=plan.subject, text=text, at=now
                )
        with self.store.transaction() as conn:
            self.store.mark_synced(conn, event.id, claim.token, {"outcome": sends.SENT})
        log.info("mail sent", extra={"booking_id": booking_id, "task_key": task_key})

    def _finish(self, claim: Claim, state: str, error: str) -> None:
        event = claim.event
        with self.store.transaction() as conn:
            sends.settle(
                conn,
                event.payload["bookingId"],
                event.payload["taskKey"],
                state,
                now=self.clock(),
                error=error,
            )
            self.store.mark_synced(conn, event.id, claim.token, {"outcome": state})

    def _decide(
        self,
        conn: Connection,
        event: Event,
        due: datetime,
        plan: SendPlan,
        now: datetime,
        status: str | None,
    ) -> str | None:
        """Why this job sends nothing (settling the row if need be), or ``None`` to send."""
        booking_id, task_key = event.payload["bookingId"], event.payload["taskKey"]
        row = sends.get(conn, booking_id, task_key)
        if row is None:
            return "unknown"
        if row.state == sends.SENDING and row.phase == "data":
            # A sender died after handing the message over: never repeated blindly.
            sends.settle(
                conn,
                booking_id,
                task_key,
                sends.UNCERTAIN,
                now=now,
                error="interrupted after DATA; the server may have accepted it",
            )
            return sends.UNCERTAIN
        if row.state not in (sends.SCHEDULED, sends.SENDING):
            return row.state
        if row.due_at != due:
            return "superseded"
        if status == "done":
            sends.settle(
                conn,
                booking_id,
                task_key,
                sends.SKIPPED,
                now=now,
                error="task completed by hand before its due moment",
            )
            return sends.SKIPPED
        if status == "cancelled":
            sends.settle(conn, booking_id, task_key, sends.DROPPED, now=now, error="task cancelled")
            return sends.DROPPED
        if now - due > timedelta(hours=plan.window_hours):
            sends.settle(
                conn,
                booking_id,
                task_key,
                sends.MISSED,
                now=now,
                error=f"due {due.isoformat()}, more than {plan.window_hours} h ago",
            )
            return sends.MISSED
        return None
