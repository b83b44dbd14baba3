"""The two answers to an ``uncertain`` (or ``failed``) send, one click each on the dashboard:
send it again (a new job, the same ``Message-ID``), or mark it sent (recorded as sent)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime

from adapter.notify import store as sends
from adapter.notify.jobs import SEND_KIND, send_key
from adapter.notify.record import MailRecord
from adapter.timeutil import utcnow
from outbox.store import NewEvent, OutboxStore

RESENDABLE = (sends.UNCERTAIN, sends.FAILED)


class SendNotFound(LookupError):
    """No send of that booking and task, or none in a state the action applies to."""


def send_again(
    store: OutboxStore,
    booking_id: str,
    task_key: str,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Schedule the send for now, as a new job built from its last one; ``SendNotFound``
    unless it is uncertain or failed (a person decided the recipient should get it)."""
    now = clock()
    last = store.newest_for_key(send_key(booking_id, task_key))
    if last is None:
        raise SendNotFound(f"{booking_id}/{task_key}")
    with store.transaction() as conn:
        row = sends.get(conn, booking_id, task_key)
        if row is None or row.state not in RESENDABLE:
            raise SendNotFound(f"{booking_id}/{task_key}")
        sends.settle(conn, booking_id, task_key, sends.SCHEDULED, now=now, only_from=RESENDABLE)
        conn.execute(
            sends.sends.update()
            .where(sends.sends.c.booking_id == booking_id, sends.sends.c.task_key == task_key)
            .values(due_at=now)
        )
        job = {**last.payload, "due": now.isoformat()}
        body = json.dumps(job, sort_keys=True, separators=(",", ":"))
        store.enqueue(
            conn,
            NewEvent(
                key=send_key(booking_id, task_key),
                kind=SEND_KIND,
                payload=job,
                body_hash=hashlib.sha256(body.encode()).hexdigest(),
                snapshot_at=max(now, last.snapshot_at),
                not_before=now,
            ),
        )


def mark_sent(
    store: OutboxStore,
    record: MailRecord,
    booking_id: str,
    task_key: str,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Record an uncertain send as sent (a person checked the recipient got it)."""
    now = clock()
    with store.transaction() as conn:
        row = sends.get(conn, booking_id, task_key)
        if row is None or row.state != sends.UNCERTAIN:
            raise SendNotFound(f"{booking_id}/{task_key}")
        sends.settle(conn, booking_id, task_key, sends.SENT, now=now, only_from=(sends.UNCERTAIN,))
        record.record(
            conn, booking_id, task_key, subject=row.subject, text="(marked sent by hand)", at=now
        )
