"""FastAPI dependencies: the app's services, and the admin bearer-token guard."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import Engine

if TYPE_CHECKING:
    from adapter.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated["Services", Depends(get_services)]


def get_engine(request: Request) -> Engine:
    return get_services(request).engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def require_admin(request: Request) -> None:
    """Refuse with 401 unless ``Authorization: Bearer <ADMIN_TOKEN>`` matches."""
    token = get_services(request).admin_token
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if (
        token is None
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(presented.strip().encode(), token.encode())
    ):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Unauthorized")


AdminDep = Depends(require_admin)
