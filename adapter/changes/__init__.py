"""What sales staff change in the CRM: recorded once, echo-suppressed, routed back to BookMe."""

from adapter.changes.normalise import FIELDS, normalise
from adapter.changes.store import (
    PUSH_KIND,
    Change,
    changes_for_booking,
    changes_metadata,
    observe,
    recent,
    record_written,
    route,
    set_state,
)

__all__ = [
    "FIELDS",
    "PUSH_KIND",
    "Change",
    "changes_for_booking",
    "changes_metadata",
    "normalise",
    "observe",
    "recent",
    "record_written",
    "route",
    "set_state",
]
