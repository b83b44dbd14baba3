"""What can go wrong when asking BookMe for a booking, each with a message fit for a user::

    BookMeError                 base; ``.message`` is what to show
    ├── BookMeNotConfigured     BOOKME_API_URL is not set
    ├── BookMeNotFound          BookMe has no such booking (404)
    ├── BookMeRejected          BookMe refused the request (401/403: the token; other 4xx)
    │   └── BookMeRefused       a push refused on its merits (409/422): ``.reason`` is BookMe's
    ├── BookMeUnavailable       5xx, 429, timeouts, connection errors — after the retries
    └── BookMeMalformed         the answer is not a booking resource (``.details``: per field)

Nothing is stored when one of these is raised by a read. A push
(``adapter.bookme.push``) that raises ``BookMeUnavailable`` may or may not have
reached BookMe: it is repeated with the same ``Idempotency-Key``.
"""

from __future__ import annotations

from adapter.booking import FieldError


class BookMeError(Exception):
    """Base of every BookMe API failure; ``message`` is suitable for a user.

    ``status_code`` is what our own HTTP answer says of it (the import route and
    the dashboard's form): BookMe failing is a bad gateway unless said otherwise.
    """

    status_code = 502

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BookMeNotConfigured(BookMeError):
    """The BookMe API is not configured (no ``BOOKME_API_URL``)."""

    status_code = 503


class BookMeNotFound(BookMeError):
    """BookMe answered 404 for the booking."""

    status_code = 404


class BookMeRejected(BookMeError):
    """BookMe refused the request with a 4xx other than 404 and 429; retrying cannot help."""


class BookMeRefused(BookMeRejected):
    """BookMe refused a reschedule or cancellation (409/422: the slot is taken, the
    booking is cancelled…); ``reason`` is BookMe's own message, ``status`` its code."""

    def __init__(self, message: str, *, reason: str, status: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


class BookMeUnavailable(BookMeError):
    """BookMe could not answer (5xx, 429, timeout, no connection), even after retries."""


class BookMeMalformed(BookMeError):
    """BookMe's answer is not a valid booking resource (or page); ``details`` name the fields."""

    def __init__(self, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.details = details or []
