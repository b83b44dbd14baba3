"""Response bodies of the service's own endpoints (the CRM read API has its own)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from adapter.booking import Booking
from adapter.timeutil import iso_z
from outbox.store import Event


class EventStatus(BaseModel):
    """``GET /api/bookings/events/{eventId}`` (contract §3)."""

    eventId: str
    bookingId: str
    status: str
    attempts: int
    lastError: str | None
    receivedAt: str
    syncedAt: str | None
    result: dict[str, Any] | None


def event_status(event: Event) -> EventStatus:
    return EventStatus(
        eventId=event.id,
        bookingId=event.key,
        status=event.state,
        attempts=event.attempts,
        lastError=event.last_error,
        receivedAt=iso_z(event.received_at) or "",
        syncedAt=iso_z(event.synced_at),
        result=event.result,
    )


def booking_request_schema() -> dict[str, Any]:
    """OpenAPI request body for the webhook; the route reads the raw bytes itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": Booking.model_json_schema(by_alias=True)}},
        }
    }
