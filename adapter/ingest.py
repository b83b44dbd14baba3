"""Accepting a booking: store it and its outbox row in one transaction.

Used by the webhook route (and later by import-by-id), so every path into the
CRM goes through the same dedupe and the same outbox.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from adapter.booking import Booking
from adapter.mapping import MappingConfig
from adapter.timeutil import SENDER_CLOCK_TOLERANCE, as_utc, iso_z, trusted_stamp
from outbox.store import QUARANTINED, QUEUED, Event, NewEvent, OutboxStore
from outbox.writer import OutboxWriter

log = logging.getLogger(__name__)


def body_hash(raw: Any) -> str:
    """SHA-256 of the body's canonical JSON: key order and spacing do not matter."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def unplaceable_reason(booking: Booking, mapping: MappingConfig) -> str | None:
    """Why the mapping cannot place ``booking``, or ``None`` when it can."""
    if booking.event_type not in mapping.event_types:
        known = ", ".join(sorted(mapping.event_types))
        return f"eventType {booking.event_type!r} is not in the mapping (known: {known})"
    return None


class WebhookIdReused(Exception):
    """A ``webhook-id`` already names a message with a different body; nothing is stored."""

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"webhook-id {webhook_id!r} was already used for a different body")
        self.webhook_id = webhook_id


def new_event(
    store: OutboxStore,
    booking: Booking,
    raw: Any,
    mapping: MappingConfig,
    *,
    webhook_id: str | None = None,
) -> NewEvent:
    """The outbox event for ``booking``: quarantined when the mapping cannot place it."""
    reason = unplaceable_reason(booking, mapping)
    received = store.clock()  # the receipt time the outbox records for the event
    snapshot_at = trusted_stamp(booking.updated_at, received) or received
    if booking.updated_at is not None and snapshot_at != as_utc(booking.updated_at):
        log.warning(
            "booking %s: updatedAt %s is more than %s ahead of its receipt; ordered by "
            "its receipt time instead",
            booking.booking_id,
            iso_z(booking.updated_at),
            SENDER_CLOCK_TOLERANCE,
            extra={"booking_id": booking.booking_id},
        )
    return NewEvent(
        key=booking.booking_id,
        kind=booking.event,
        payload=booking.model_dump(mode="json", by_alias=True, exclude_none=True),
        body_hash=body_hash(raw),
        snapshot_at=snapshot_at,
        webhook_id=webhook_id,
        state=QUARANTINED if reason else QUEUED,
        last_error=reason,
    )


def _refuse_reuse(new: NewEvent, event: Event, created: bool) -> None:
    """``WebhookIdReused`` when a repeat's ``webhook-id`` named a different body (answering
    it with the first booking's ids would silently drop the second)."""
    if (
        not created
        and new.webhook_id is not None
        and event.webhook_id == new.webhook_id
        and event.body_hash != new.body_hash
    ):
        raise WebhookIdReused(new.webhook_id)


def accept_booking(
    store: OutboxStore,
    booking: Booking,
    raw: Any,
    mapping: MappingConfig,
    *,
    webhook_id: str | None = None,
) -> tuple[Event, bool]:
    """Commit the booking as an outbox event; returns (event, whether it is new).

    An authentic booking the mapping cannot place is stored quarantined, never
    dropped. A repeat delivery stores nothing and returns the first event; a
    reused ``webhook_id`` with a different body raises ``WebhookIdReused``.
    """
    new = new_event(store, booking, raw, mapping, webhook_id=webhook_id)
    event, created = store.enqueue_committed(new)
    _refuse_reuse(new, event, created)
    return event, created


async def commit_booking(
    writer: OutboxWriter,
    booking: Booking,
    raw: Any,
    mapping: MappingConfig,
    *,
    webhook_id: str | None = None,
) -> tuple[Event, bool]:
    """``accept_booking`` for an async handler: the single writer commits it, and this
    returns only once it is committed; the caller holds no thread meanwhile."""
    new = new_event(writer.store, booking, raw, mapping, webhook_id=webhook_id)
    event, created = await writer.enqueue(new)
    _refuse_reuse(new, event, created)
    return event, created


class IngestPressure:
    """How many webhooks of this process are between their arrival and their commit.

    The embedded worker's cue to yield (``Worker._yield``). Counted on the
    event loop (the webhook handler is async) and read by worker threads.
    """

    def __init__(self) -> None:
        self._open = 0

    @contextmanager
    def receiving(self) -> Iterator[None]:
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1

    def waiting(self) -> int:
        """How many are received and not yet committed, now."""
        return self._open
