"""A HubSpot app webhook delivery: the property changes it names, checked field by field.

HubSpot POSTs a JSON array of up to 100 events. Each has ``eventId``,
``subscriptionId``, ``portalId``, ``appId``, ``occurredAt`` (epoch ms),
``subscriptionType``, ``attemptNumber``, ``objectId``, ``changeSource``, and for a
property change ``propertyName`` and ``propertyValue`` (and, HubSpot's payloads
show, ``sourceId``). Deals come as the classic ``deal.propertyChange`` or the
generic ``object.propertyChange`` with ``objectTypeId`` ``0-3``; meetings
(``0-47``) and tasks (``0-27``) only in the generic form. An event carries one
property's new value and no history, so the objects it names are read back
(``adapter.hubspot_sync.reading``) rather than trusted as they are; events of
other kinds or other objects are ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MAX_EVENTS = 100
"""HubSpot sends at most 100 events per request."""
TYPE_IDS = {"0-47": "meetings", "0-27": "tasks", "0-3": "deals"}
LEGACY = {"deal.propertyChange": "deals"}


class DeliveryInvalid(ValueError):
    """A signed delivery that is not HubSpot's shape: ``details`` are (field, reason)."""

    def __init__(self, details: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in details))
        self.details = details


@dataclass(frozen=True)
class ChangeEvent:
    """One property change HubSpot reported, on an object type this service watches."""

    object_type: str  # meetings | tasks | deals
    object_id: str
    property_name: str | None
    occurred_at_ms: int
    change_source: str | None
    source_id: str | None
    event_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "objectType": self.object_type,
            "objectId": self.object_id,
            "propertyName": self.property_name,
            "occurredAt": self.occurred_at_ms,
            "changeSource": self.change_source,
            "sourceId": self.source_id,
            "eventId": self.event_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChangeEvent:
        return cls(
            object_type=str(data["objectType"]),
            object_id=str(data["objectId"]),
            property_name=data.get("propertyName"),
            occurred_at_ms=int(data["occurredAt"]),
            change_source=data.get("changeSource"),
            source_id=data.get("sourceId"),
            event_id=str(data["eventId"]),
        )


def _object_type(item: dict[str, Any]) -> str | None:
    kind = item.get("subscriptionType")
    if kind in LEGACY:
        return LEGACY[kind]
    if kind == "object.propertyChange":
        return TYPE_IDS.get(str(item.get("objectTypeId")))
    return None


def _int(item: dict[str, Any], name: str, at: str, problems: list[tuple[str, str]]) -> int | None:
    value = item.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        problems.append((f"{at}.{name}", "is required and must be a whole number"))
        return None
    return int(value)


def parse_delivery(raw: Any) -> tuple[list[ChangeEvent], int]:
    """The property changes on meetings, tasks and deals in a delivery, and how many
    other events it held (ignored). Raises ``DeliveryInvalid`` naming each bad field."""
    if not isinstance(raw, list):
        raise DeliveryInvalid([("body", "must be a JSON array of events")])
    if len(raw) > MAX_EVENTS:
        raise DeliveryInvalid(
            [("body", f"holds {len(raw)} events; HubSpot sends {MAX_EVENTS} at most")]
        )
    problems: list[tuple[str, str]] = []
    events: list[ChangeEvent] = []
    ignored = 0
    for index, item in enumerate(raw):
        at = f"[{index}]"
        if not isinstance(item, dict):
            problems.append((at, "must be an object"))
            continue
        if not isinstance(item.get("subscriptionType"), str):
            problems.append((f"{at}.subscriptionType", "is required and must be a string"))
            continue
        object_id = _int(item, "objectId", at, problems)
        occurred = _int(item, "occurredAt", at, problems)
        object_type = _object_type(item)
        if object_id is None or occurred is None:
            continue
        if object_type is None:
            ignored += 1
            continue
        name = item.get("propertyName")
        events.append(
            ChangeEvent(
                object_type=object_type,
                object_id=str(object_id),
                property_name=str(name) if name is not None else None,
                occurred_at_ms=occurred,
                change_source=_text(item.get("changeSource")),
                source_id=_text(item.get("sourceId")),
                event_id=str(item.get("eventId", "")),
            )
        )
    if problems:
        raise DeliveryInvalid(problems)
    return events, ignored


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:200]


def delivery_hash(events: Sequence[ChangeEvent]) -> str:
    """The same events hash alike whatever the attempt (HubSpot retries raise ``attemptNumber``)."""
    canonical = json.dumps(
        sorted((e.as_json() for e in events), key=lambda e: json.dumps(e, sort_keys=True)),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
