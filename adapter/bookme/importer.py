"""Import a booking from BookMe's API through the webhook's own path into the outbox.

``import_booking`` is the one entry point (the CLI, the API route and the
dashboard call it). The resource becomes the webhook body, is validated by
``parse_booking`` and goes through ``adapter.ingest.accept_booking``: the same
dedupe, the same outbox, quarantine for an event type the mapping cannot place.

An import of a booking that already arrived changes nothing. Its body hash
differs from the webhook's (other field names, other optional fields), so the
outbox's dedupe alone would not see it; before enqueueing, the booking is
compared with the newest snapshot the outbox holds for it:

- same content (``updatedAt``/``createdAt`` aside, and ignoring fields the
  resource does not carry, such as ``timezone``) → nothing is stored; the
  held event is returned with ``new=False``. Re-applying would only move the
  lead's last-activity date and the records' versions.
- a resource ``updatedAt`` not newer than the held snapshot → nothing is
  stored either: the worker would supersede it.
- otherwise a new snapshot is stored (``snapshot_at`` = its ``updatedAt``,
  else now), inheriting the held snapshot's ``timezone`` when the resource has
  none, so dates keep being written in the booking's zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapter.booking import Booking, FieldError, parse_booking
from adapter.bookme.client import BookMeClient
from adapter.bookme.errors import BookMeError, BookMeMalformed, BookMeNotConfigured
from adapter.bookme.resource import to_booking
from adapter.ingest import accept_booking
from adapter.timeutil import as_utc
from outbox.store import PENDING, Event

if TYPE_CHECKING:
    from adapter.services import Services
    from adapter.settings import Settings

__all__ = [
    "ImportOutcome",
    "InvalidBookingId",
    "bookme_client",
    "import_booking",
    "import_resource",
]

MAX_BOOKING_ID = 200
# Not part of "the same snapshot": they only order snapshots (or are not in the resource).
_STAMPS = {"updated_at", "created_at"}
_NOT_IN_RESOURCE = {"timezone", "cancellation_reason", "answers", "utm", "locale", "attendees"}


class InvalidBookingId(BookMeError):
    """The booking id asked for cannot be a BookMe booking id (blank or too long)."""

    status_code = 400


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did: the booking's outbox event, and whether it is new.

    ``new`` is ``False`` when the outbox already held the same snapshot (or a
    newer one); ``state`` is that event's outbox state (``queued``,
    ``synced``, ``quarantined``…); ``event`` its kind (``booking.cancelled``…).
    """

    booking_id: str
    event_id: str
    new: bool
    state: str
    event: str


def bookme_client(settings: Settings) -> BookMeClient:
    """A client for ``BOOKME_API_URL``; ``BookMeNotConfigured`` when it is not set."""
    if settings.bookme_api_url is None:
        raise BookMeNotConfigured(
            "the BookMe API is not configured: set BOOKME_API_URL (and BOOKME_API_TOKEN)"
        )
    token = settings.bookme_api_token
    return BookMeClient(
        settings.bookme_api_url, token.get_secret_value() if token is not None else None
    )


def import_booking(services: Services, booking_id: str) -> ImportOutcome:
    """Fetch ``booking_id`` from BookMe and accept it like a webhook delivery.

    Raises a ``BookMeError`` (``.message`` for the user) and stores nothing when
    the id is invalid, BookMe is not configured, fails, has no such booking, or
    answers with a malformed resource.
    """
    wanted = booking_id.strip()
    if not wanted or len(wanted) > MAX_BOOKING_ID:
        raise InvalidBookingId(f"a booking id is 1–{MAX_BOOKING_ID} characters")
    with bookme_client(services.settings) as client:
        resource = client.get_booking(wanted)
    return import_resource(services, resource, expected_id=wanted)


def import_resource(
    services: Services, resource: Any, *, expected_id: str | None = None
) -> ImportOutcome:
    """Accept one BookMe resource (already fetched); see the module docstring."""
    booking, body = to_booking(resource)
    if expected_id is not None and booking.booking_id != expected_id:
        message = f"is {booking.booking_id!r}, not the booking asked for ({expected_id!r})"
        raise BookMeMalformed(
            f"BookMe's booking {expected_id!r} is malformed: id: {message}",
            [FieldError(field="id", message=message)],
        )
    held = services.store.newest_for_key(booking.booking_id)
    if held is not None and _already_held(booking, held):
        return _outcome(held, new=False)
    if held is not None and "timezone" not in body and "timezone" in held.payload:
        body = {**body, "timezone": held.payload["timezone"]}
        booking = parse_booking(body)
    event, new = accept_booking(services.store, booking, body, services.mappings.current)
    if new and event.state in PENDING:
        services.wake_workers()
    return _outcome(event, new=new)


def _already_held(booking: Booking, held: Event) -> bool:
    if booking.updated_at is not None and as_utc(booking.updated_at) <= held.snapshot_at:
        return True
    return same_snapshot(booking, parse_booking(held.payload))


def same_snapshot(imported: Booking, held: Booking) -> bool:
    """Whether applying ``imported`` after ``held`` would leave the CRM as it is."""
    ours = imported.model_dump(exclude_none=True)
    theirs = held.model_dump(exclude_none=True)
    for name in ours.keys() | theirs.keys():
        if name in _STAMPS or (name in _NOT_IN_RESOURCE and name not in ours):
            continue
        if ours.get(name) != theirs.get(name):
            return False
    return True


def _outcome(event: Event, *, new: bool) -> ImportOutcome:
    return ImportOutcome(
        booking_id=event.key, event_id=event.id, new=new, state=event.state, event=event.kind
    )
