"""BookMe's booking API: fetch bookings by id or page by page, and import them.

``client`` talks HTTP, ``resource`` turns BookMe's resource into the webhook
body, ``importer`` accepts it through the webhook's outbox path, ``backfill``
pages through the list resumably (its position in ``store``). Errors:
``errors``.
"""

from adapter.bookme.client import BookingPage, BookMeClient
from adapter.bookme.errors import (
    BookMeError,
    BookMeMalformed,
    BookMeNotConfigured,
    BookMeNotFound,
    BookMeRejected,
    BookMeUnavailable,
)
from adapter.bookme.importer import ImportOutcome, InvalidBookingId, import_booking

__all__ = [
    "BookMeClient",
    "BookMeError",
    "BookMeMalformed",
    "BookMeNotConfigured",
    "BookMeNotFound",
    "BookMeRejected",
    "BookMeUnavailable",
    "BookingPage",
    "ImportOutcome",
    "InvalidBookingId",
    "import_booking",
]
