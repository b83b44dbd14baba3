"""Owners: who a booking's CRM records belong to, and the persisted round robin."""

from adapter.owners.store import (
    OwnerRotations,
    assignments,
    owners_metadata,
    rotation_key,
    rotations,
)

__all__ = ["OwnerRotations", "assignments", "owners_metadata", "rotation_key", "rotations"]
