"""The local reference CRM: tables, the ``LocalBackend`` writer and the read API's queries."""

from __future__ import annotations

from adapter.backends.local.backend import (
    LocalBackend,
    snapshot_version,
    translate_error,
    write_plan,
)
from adapter.backends.local.models import (
    activities,
    companies,
    contacts,
    crm_metadata,
    leads,
    tasks,
)
from adapter.backends.local.properties import properties
from adapter.backends.local.reader import LocalCrmReader

__all__ = [
    "LocalBackend",
    "LocalCrmReader",
    "activities",
    "companies",
    "contacts",
    "crm_metadata",
    "leads",
    "properties",
    "snapshot_version",
    "tasks",
    "translate_error",
    "write_plan",
]
