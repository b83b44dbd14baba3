"""The BookMe webhook (contract §3) and the event status."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from adapter.api.auth import Unauthorized, authenticate, is_signed
from adapter.api.deps import AdminDep, ServicesDep, get_services, refuse_if_throttled
from adapter.api.jsonbody import BodyRejected, decode_json_body
from adapter.api.schemas import (
    EventAnswer,
    EventStatus,
    RecordId,
    booking_request_schema,
    error_responses,
    event_status,
)
from adapter.api.throttle import client_address
from adapter.booking import FieldError, parse_booking, validation_details
from adapter.bookme import (
    BookMeError,
    BookMeMalformed,
    BookMeNotFound,
    InvalidBookingId,
    import_booking,
)
from adapter.ingest import WebhookIdReused, commit_booking
from adapter.insights.refusals import REFUSED_OUTCOMES, record_refusal
from adapter.services import Services
from outbox.store import PENDING, SYNCED, Event

log = logging.getLogger(__name__)
router = APIRouter()

_JSON_TYPES = ("application/json", "application/*+json")


class WebhookConflict(BaseModel):
    """A 409: the ``webhook-id`` names another message; nothing is stored."""

    error: str
    details: list[FieldError]


class PayloadTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, "Payload too large")


def _refuse_before_body(request: Request, services: Services) -> None:
    """429 for a throttled address, and the shared-secret check, from the headers alone:
    a sender without the secret cannot make us read (or wait for) its body."""
    try:
        refuse_if_throttled(request, "webhook")
    except HTTPException:
        services.metrics.webhooks.labels("throttled").inc()
        raise
    if is_signed(request.headers):
        return  # a signature covers the body: checked once it is read
    try:
        authenticate(
            request.headers,
            b"",
            shared_secret=services.webhook_secret,
            signing_secrets=services.signing_secrets,
        )
    except Unauthorized as exc:
        log.info("webhook refused before its body: %s", exc)
        if "x-webhook-secret" in request.headers:
            services.throttle.failed(client_address(request), "webhook")
        services.metrics.webhooks.labels("unauthorized").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Unauthorized") from None


async def read_limited_body(request: Request) -> bytes:
    """The raw body, refused with 413 past ``max_body_bytes`` without reading it all
    (and not read at all when the headers already fail the shared secret)."""
    services = get_services(request)
    _refuse_before_body(request, services)
    limit = services.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    body = bytearray()
    if not (declared.isdigit() and int(declared) > limit):
        try:
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:
                    break
        except ClientDisconnect:
            # Gone (or cut off by the server's body timeout): nobody reads an answer.
            raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, "Body not received") from None
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


def _refused(details: list[dict[str, str]]) -> JSONResponse:
    """The webhook's 400, logged in one line of fields and reasons (never the values)."""
    log.info(
        "webhook refused (400): %s",
        "; ".join(f"{d['field'][:200]}: {d['message'][:200]}" for d in details),
    )
    return _invalid(details)


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
        **error_responses(400, 401, 413, 415, 429, s400="Invalid payload"),
        409: {
            "model": WebhookConflict,
            "description": "The webhook-id was already used for a different body",
        },
    },
)
async def incoming(request: Request, body: RawBody, services: ServicesDep) -> JSONResponse:
    # Async on purpose: checks and parsing are short CPU work, the commit is the single
    # writer's and the sync wait an awaited event, so no request ever holds a thread.
    # ``webhook_fast_path`` answers this route's requests before FastAPI routes them; this
    # declaration documents it (OpenAPI) and answers wherever the fast path does not match.
    return await _answer(request, body, services)


async def _answer(request: Request, body: bytes, services: Services) -> JSONResponse:
    """The webhook's answer, counted in the metrics, and an authenticated refusal
    recorded for insights (nothing else of it is stored); both paths answer here."""
    outcome, response = await _incoming(request, body, services)
    services.metrics.webhooks.labels(outcome).inc()
    if outcome in REFUSED_OUTCOMES:
        await run_in_threadpool(
            record_refusal,
            services.engine,
            status=response.status_code,
            body=bytes(response.body),
            webhook_id=request.headers.get("webhook-id"),
        )
    return response


WEBHOOK_PATH = "/api/bookings/incoming"


@dataclass(frozen=True)
class Accepted:
    """A webhook's booking, committed; ``created`` unless it repeats a stored one."""

    event: Event
    created: bool


