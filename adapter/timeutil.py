"""Datetime helpers: everything stored and returned is UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# How far ahead of our clock a sender's timestamp may be: Standard Webhooks'
# tolerance for clock skew, the same 5 minutes its signatures are checked with.
SENDER_CLOCK_TOLERANCE = timedelta(minutes=5)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already (as SQLite returns it)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_z(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, millisecond precision; ``None`` stays ``None``."""
    if value is None:
        return None
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trusted_stamp(stamp: datetime | None, received: datetime) -> datetime | None:
    """A sender's ``updatedAt`` as used for ordering: as sent, unless it is more than
    ``SENDER_CLOCK_TOLERANCE`` ahead of its receipt, when the receipt time stands in.

    A snapshot cannot have been made after it arrived, so its receipt time bounds
    its true time; a far-future stamp (``9999-12-31``) would otherwise outrank
    every later event of the booking, and the contact it shares, for ever.
    (Receipt plus the tolerance would still supersede a correct cancellation
    sent within those minutes.) Normal skew of seconds keeps the sender's order.
    """
    if stamp is None:
        return None
    stamp, received = as_utc(stamp), as_utc(received)
    return received if stamp - received > SENDER_CLOCK_TOLERANCE else stamp
