"""The FastAPI application factory: nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from adapter import __version__
from adapter.api.deps import require_admin
from adapter.api.routes import bookings, calendar, crm, hubspot, insights, ops
from adapter.api.schemas import error_responses
from adapter.services import Services, build_services
from adapter.settings import Settings
from adapter.ui import router as ui_router


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    embedded_workers: int | None = None,
) -> FastAPI:
    """The service. Given ``services`` are the caller's to close; otherwise the app
    builds its own on startup, runs ``embedded_workers`` worker threads (default:
    ``WORKER_CONCURRENCY``; 0 for none) and closes them on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            if embedded_workers:
                services.start_workers(embedded_workers)
            yield
            return
        own = build_services(settings or Settings())
        app.state.services = own
        count = own.settings.worker_concurrency if embedded_workers is None else embedded_workers
        own.start_workers(count)
        try:
            yield
        finally:
            own.close()

    app = BookMeApp(
        title="bookme-crm",
        version=__version__,
        description="BookMe bookings mapped onto a CRM through a transactional outbox.",
        lifespan=lifespan,
    )
    _document_throttling(bookings.router, crm.router, ops.router, insights.router)
    app.include_router(bookings.router)
    app.include_router(crm.router)
    app.include_router(ops.router)
    app.include_router(calendar.router)
    app.include_router(insights.router)
    app.include_router(hubspot.router)
    app.include_router(ui_router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_error)
    return app


class BookMeApp(FastAPI):
    """FastAPI, with the BookMe webhook answered before FastAPI's stack
    (``bookings.webhook_fast_path``); every other request goes through it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == bookings.WEBHOOK_PATH
            and scope["method"] == "POST"
        ):
            scope["app"] = self
            await bookings.webhook_fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _document_throttling(*routers: APIRouter) -> None:
    """Every route behind the admin token may answer 429 (``adapter.api.throttle``)."""
    for route in (route for router in routers for route in router.routes):
        if isinstance(route, APIRoute) and any(
            dep.call is require_admin for dep in route.dependant.dependencies
        ):
            route.responses.setdefault(429, error_responses(429)[429])


async def _http_error(_request: Request, exc: Any) -> JSONResponse:
    return bookings.http_error(exc)


async def _request_error(_request: Request, exc: Any) -> JSONResponse:
    details = [
        {"field": ".".join(str(p) for p in err["loc"][1:]) or "request", "message": err["msg"]}
        for err in exc.errors()
    ]
    return JSONResponse({"error": "Invalid request", "details": details}, status_code=400)
