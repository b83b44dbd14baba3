"""CRM backends, chosen by ``CRM_BACKEND`` in ``build_backend`` alone."""

from __future__ import annotations

from sqlalchemy import Engine

from adapter.backends.base import CrmBackend, SyncJob, SyncResult
from adapter.settings import Settings

__all__ = ["CrmBackend", "SyncJob", "SyncResult", "build_backend"]


def build_backend(settings: Settings, engine: Engine) -> CrmBackend:
    """The backend ``settings`` names, on the service's engine."""
    if settings.crm_backend == "local":
        from adapter.backends.local import LocalBackend

        return LocalBackend(engine)
    raise NotImplementedError(
        f"CRM_BACKEND={settings.crm_backend!r} is not available in this version; use 'local'"
    )
