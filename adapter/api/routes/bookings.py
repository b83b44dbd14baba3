"""The BookMe webhook (contract §3) and the event status."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from adapter.api.auth import Unauthorized, authenticate
from adapter.api.deps import AdminDep, ServicesDep, get_services
from adapter.api.schemas import (
    EventAnswer,
    EventStatus,
    RecordId,
    booking_request_schema,
    error_responses,
    event_status,
)
from adapter.booking import parse_booking, validation_details
from adapter.ingest import accept_booking
from adapter.services import Services
from outbox.store import PENDING, SYNCED, Event

log = logging.getLogger(__name__)
router = APIRouter()

_JSON_TYPES = ("application/json", "application/*+json")


class PayloadTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, "Payload too large")


async def read_limited_body(request: Request) -> bytes:
    """The raw body, refused with 413 past ``max_body_bytes`` without reading it all."""
    services = get_services(request)
    limit = services.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    body = bytearray()
    if not (declared.isdigit() and int(declared) > limit):
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                break
    if len(body) > limit or (declared.isdigit() and int(declared) > limit):
        services.metrics.webhooks.labels("too_large").inc()
        raise PayloadTooLarge()
    return bytes(body)


RawBody = Annotated[bytes, Depends(read_limited_body)]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _invalid(details: list[dict[str, str]]) -> JSONResponse:
    return JSONResponse({"error": "Invalid payload", "details": details}, status_code=400)


def event_answer(event: Event) -> JSONResponse:
    """200 with the CRM records once synced, else 202 pointing at the status."""
    if event.state == SYNCED and event.result is not None:
        return JSONResponse(
            {"success": True, "eventId": event.id, "status": SYNCED, **event.result},
            status_code=200,
        )
    return JSONResponse(
        {"success": True, "eventId": event.id, "status": event.state},
        status_code=202,
        headers={"Location": f"/api/bookings/events/{event.id}"},
    )


@router.post(
    "/api/bookings/incoming",
    summary="Receive a BookMe booking webhook",
    openapi_extra=booking_request_schema(),
    responses={
        200: {"model": EventAnswer, "description": "Synced to the CRM, with the CRM's ids"},
        202: {"model": EventAnswer, "description": "Stored; queued or quarantined"},
        **error_responses(400, 401, 413, 415, s400="Invalid payload"),
    },
)
def incoming(request: Request, body: RawBody, services: ServicesDep) -> JSONResponse:
    outcome, response = _incoming(request, body, services)
    services.metrics.webhooks.labels(outcome).inc()
    return response


def _incoming(request: Request, body: bytes, services: Services) -> tuple[str, JSONResponse]:
    """The webhook's answer, and its outcome for the metrics."""
    try:
        auth = authenticate(
            request.headers,
            body,
            shared_secret=services.webhook_secret,
            signing_secrets=services.signing_secrets,
        )
    except Unauthorized as exc:
        log.info("webhook refused: %s", exc)
        return "unauthorized", JSONResponse({"error": "Unauthorized"}, status_code=401)

    if not _is_json(request.headers.get("content-type", "")):
        return "unsupported", JSONResponse(
            {"error": "Content-Type must be application/json"}, status_code=415
        )
    try:
        raw: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "unsupported", JSONResponse({"error": "Body is not valid JSON"}, status_code=415)
    if not isinstance(raw, dict):
        return "invalid", _invalid([{"field": "body", "message": "must be a JSON object"}])
    try:
        booking = parse_booking(raw)
    except ValidationError as exc:
        return "invalid", _invalid([d.model_dump() for d in validation_details(exc)])

    event, created = accept_booking(
        services.store, booking, raw, services.mappings.current, webhook_id=auth.webhook_id
    )
    log.info(
        "booking %s accepted as event %s (%s, %s)",
        booking.booking_id,
        event.id,
        event.state,
        "new" if created else "repeat",
    )
    if event.state in PENDING:
        services.wake_workers()
        event = _await_settled(services, event)
    return ("repeat" if not created else event.state), event_answer(event)


def _await_settled(services: Services, event: Event) -> Event:
    """The event once no longer pending, or as it is after ``SYNC_WAIT_MS``."""
    latest = event

    def settled() -> bool:
        nonlocal latest
        latest = services.store.get(event.id) or latest
        return latest.state not in PENDING

    wait = services.settings.sync_wait_ms / 1000
    if wait > 0:
        services.waiter.wait_for(settled, wait)
    return latest


@router.get(
    "/api/bookings/events/{event_id}",
    dependencies=[AdminDep],
    response_model=EventStatus,
    summary="One webhook event's sync status",
    responses=error_responses(400, 401, 404, s404="No such event"),
)
def get_event(event_id: RecordId, services: ServicesDep) -> EventStatus:
    event = services.store.get(event_id)
    if event is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    return event_status(event)
