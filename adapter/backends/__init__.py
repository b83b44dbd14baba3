"""CRM backends, chosen by ``CRM_BACKEND`` in ``build_backend`` alone."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from adapter.backends.base import CrmBackend, SyncJob, SyncResult
from adapter.mapping import MappingConfig
from adapter.metrics import Metrics
from adapter.settings import Settings

__all__ = ["CrmBackend", "SyncJob", "SyncResult", "build_backend"]


def build_backend(
    settings: Settings,
    engine: Engine,
    mapping: Callable[[], MappingConfig],
    metrics: Metrics | None = None,
) -> CrmBackend:
    """The backend ``settings`` names, on the service's engine; ``mapping`` is the one in use."""
    if settings.crm_backend == "local":
        from adapter.backends.local import LocalBackend

        return LocalBackend(engine)
    if settings.crm_backend == "hubspot":
        return _hubspot(settings, engine, mapping, metrics)
    raise NotImplementedError(
        f"CRM_BACKEND={settings.crm_backend!r} is not available in this version; use 'local'"
    )


def _hubspot(
    settings: Settings,
    engine: Engine,
    mapping: Callable[[], MappingConfig],
    metrics: Metrics | None,
) -> CrmBackend:
    """The HubSpot backend; its pipeline and stage table come from the mapping in use,
    read per batch, so ``/admin/mappings/reload`` and SIGHUP reach them too."""
    from adapter.backends.hubspot import HubSpotBackend, build_api
    from adapter.backends.hubspot.budget import DatabaseWindow, portal_budget_name

    token = settings.hubspot_access_token
    assert token is not None  # Settings refuses CRM_BACKEND=hubspot without one
    secret = token.get_secret_value()
    calls = None if metrics is None else metrics.crm_calls

    def budget(kind: str, limit: int, window: float) -> DatabaseWindow:
        # HubSpot's limit is per portal: every process on this database shares it.
        name = portal_budget_name(settings.hubspot_base_url, secret, kind)
        return DatabaseWindow(engine, name, limit, window)

    api = build_api(
        secret,
        settings.hubspot_base_url,
        settings.rate_limit,
        budget=budget("requests", *settings.rate_limit),
        search_budget=budget("search", *settings.search_rate_limit),
        on_call=None if calls is None else lambda status: calls.labels("hubspot", status).inc(),
    )
    return HubSpotBackend(
        api,
        engine,
        lambda: mapping().defaults.hubspot,
        search_lag_seconds=settings.hubspot_search_lag_seconds,
        # A reload is a new mapping object: the owners are listed again.
        mapping_in_use=mapping,
        on_reconcile=(
            None if metrics is None else lambda how: metrics.hubspot_reconciled.labels(how).inc()
        ),
    )
