"""The one error tree of the adapter.

Retryable versus permanent is a type, decided where a vendor error is
translated; the worker picks retry or dead-letter by type alone::

    AdapterError
    ├── RetryableError          transient: retry with backoff
    │   └── RateLimitedError    the CRM asked us to slow down (carries retry_after)
    ├── PermanentError          retrying cannot help: dead-letter with the reason
    │   └── CrmValidationError  the CRM refused the data (its message kept)
    └── MappingError            the mapping cannot place this booking: quarantine
        └── MappingFileError    the mapping file itself is invalid (file, line, key)
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""


class RetryableError(AdapterError):
    """A transient failure: the same work may succeed later."""


class RateLimitedError(RetryableError):
    """The CRM refused for rate; ``retry_after`` seconds is its hint, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(AdapterError):
    """A failure that retrying cannot fix; the event is dead-lettered."""


class CrmValidationError(PermanentError):
    """The CRM rejected the data as invalid."""


class MappingError(AdapterError):
    """The mapping cannot place a booking (e.g. unknown eventType); it is quarantined."""


class MappingFileError(MappingError):
    """A mapping file failed to load or validate; the message names file, line and key."""
