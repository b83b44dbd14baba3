"""BookMe's booking resource (its API) turned into the webhook body (contract §3).

The two shapes differ in names only, plus the lifecycle: the resource has
``id``, ``scheduledStart`` and a ``status``; the webhook has ``bookingId``,
``scheduledDate``, ``source`` and an ``event``. The body is validated by the
webhook's own ``parse_booking``, and its field errors are reported under the
resource's names, so a malformed resource reads like BookMe's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapter.booking import Booking, BookingEvent, FieldError, parse_booking, validation_details
from adapter.bookme.errors import BookMeMalformed

__all__ = ["STATUS_EVENTS", "to_booking", "webhook_body"]

# BookMe's status → the webhook's event; absent status means a live, created booking.
STATUS_EVENTS: dict[str, BookingEvent] = {
    "created": "booking.created",
    "confirmed": "booking.created",
    "scheduled": "booking.created",
    "booked": "booking.created",
    "rescheduled": "booking.rescheduled",
    "updated": "booking.updated",
    "cancelled": "booking.cancelled",
    "canceled": "booking.cancelled",
    "no_show": "booking.no_show",
    "noshow": "booking.no_show",
}
_RENAMED = {"id": "bookingId", "scheduledStart": "scheduledDate"}
_WIRE_TO_RESOURCE = {wire: name for name, wire in _RENAMED.items()}
# Fields with the same name in both shapes; timezone, cancellationReason and the
# booking-form extensions (answers, utm, locale, attendees) are not in BookMe's
# documented resource, but are taken when it has them.
_SAME = (
    "eventType",
    "name",
    "email",
    "phone",
    "company",
    "duration",
    "meetingUrl",
    "notes",
    "createdAt",
    "updatedAt",
    "timezone",
    "cancellationReason",
    "answers",
    "utm",
    "locale",
    "attendees",
)


def _event(status: Any) -> BookingEvent | None:
    if status is None:
        return "booking.created"
    if not isinstance(status, str):
        return None
    key = status.strip().lower().removeprefix("booking.").replace("-", "_").replace(" ", "_")
    return STATUS_EVENTS.get(key)


def webhook_body(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook body BookMe would have posted for ``resource`` (not yet validated).

    An unknown ``status`` is left out of the body; ``to_booking`` reports it.
    """
    body: dict[str, Any] = {"source": "bookme"}
    for name, wire in _RENAMED.items():
        if name in resource:
            body[wire] = resource[name]
    booking_id = body.get("bookingId")
    if isinstance(booking_id, int) and not isinstance(booking_id, bool):
        body["bookingId"] = str(booking_id)  # a numeric id is still the same booking
    for name in _SAME:
        if resource.get(name) is not None:
            body[name] = resource[name]
    event = _event(resource.get("status"))
    if event is not None:
        body["event"] = event
    return body


def to_booking(resource: Any) -> tuple[Booking, dict[str, Any]]:
    """Validate ``resource`` as a booking; returns it and its webhook body.

    Raises ``BookMeMalformed`` naming every bad field by the resource's names.
    """
    if not isinstance(resource, Mapping):
        raise BookMeMalformed(
            "BookMe's booking is malformed: body: must be a JSON object",
            [FieldError(field="body", message="must be a JSON object")],
        )
    body = webhook_body(resource)
    details: list[FieldError] = []
    if _event(resource.get("status")) is None:
        known = ", ".join(sorted(STATUS_EVENTS))
        details.append(
            FieldError(
                field="status", message=f"unknown status {resource.get('status')!r} ({known})"
            )
        )
    booking: Booking | None = None
    try:
        booking = parse_booking(body)
    except ValidationError as exc:
        for detail in validation_details(exc):
            head, _, rest = detail.field.partition(".")
            field = _WIRE_TO_RESOURCE.get(head, head) + (f".{rest}" if rest else "")
            details.append(FieldError(field=field, message=detail.message))
    if details or booking is None:
        label = f" {resource['id']!r}" if isinstance(resource.get("id"), str | int) else ""
        listed = "; ".join(f"{d.field}: {d.message}" for d in details)
        raise BookMeMalformed(f"BookMe's booking{label} is malformed: {listed}", details)
    return booking, body
