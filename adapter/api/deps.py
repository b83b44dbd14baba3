"""FastAPI dependencies: the app's services, and the admin bearer-token guard."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import Engine

from adapter.api.throttle import client_address

if TYPE_CHECKING:
    from adapter.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _services(request: Request) -> Services:
    """``get_services`` as an async dependency: FastAPI runs a sync one in a worker
    thread, a hop (and a thread) per request for a dictionary lookup."""
    return get_services(request)


ServicesDep = Annotated["Services", Depends(_services)]


def get_engine(request: Request) -> Engine:
    return get_services(request).engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def refuse_if_throttled(request: Request, surface: str) -> None:
    """429 with ``Retry-After`` while this client's address has failed too often."""
    wait = get_services(request).throttle.retry_after(client_address(request), surface)
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="Too many failed credentials from this address; retry later",
            headers={"Retry-After": str(wait)},
        )


def require_admin(request: Request) -> None:
    """Refuse with 401 unless ``Authorization: Bearer <ADMIN_TOKEN>`` matches; a wrong
    token counts against the client's address (429 once it has failed too often)."""
    services = get_services(request)
    refuse_if_throttled(request, "admin")
    token = services.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if (
        token is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(presented.strip().encode(), token.encode())
    ):
        if header:  # a guess; a request with no credentials at all is not one
            services.throttle.failed(client_address(request), "admin")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Unauthorized")


AdminDep = Depends(require_admin)
