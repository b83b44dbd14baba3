"""A HubSpot webhook delivery as an outbox job (``hubspot.delivery``): stored at once, read
back by a worker.

Why the outbox and not a background thread: HubSpot waits a few seconds at most
and retries a slow or failed delivery, so the request only verifies, stores and
answers 200. The read back (a batch read with history per object type, within
the shared request budget) may then wait for the budget, a HubSpot pause or a
retry after a 5xx, and survive a restart: what the outbox gives every job. A
retried delivery with the same events is the same job (its hash is its key), and
a change it shares with the poll is one change (``adapter.changes`` dedupes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from adapter.backends.hubspot.client import LAST_MODIFIED, HubSpotApi
from adapter.errors import RetryableError
from adapter.hubspot_sync import DELIVERY_KIND
from adapter.hubspot_sync.events import ChangeEvent, delivery_hash
from adapter.hubspot_sync.poll import count_changes, from_ms, modified_at
from adapter.hubspot_sync.reading import TRACKED
from adapter.hubspot_sync.record import NOTES, Tally, normaliser, record_objects, written
from adapter.metrics import Metrics
from adapter.timeutil import utcnow
from outbox.store import Claim, NewEvent, OutboxStore

log = logging.getLogger(__name__)


def delivery_job(events: Sequence[ChangeEvent], ignored: int, now: datetime) -> NewEvent:
    """The outbox job for a delivery's events (keyed by their hash: a retry is a repeat)."""
    digest = delivery_hash(events)
    return NewEvent(
        key=f"hubspot-delivery:{digest[:40]}",
        kind=DELIVERY_KIND,
        payload={"events": [event.as_json() for event in events], "ignored": ignored},
        body_hash=digest,
        snapshot_at=now,
    )


class DeliveryHandler:
    """Handles ``hubspot.delivery`` jobs: read the named objects back, record as a poll does."""

    def __init__(
        self,
        api: HubSpotApi,
        store: OutboxStore,
        deal_stages: Callable[[], Mapping[str, str]],
        *,
        lag_seconds: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.store = store
        # Reads need no write lock (SQLite begins IMMEDIATE by default).
        self._reader = store.engine.execution_options(sqlite_begin="DEFERRED")
        self.deal_stages = deal_stages
        self.lag = timedelta(seconds=lag_seconds)
        self.clock = clock

    def handle(self, claim: Claim) -> None:
        events = [ChangeEvent.from_json(item) for item in claim.event.payload.get("events", [])]
        earliest: dict[str, dict[str, int]] = {}
        for event in events:
            ids = earliest.setdefault(event.object_type, {})
            ids[event.object_id] = min(
                ids.get(event.object_id, event.occurred_at_ms), event.occurred_at_ms
            )
        # Read before the write transaction: HubSpot is never awaited holding the database.
        # Only objects the service wrote are read (others are not ours to watch).
        reads = {}
        for object_type, ids in earliest.items():
            tracked = TRACKED[object_type]
            with self._reader.connect() as conn:
                ours = [i for i in sorted(ids) if written(conn, tracked.object_type, i) is not None]
            if not ours:
                continue
            extra = [NOTES] if tracked.object_type == "meeting" else []
            reads[object_type] = self.api.read_with_history(
                object_type, ours, [*tracked.properties, *extra, LAST_MODIFIED], tracked.properties
            )
        normalise_value = normaliser(self.deal_stages())
        tally = Tally()
        now = self.clock()
        try:
            with self.store.transaction() as conn:
                for object_type, objects in reads.items():
                    since = from_ms(min(earliest[object_type].values())) - self.lag
                    tally.add(
                        record_objects(
                            conn,
                            TRACKED[object_type],
                            objects,
                            since=since,
                            modified=lambda found: modified_at(found, now),
                            source="webhook",
                            normalise_value=normalise_value,
                            store=self.store,
                            now=now,
                        )
                    )
                self.store.mark_synced(
                    conn,
                    claim.event.id,
                    claim.token,
                    {
                        "read": tally.read,
                        "changes": tally.changes,
                        "pushes": tally.pushes,
                        "superseded": tally.superseded,
                    },
                )
        except IntegrityError as exc:  # the poll recorded one of these changes meanwhile
            raise RetryableError("a change of this delivery was recorded concurrently") from exc
        if self.metrics is not None:
            count_changes(self.metrics, "webhook", tally)
        log.info(
            "HubSpot delivery %s: %d event(s), %d object(s) read, %d change(s)",
            claim.event.id,
            len(events),
            tally.read,
            tally.changes,
        )
