"""Objects read back from HubSpot, handed to ``adapter.changes``: the one path the poll
and the webhook deliveries share, so a change seen by both is one change."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from adapter.backends.hubspot.client import Found
from adapter.changes import normalise, observe, route, set_state
from adapter.changes.store import SUPERSEDED, Change, crm_field_state
from adapter.hubspot_sync import store as poll_store
from adapter.hubspot_sync.reading import Normalise, Tracked, read_object
from outbox.store import OutboxStore

log = logging.getLogger(__name__)

NOTES = "hs_internal_meeting_notes"
"""What a salesperson typed when cancelling: the reason BookMe is told."""


@dataclass
class Tally:
    """What one read (a poll page, a delivery) did."""

    read: int = 0
    changes: int = 0
    pushes: int = 0
    superseded: int = 0

    def add(self, other: Tally) -> None:
        self.read += other.read
        self.changes += other.changes
        self.pushes += other.pushes
        self.superseded += other.superseded


def normaliser(deal_stages: Mapping[str, str]) -> Normalise:
    """``adapter.changes.normalise`` with the mapping's deal stages; a value it cannot read
    is kept as HubSpot shows it (it is still what the CRM holds)."""

    def read(field: str, raw: str | None) -> str | None:
        try:
            return normalise(field, raw, deal_stages=deal_stages)
        except ValueError:
            return raw

    return read


def written(conn: Connection, object_type: str, crm_id: str) -> dict[str, str | None] | None:
    """The values the service last wrote to the object; ``None``: not an object of ours."""
    row = conn.execute(
        select(crm_field_state.c.written).where(
            (crm_field_state.c.object_type == object_type) & (crm_field_state.c.crm_id == crm_id)
        )
    ).first()
    if row is None:
        return None
    values: dict[str, str | None] = json.loads(row.written)
    return values


def record_objects(
    conn: Connection,
    tracked: Tracked,
    objects: Mapping[str, Found],
    *,
    since: datetime,
    modified: Callable[[Found], datetime],
    source: str,
    normalise_value: Normalise,
    store: OutboxStore,
    now: datetime,
) -> Tally:
    """Observe each object on ``conn`` (the caller's transaction): record what changed,
    route it (a moved or cancelled meeting queues its push to BookMe), and record values
    others set since ``since`` that a later write of ours replaced as ``superseded``."""
    tally = Tally()
    own = poll_store.own_source(conn)
    for crm_id, found in objects.items():
        mine = written(conn, tracked.object_type, crm_id)
        if mine is None:
            continue  # not an object this service wrote (or not since changes are kept)
        tally.read += 1
        reading = read_object(
            found,
            tracked,
            normalise_value,
            written=mine,
            own=own,
            since=since,
            modified_at=modified(found),
        )
        if reading.learned is not None and own is None:
            own = reading.learned
            poll_store.learn_source(conn, own, now)
            log.info("HubSpot source of this service's own writes: %s", own)
        for lost in reading.overwritten:
            for change in observe(
                conn,
                tracked.object_type,
                crm_id,
                {lost.field: lost.value},
                changed_at=lost.changed_at,
                source=source,
                actor=lost.actor,
                now=now,
            ):
                set_state(
                    conn,
                    change.id,
                    SUPERSEDED,
                    detail=f"BookMe's newer snapshot won: {lost.field} is {lost.replaced_by}",
                )
                tally.superseded += 1
                _log(change, "superseded")
        by_moment: dict[tuple[datetime, str | None], dict[str, str | None]] = {}
        for seen in reading.current:
            if seen.ours:
                continue  # our own write (its settle may still be on its way)
            by_moment.setdefault((seen.changed_at, seen.actor), {})[seen.field] = seen.value
        recorded: list[Change] = []
        for (changed_at, actor), values in sorted(by_moment.items(), key=lambda item: item[0][0]):
            recorded += observe(
                conn,
                tracked.object_type,
                crm_id,
                values,
                changed_at=changed_at,
                source=source,
                actor=actor,
                now=now,
            )
        if recorded:
            notes = found.properties.get(NOTES) if tracked.object_type == "meeting" else None
            pending = route(conn, recorded, store=store, now=now, reason=notes or None)
            tally.changes += len(recorded)
            tally.pushes += len({change.push_event_id for change in pending})
            for change in recorded:
                _log(change, "recorded")
    return tally


def _log(change: Change, what: str) -> None:
    log.info(
        "change in HubSpot %s: %s %s %s: %s -> %s (by %s)",
        what,
        change.object_type,
        change.crm_id,
        change.field,
        change.old_value,
        change.new_value,
        change.actor or "unknown",
        extra={"booking_id": change.booking_id, "change_id": change.id},
    )
