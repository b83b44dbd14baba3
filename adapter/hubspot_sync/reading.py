"""What a HubSpot object read back with its property history says changed (pure, no I/O).

An object is read with ``propertiesWithHistory`` for the properties behind the
tracked fields (meeting start, duration, outcome; deal stage; task status).
From it come:

- each field's current value, normalised, with the moment it took that value
  (the newest history entry of its properties: the same instant whether the
  change is seen by the poll or after a webhook, so both make one dedupe key)
  and who set it (``sourceId``, e.g. ``userId:123``);
- values someone else set since ``since`` that a later write of this service
  replaced before we saw them (``Overwritten``): BookMe's newer snapshot won,
  and the CRM-side change is recorded as ``superseded`` instead of being lost.

This service's own writes are recognised by their source: the history entries
of values it wrote carry one ``sourceType:sourceId`` (an app's writes are
``INTEGRATION`` with the app's id), learned from the first value read back that
equals what it wrote (``learned``). A current value whose newest entry is ours
is our own write, even if its settle has not committed yet: never a change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from adapter.backends.hubspot.client import Found, Revision

Normalise = Callable[[str, str | None], str | None]
"""(field, raw HubSpot value or minutes) -> the normalised value ``adapter.changes`` keeps."""

AUTOMATED = frozenset({"INTEGRATION", "API"})
"""Source types of apps and API keys (ours among them); everything else is a person,
an import, a workflow..."""


@dataclass(frozen=True)
class Field:
    """A tracked field of ``adapter.changes`` and the HubSpot properties it is read from."""

    name: str
    properties: tuple[str, ...]

    def raw(self, values: Mapping[str, str | None]) -> str | None:
        """The field's HubSpot value from its properties' values (duration: minutes)."""
        if self.name != "duration":
            return values.get(self.properties[0]) or None
        start, end = (_instant(values.get(name)) for name in self.properties)
        if start is None or end is None:
            return None
        return str(round((end - start).total_seconds() / 60))


@dataclass(frozen=True)
class Tracked:
    """An object type this service creates in HubSpot, and what is watched on it."""

    object_type: str  # adapter.changes' name: meeting | task | deal
    hubspot_type: str  # meetings | tasks | deals
    key_property: str  # the bookme_* property every object we made carries
    fields: tuple[Field, ...]

    @property
    def properties(self) -> list[str]:
        return sorted({name for field in self.fields for name in field.properties})


START, END = "hs_meeting_start_time", "hs_meeting_end_time"
TRACKED: dict[str, Tracked] = {
    "meetings": Tracked(
        "meeting",
        "meetings",
        "bookme_booking_id",
        (
            Field("start", (START,)),
            Field("duration", (START, END)),
            Field("outcome", ("hs_meeting_outcome",)),
        ),
    ),
    "tasks": Tracked("task", "tasks", "bookme_task_key", (Field("status", ("hs_task_status",)),)),
    "deals": Tracked("deal", "deals", "bookme_lead_key", (Field("stage", ("dealstage",)),)),
}


@dataclass(frozen=True)
class Current:
    """A field's value now, when it took it, and who set it."""

    field: str
    value: str | None
    changed_at: datetime
    actor: str | None
    ours: bool  # set by this service's own write


@dataclass(frozen=True)
class Overwritten:
    """A value someone else set after ``since``, replaced by a later write of ours."""

    field: str
    value: str | None
    changed_at: datetime
    actor: str | None
    replaced_by: str | None


@dataclass(frozen=True)
class Reading:
    current: list[Current]
    overwritten: list[Overwritten]
    learned: str | None  # our source, when this object revealed it


def source_of(revision: Revision) -> str:
    return f"{revision.source_type}:{revision.source_id or ''}"


def read_object(
    found: Found,
    tracked: Tracked,
    normalise: Normalise,
    *,
    written: Mapping[str, str | None],
    own: str | None,
    since: datetime,
    modified_at: datetime,
) -> Reading:
    """What ``found`` says about each tracked field (see the module docstring).

    ``written``: the normalised values this service last wrote; ``own``: its learned
    source; ``modified_at``: the object's ``hs_lastmodifieddate``, the change time of a
    value without history.
    """
    current: list[Current] = []
    overwritten: list[Overwritten] = []
    learned: str | None = None
    for field in tracked.fields:
        value = normalise(field.name, field.raw(found.properties))
        newest = _newest(found, field.properties)
        changed_at = newest.timestamp if newest is not None else modified_at
        actor = newest.source_id if newest is not None else None
        wrote = field.name in written and written[field.name] == value
        if (
            wrote
            and newest is not None
            and newest.source_type in AUTOMATED
            and newest.source_id  # a source without an id would take in other apps too
            and own is None
            and learned is None
        ):
            learned = source_of(newest)
        known = own or learned
        ours = newest is not None and known is not None and source_of(newest) == known
        current.append(Current(field.name, value, changed_at, actor, ours))
        if (
            not wrote
            or newest is None
            or not (ours or (known is None and newest.source_type in AUTOMATED))
        ):
            continue
        # Our write holds the field now: what did others set in between that it replaced?
        for revision in _others(found, field.properties, known, since, changed_at):
            values = {name: _value_at(found, name, revision.timestamp) for name in field.properties}
            before = normalise(field.name, field.raw(values))
            if before != value and before != written.get(field.name):
                overwritten.append(
                    Overwritten(field.name, before, revision.timestamp, revision.source_id, value)
                )
    return Reading(current, overwritten, learned)


def _newest(found: Found, properties: Sequence[str]) -> Revision | None:
    entries = [found.history[name][0] for name in properties if found.history.get(name)]
    return max(entries, key=lambda revision: revision.timestamp) if entries else None


def _others(
    found: Found, properties: Sequence[str], own: str | None, since: datetime, before: datetime
) -> list[Revision]:
    """Entries of ``properties`` made by someone else in [``since``, ``before``), one per
    instant, oldest first. Without our source known, only people's (non-app) entries."""
    chosen: dict[datetime, Revision] = {}
    for name in properties:
        for revision in found.history.get(name, ()):
            if not since <= revision.timestamp < before:
                continue
            if own is not None and source_of(revision) == own:
                continue
            if own is None and revision.source_type in AUTOMATED:
                continue
            chosen.setdefault(revision.timestamp, revision)
    return [chosen[at] for at in sorted(chosen)]


def _value_at(found: Found, name: str, at: datetime) -> str | None:
    """``name``'s value right after ``at`` (its newest entry not later than ``at``)."""
    for revision in found.history.get(name, ()):  # newest first
        if revision.timestamp <= at:
            return revision.value or None
    return None


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.strip()
    try:
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text) / 1000, UTC)
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
