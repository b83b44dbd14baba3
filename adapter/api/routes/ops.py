"""Operations: health, readiness, the outbox's admin view, replay, mapping reload (§7)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from adapter.api.deps import AdminDep, ServicesDep
from adapter.api.schemas import EventStatus, RecordId, error_responses, event_status
from adapter.backends.base import backend_pause
from adapter.errors import MappingFileError
from adapter.timeutil import iso_z
from outbox.exceptions import EventNotFound
from outbox.store import REPLAYABLE, STATES

log = logging.getLogger(__name__)
router = APIRouter()
REPLAY_ACTOR = "api"


class ReplayEntry(BaseModel):
    """One audited replay of an event."""

    replayedAt: str
    actor: str
    fromState: str


class AdminEvent(EventStatus):
    """An outbox event's status and its replay audit."""

    replays: list[ReplayEntry]


class BulkReplay(BaseModel):
    """What a replay by state re-queued."""

    state: str
    replayed: int
    events: list[EventStatus]


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:  # async: answered on the loop, never queued for a thread
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database reachable, mapping loaded, backend reachable (or paused by the CRM)",
    responses={503: {"description": "Not ready: a check failed (named in the body)"}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    """Ready while the CRM pauses us (HubSpot's 477 or daily limit): bookings are still
    accepted and queued, and wait for the pause's end; the body says until when."""
    body: dict[str, Any] = {}
    checks: dict[str, str] = {}
    try:
        pause = backend_pause(services.backend)
    except Exception as exc:
        log.warning("reading the CRM pause failed: %s", exc)
        pause = None
    if pause is not None:
        checks["backend"] = "paused"
        body[services.backend.name] = {
            "pausedUntil": iso_z(pause.until),
            "reason": pause.reason,
        }
    for name, check in (
        ("database", services.store.ping),
        ("mapping", lambda: services.mappings.current),
        ("backend", services.backend.ping),
    ):
        if name in checks:
            continue
        try:
            check()
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}"
    if checks.get("mapping") == "ok":
        from adapter.notify.status import mail_status

        # Informative only: without SMTP the service still does everything else.
        body["mail"] = mail_status(services.settings, services.mappings.current)
    ready = all(value in ("ok", "paused") for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks, **body},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/admin/outbox",
    dependencies=[AdminDep],
    responses=error_responses(400, 401),
    summary="Outbox events by state",
)
def list_outbox(
    services: ServicesDep,
    state: str | None = Query(default=None, pattern="^(" + "|".join(STATES) + ")$"),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=1_000_000_000),
) -> dict[str, Any]:
    return {
        "counts": services.store.counts(),
        "oldestPendingAgeSeconds": services.store.oldest_pending_age(),
        "events": [
            event_status(event).model_dump()
            for event in services.store.list(state, limit=limit, offset=offset)
        ],
    }


@router.get(
    "/admin/outbox/{event_id}",
    dependencies=[AdminDep],
    response_model=AdminEvent,
    responses=error_responses(400, 401, 404),
    summary="One outbox event, with who replayed it and when",
)
def get_outbox_event(event_id: RecordId, services: ServicesDep) -> AdminEvent:
    event = services.store.get(event_id)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    audit = [
        ReplayEntry(replayedAt=iso_z(r.replayed_at) or "", actor=r.actor, fromState=r.from_state)
        for r in services.store.replays(event_id)
    ]
    return AdminEvent(**event_status(event).model_dump(), replays=audit)


@router.post(
    "/admin/outbox/replay",
    dependencies=[AdminDep],
    response_model=BulkReplay,
    responses=error_responses(400, 401),
    summary="Queue every dead or quarantined event of a state again (after a mapping fix)",
)
def replay_state(
    services: ServicesDep,
    state: str = Query(pattern="^(" + "|".join(REPLAYABLE) + ")$"),
) -> BulkReplay:
    replayed = services.replay_state(state, actor=REPLAY_ACTOR)
    return BulkReplay(
        state=state, replayed=len(replayed), events=[event_status(e) for e in replayed]
    )


@router.post(
    "/admin/outbox/{event_id}/replay",
    dependencies=[AdminDep],
    response_model=EventStatus,
    responses=error_responses(400, 401, 404),
    summary="Queue a dead or quarantined event again",
)
def replay(event_id: RecordId, services: ServicesDep) -> EventStatus:
    try:
        (event,) = services.replay([event_id], actor=REPLAY_ACTOR)
    except EventNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found") from exc
    return event_status(event)


@router.post(
    "/admin/mappings/reload",
    dependencies=[AdminDep],
    responses={
        **error_responses(401),
        422: {"description": "Mapping invalid; the previous mapping stays in use"},
    },
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
