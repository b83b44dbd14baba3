"""The one error tree of the adapter.

Retryable versus permanent is a type, decided where a vendor error is
translated; the worker picks retry or dead-letter by type alone::

    AdapterError
    ├── RetryableError          transient: retry with backoff (retry_after when the CRM said)
    │   ├── RateLimitedError    the CRM asked us to slow down
    │   └── PausedError         the CRM refuses every call until ``until``: wait, count no attempt
    ├── PermanentError          retrying cannot help: dead-letter with the reason
    │   └── CrmValidationError  the CRM refused the data (its message kept)
    └── MappingError            the mapping cannot place this booking: quarantine
        └── MappingFileError    the mapping file itself is invalid (file, line, key)
"""

from __future__ import annotations

from datetime import datetime


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""


class RetryableError(AdapterError):
    """A transient failure: the same work may succeed later; ``retry_after`` seconds at
    the soonest, when the CRM said so."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """The CRM refused for rate; ``retry_after`` seconds is its hint, if any."""


class PausedError(RetryableError):
    """The CRM refuses every call until ``until`` (a migration, a spent daily limit).

    Not a failure of the event: the worker puts it back for ``until`` without
    counting the attempt, however long the pause.
    """

    def __init__(self, message: str, *, until: datetime, reason: str) -> None:
        super().__init__(message, retry_after=None)
        self.until = until
        self.reason = reason


class PermanentError(AdapterError):
    """A failure that retrying cannot fix; the event is dead-lettered."""


class CrmValidationError(PermanentError):
    """The CRM rejected the data as invalid."""


class MappingError(AdapterError):
    """The mapping cannot place a booking (e.g. unknown eventType); it is quarantined."""


class MappingFileError(MappingError):
    """A mapping file failed to load or validate; the message names file, line and key."""
