"""Response bodies of the service's own endpoints (the CRM read API has its own)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict

from adapter.booking import Booking, FieldError
from adapter.timeutil import iso_z
from outbox.store import Event

# PostgreSQL text cannot hold NUL (psycopg refuses to send it): an id or a filter
# with one was a 500 there (found by fuzzing). Such values are refused with a 400.
NO_NUL = r"^[^\x00]*$"
RecordId = Annotated[str, Path(pattern=NO_NUL, description="A record's id")]


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


class EventAnswer(BaseModel):
    """The webhook's 200 and 202 (contract §3); a 200 adds the CRM's records."""

    model_config = ConfigDict(extra="allow")

    success: bool
    eventId: str
    status: str


class ErrorBody(BaseModel):
    """A refusal: ``{"error": "..."}``."""

    error: str


class InvalidBody(BaseModel):
    """A 400: ``{"error": "...", "details": [{"field", "message"}, ...]}``."""

    error: str
    details: list[FieldError]


_ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    400: (InvalidBody, "Invalid request: a parameter or the body fails validation"),
    401: (ErrorBody, "Unauthorized: missing or wrong credentials"),
    404: (ErrorBody, "Not found"),
    413: (ErrorBody, "Body over the limit"),
    415: (ErrorBody, "Not JSON"),
    422: (InvalidBody, "The change cannot be made: details name the field and say why"),
    429: (ErrorBody, "Too many wrong credentials from this address; see Retry-After"),
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses a route answers with.

    ``descriptions`` override the default text, keyed ``s404`` and so on.
    """
    return {
        code: {
            "model": _ERRORS[code][0],
            "description": descriptions.get(f"s{code}", _ERRORS[code][1]),
        }
        for code in codes
    }


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
    schema = Booking.model_json_schema(by_alias=True)
    # Nested models (utm, attendees) come as ``#/$defs/...`` refs, which would
    # resolve against the OpenAPI document's root, not this schema: inline them.
    defs = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, defs)}},
        }
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node
