"""BookMe's booking API: fetch bookings by id or page by page, and import them.

``client`` talks HTTP, ``resource`` turns BookMe's resource into the webhook
body, ``importer`` accepts it through the webhook's outbox path, ``backfill``
pages through the list resumably (its position in ``store``); ``push`` sends
changes made in the CRM back (reschedule, cancel). Errors: ``errors``.
"""

from adapter.bookme.client import BookingPage, BookMeClient
from adapter.bookme.errors import (
    BookMeError,
    BookMeMalformed,
    BookMeNotConfigured,
    BookMeNotFound,
    BookMeRefused,
    BookMeRejected,
    BookMeUnavailable,
)
from adapter.bookme.importer import ImportOutcome, InvalidBookingId, import_booking
from adapter.bookme.push import BookMePusher

__all__ = [
    "BookMeClient",
    "BookMeError",
    "BookMeMalformed",
    "BookMeNotConfigured",
    "BookMeNotFound",
    "BookMePusher",
    "BookMeRefused",
    "BookMeRejected",
    "BookMeUnavailable",
    "BookingPage",
    "ImportOutcome",
    "InvalidBookingId",
    "import_booking",
]
