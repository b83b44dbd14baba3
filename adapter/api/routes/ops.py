"""Operations: health, readiness, the outbox's admin view, replay, mapping reload (§7)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapter.api.deps import AdminDep, ServicesDep
from adapter.api.schemas import EventStatus, event_status
from adapter.errors import MappingFileError
from outbox.exceptions import EventNotFound
from outbox.store import STATES

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database reachable, mapping loaded, backend reachable")
def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", services.store.ping),
        ("mapping", lambda: services.mappings.current),
        ("backend", services.backend.ping),
    ):
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/admin/outbox", dependencies=[AdminDep], summary="Outbox events by state")
def list_outbox(
    services: ServicesDep,
    state: str | None = Query(default=None, pattern="^(" + "|".join(STATES) + ")$"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0),
) -> dict[str, Any]:
    return {
        "counts": services.store.counts(),
        "oldestPendingAgeSeconds": services.store.oldest_pending_age(),
        "events": [
            event_status(event).model_dump()
            for event in services.store.list(state, limit=limit, offset=offset)
        ],
    }


@router.post(
    "/admin/outbox/{event_id}/replay",
    dependencies=[AdminDep],
    response_model=EventStatus,
    summary="Queue a dead or quarantined event again",
)
def replay(event_id: str, services: ServicesDep) -> EventStatus:
    try:
        (event,) = services.store.replay([event_id])
    except EventNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found") from exc
    log.info("event %s replayed by admin (now %s)", event_id, event.state)
    services.wake_workers()
    return event_status(event)


@router.post(
    "/admin/mappings/reload",
    dependencies=[AdminDep],
    summary="Reload the mapping file; an invalid file never replaces the one in use",
)
def reload_mappings(services: ServicesDep) -> JSONResponse:
    try:
        mapping = services.mappings.reload()
    except MappingFileError as exc:
        log.warning("mapping reload refused: %s", exc)
        return JSONResponse(
            {"error": "Mapping invalid; the previous mapping stays in use", "detail": str(exc)},
            status_code=422,
        )
    return JSONResponse({"status": "reloaded", "eventTypes": sorted(mapping.event_types)})
