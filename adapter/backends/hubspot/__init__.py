"""The HubSpot backend: ``HubSpotBackend`` on ``HubSpotApi`` (the SDK, budgeted and retried)."""

from __future__ import annotations

from adapter.backends.hubspot.backend import HubSpotBackend, derive_stage
from adapter.backends.hubspot.budget import RollingWindow, shared_budget
from adapter.backends.hubspot.client import (
    HubSpotApi,
    HubSpotAuthError,
    HubSpotConflict,
    HubSpotNotFound,
    HubSpotUnreachable,
    build_api,
    translate_error,
)
from adapter.backends.hubspot.setup import SetupReport, run_setup

__all__ = [
    "HubSpotApi",
    "HubSpotAuthError",
    "HubSpotBackend",
    "HubSpotConflict",
    "HubSpotNotFound",
    "HubSpotUnreachable",
    "RollingWindow",
    "SetupReport",
    "build_api",
    "derive_stage",
    "run_setup",
    "shared_budget",
    "translate_error",
]
