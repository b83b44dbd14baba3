"""HubSpot's app webhooks: property changes on the meetings, tasks and deals this service made.

Verified (v3 signature with ``HUBSPOT_CLIENT_SECRET``, at most five minutes old)
before anything is parsed, stored as one ``hubspot.delivery`` outbox job and
answered at once; a worker reads the objects back (``adapter.hubspot_sync.delivery``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from adapter.api.deps import ServicesDep, refuse_if_throttled
from adapter.api.schemas import error_responses
from adapter.api.throttle import client_address
from adapter.hubspot_sync.delivery import delivery_job
from adapter.hubspot_sync.events import MAX_EVENTS, DeliveryInvalid, parse_delivery
from adapter.hubspot_sync.signature import BadSignature, verify
from adapter.services import Services
from adapter.timeutil import utcnow

log = logging.getLogger(__name__)
router = APIRouter(tags=["HubSpot"])

MAX_DELIVERY_BYTES = 1024 * 1024
"""100 events of a few hundred bytes each fit many times over."""
SURFACE = "hubspot-webhook"


class DeliveryAnswer(BaseModel):
    """The 200: how many events will be read back, how many were not ours to watch."""

    accepted: int
    ignored: int
    jobId: str | None = None
    repeat: bool = False


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_DELIVERY_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "Payload too large")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_DELIVERY_BYTES:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "Payload too large")
    except ClientDisconnect:
        raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, "Body not received") from None
    return bytes(body)


def _uri(request: Request, services: Services) -> str:
    """The URL HubSpot signed: the app's target URL when configured (a proxy in front
    changes scheme and host), else the one this request came to."""
    return services.settings.hubspot_webhook_url or str(request.url)


@router.post(
    "/api/hubspot/webhooks",
    summary="Receive HubSpot app webhook deliveries (property changes)",
    description=(
        "HubSpot's app webhooks for `object.propertyChange` on meetings (0-47) and tasks "
        "(0-27) and `deal.propertyChange` (or `object.propertyChange` on 0-3): a JSON array "
        "of up to 100 events. Signed with `X-HubSpot-Signature-v3` and "
        "`X-HubSpot-Request-Timestamp` (the app's client secret, `HUBSPOT_CLIENT_SECRET`); "
        "unsigned, forged or more than 5 minutes old: 401 and nothing stored. Accepted "
        "events are stored as one outbox job; a worker reads the objects back with their "
        "property history and records the changes exactly as the poll does."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "maxItems": MAX_EVENTS,
                        "items": {
                            "type": "object",
                            "required": ["subscriptionType", "objectId", "occurredAt"],
                            "properties": {
                                "eventId": {"type": "integer"},
                                "subscriptionId": {"type": "integer"},
                                "portalId": {"type": "integer"},
                                "appId": {"type": "integer"},
                                "occurredAt": {"type": "integer", "description": "epoch ms"},
                                "subscriptionType": {"type": "string"},
                                "objectTypeId": {"type": "string"},
                                "attemptNumber": {"type": "integer"},
                                "objectId": {"type": "integer"},
                                "propertyName": {"type": "string"},
                                "propertyValue": {"type": "string"},
                                "changeSource": {"type": "string"},
                                "sourceId": {"type": "string"},
                            },
                        },
                    }
                }
            },
        },
        "parameters": [
            {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
            for name in ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp")
        ],
    },
    responses={
        200: {"model": DeliveryAnswer, "description": "Verified and stored (or nothing to do)"},
        **error_responses(
            400, 401, 413, 429, s401="Unsigned, forged, stale, or HubSpot webhooks not enabled"
        ),
    },
)
async def hubspot_webhooks(request: Request, services: ServicesDep) -> JSONResponse:
    secret = services.settings.hubspot_client_secret
    if secret is None or services.settings.crm_backend != "hubspot":
        # No client secret, no authentic delivery: refused like a forged one.
        log.info("HubSpot webhook refused (401): needs CRM_BACKEND=hubspot, HUBSPOT_CLIENT_SECRET")
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    refuse_if_throttled(request, SURFACE)
    body = await _body(request)
    try:
        verify(
            request.headers,
            method=request.method,
            uri=_uri(request, services),
            body=body,
            client_secret=secret.get_secret_value(),
            now=utcnow(),
        )
    except BadSignature as exc:
        log.info("HubSpot webhook refused (401): %s", exc)
        services.throttle.failed(client_address(request), SURFACE)
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    try:
        raw: Any = json.loads(body)
    except ValueError as exc:
        return _invalid([("body", f"is not JSON: {exc}")])
    try:
        events, ignored = parse_delivery(raw)
    except DeliveryInvalid as exc:
        return _invalid(exc.details)
    if not events:
        return JSONResponse(DeliveryAnswer(accepted=0, ignored=ignored).model_dump())
    event, created = await services.writer.enqueue(delivery_job(events, ignored, utcnow()))
    services.wake_workers()
    log.info(
        "HubSpot webhook: %d event(s) stored as job %s%s",
        len(events),
        event.id,
        "" if created else " (a repeat)",
    )
    answer = DeliveryAnswer(
        accepted=len(events), ignored=ignored, jobId=event.id, repeat=not created
    )
    return JSONResponse(answer.model_dump())


def _invalid(details: list[tuple[str, str]]) -> JSONResponse:
    log.info("HubSpot webhook refused (400): %s", "; ".join(f"{f}: {m}" for f, m in details))
    return JSONResponse(
        {
            "error": "Invalid payload",
            "details": [{"field": f, "message": m[:300]} for f, m in details],
        },
        status_code=400,
    )
