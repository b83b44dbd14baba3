"""Outbox errors::

OutboxError
├── LeaseLost        the claim was taken over (lease expired): do not write
└── EventNotFound    no event with that id
"""

from __future__ import annotations


class OutboxError(Exception):
    """Base of the outbox's errors."""


class LeaseLost(OutboxError):
    """The caller's lease token no longer owns the event; its result must not be written."""


class AlreadyEnqueued(OutboxError):
    """An event with the same dedupe identity already exists."""


class EventNotFound(OutboxError):
    """No event has that id."""