def http_error(exc: HTTPException) -> JSONResponse:
    """An ``HTTPException``'s answer, as the app's exception handler gives it."""
    return JSONResponse(
        {"error": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def webhook_fast_path(scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /api/bookings/incoming`` answered straight from the ASGI call.

    FastAPI's routing, dependency solving, middleware stack and per-request
    telemetry check (an environment look-up per request) cost about half the
    event loop's time per webhook (py-spy, issue 14); the route takes no
    validated parameters, so this answers exactly as the declared route does
    (the same checks, in the same order, the same error bodies) without them.
    ``scope["app"]`` is the application (``adapter.api.app.BookMeApp``). An
    unexpected error is logged and answered 500, as the app's own handler does.
    """
    request = Request(scope, receive)
    try:
        services = get_services(request)
        try:
            body = await read_limited_body(request)
        except HTTPException as exc:
            response = http_error(exc)
        else:
            response = await _answer(request, body, services)
    except Exception:
        log.exception("webhook failed")
        response = JSONResponse({"error": "Internal Server Error"}, status_code=500)
    await response(scope, receive, send)


async def _incoming(request: Request, body: bytes, services: Services) -> tuple[str, JSONResponse]:
    """The webhook's answer, and its outcome for the metrics."""
    with services.ingest.receiving():  # the embedded workers yield until it is committed
        accepted = await _accept(request, body, services)
    if not isinstance(accepted, Accepted):
        return accepted
    event, created = accepted.event, accepted.created
    if event.state in PENDING:
        if created:
            services.waiter.accepted(event.id)
        services.wake_workers()
        event = await services.settle(event)
    return ("repeat" if not created else event.state), event_answer(event)


async def _accept(
    request: Request, body: bytes, services: Services
) -> tuple[str, JSONResponse] | Accepted:
    """The booking committed, or the refusal's outcome and answer."""
    try:
        auth = authenticate(
            request.headers,
            body,
            shared_secret=services.webhook_secret,
            signing_secrets=services.signing_secrets,
        )
    except Unauthorized as exc:
        log.info("webhook refused: %s", exc)
        services.throttle.failed(client_address(request), "webhook")  # a wrong signature
        return "unauthorized", JSONResponse({"error": "Unauthorized"}, status_code=401)

    if not _is_json(request.headers.get("content-type", "")):
        return "unsupported", JSONResponse(
            {"error": "Content-Type must be application/json"}, status_code=415
        )
    try:
        raw: Any = decode_json_body(body)
    except BodyRejected as exc:
        if exc.status == 415:
            return "unsupported", JSONResponse({"error": exc.error}, status_code=415)
        return "invalid", _refused([{"field": f, "message": m} for f, m in exc.details])
    if not isinstance(raw, dict):
        return "invalid", _refused([{"field": "body", "message": "must be a JSON object"}])
    try:
        booking = parse_booking(raw)
    except ValidationError as exc:
        return "invalid", _refused([d.model_dump() for d in validation_details(exc)])

    try:
        event, created = await commit_booking(
            services.writer, booking, raw, services.mappings.current, webhook_id=auth.webhook_id
        )
    except WebhookIdReused as exc:
        log.warning("webhook refused (409): %s", exc)
        return "conflict", JSONResponse(
            {
                "error": "Conflict",
                "details": [
                    {
                        "field": "webhook-id",
                        "message": f"{exc.webhook_id[:200]!r} was already used for a "
                        "different body; a webhook id names one message",
                    }
                ],
            },
            status_code=409,
        )
    log.debug(  # one line per webhook cost a tenth of the loop's time (issue 14)
        "booking %s accepted as event %s (%s, %s)",
        booking.booking_id,
        event.id,
        event.state,
        "new" if created else "repeat",
    )
    return Accepted(event, created)


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


# -- import by booking id (BookMe's API) ------------------------------------------


class ImportRequest(BaseModel):
    """``POST /api/bookings/import``: the BookMe booking to fetch and accept."""

    model_config = ConfigDict(extra="forbid")

    bookingId: StrictStr = Field(min_length=1, max_length=200)


async def import_request_body(request: Request) -> ImportRequest:
    """The import body, parsed as a dependency so the admin check runs first (as in ``crm``)."""
    try:
        return ImportRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *(err["loc"] or ("body",)))} for err in exc.errors()]
        ) from exc


class ImportAnswer(EventAnswer):
    """An import's 200 or 202: the webhook's answer plus the booking and whether it is new."""

    bookingId: str
    new: bool


class BookMeFailure(BaseModel):
    """A 502/503: BookMe failed, answered something unusable, or is not configured."""

    error: str
    details: list[FieldError] = []


def _bookme_failure(exc: BookMeError) -> JSONResponse:
    details = [d.model_dump() for d in exc.details] if isinstance(exc, BookMeMalformed) else []
    if isinstance(exc, InvalidBookingId):
        return _invalid([{"field": "bookingId", "message": exc.message}])
    if isinstance(exc, BookMeNotFound):
        return JSONResponse({"error": exc.message}, status_code=exc.status_code)
    return JSONResponse({"error": exc.message, "details": details}, status_code=exc.status_code)


@router.post(
    "/api/bookings/import",
    dependencies=[AdminDep],
    summary="Import a booking from BookMe's API by its id",
    description=(
        "Fetches the booking from BookMe (`BOOKME_API_URL`) and accepts it exactly as a "
        "webhook delivery: a booking the outbox already holds stores nothing (`new`: false)."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ImportRequest.model_json_schema()}},
        }
    },
    responses={
        200: {"model": ImportAnswer, "description": "Synced to the CRM, with the CRM's ids"},
        202: {"model": ImportAnswer, "description": "Stored (or held); queued or quarantined"},
        **error_responses(400, 401, 404, s404="BookMe has no such booking"),
        502: {"model": BookMeFailure, "description": "BookMe failed or sent a malformed booking"},
        503: {"model": BookMeFailure, "description": "BOOKME_API_URL is not configured"},
    },
)
def import_from_bookme(
    request: Annotated[ImportRequest, Depends(import_request_body)], services: ServicesDep
) -> JSONResponse:
    try:
        outcome = import_booking(services, request.bookingId)
    except BookMeError as exc:
        log.info("import of booking %r refused: %s", request.bookingId, exc.message)
        return _bookme_failure(exc)
    log.info(
        "booking %s imported as event %s (%s, %s)",
        outcome.booking_id,
        outcome.event_id,
        outcome.state,
        "new" if outcome.new else "already held",
    )
    event = services.store.get(outcome.event_id)
    assert event is not None  # events are never deleted
    if event.state in PENDING:
        event = services.await_settled(event)
    extra = {"bookingId": outcome.booking_id, "new": outcome.new}
    if event.state == SYNCED and event.result is not None:
        body = {"success": True, "eventId": event.id, "status": SYNCED, **extra, **event.result}
        return JSONResponse(body, status_code=200)
    return JSONResponse(
        {"success": True, "eventId": event.id, "status": event.state, **extra},
        status_code=202,
        headers={"Location": f"/api/bookings/events/{event.id}"},
    )
