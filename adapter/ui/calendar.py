"""The dashboard's calendar feeds page: make, list and revoke feed tokens (``adapter.calendar``).

A new token's feed URLs are shown once, in the answer to the form that made it
(never in a redirect's flash cookie, which is signed but readable); afterwards
only its id and label are listed.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from adapter.api.deps import ServicesDep
from adapter.backends.local.reader import owner_key
from adapter.calendar import TokenStore, feed_urls
from adapter.calendar.tokens import LABEL_LENGTH
from adapter.ui.views import (
    FormDep,
    Page,
    _checked_post,
    _done,
    _logged_in,
    _to_login,
    _unreadable,
    router,
)

log = logging.getLogger(__name__)
OWNER_LENGTH = 320


def _render(page: Page, status_code: int = 200, **context: object) -> Response:
    try:
        tokens = TokenStore(page.services.engine).list()
    except SQLAlchemyError as exc:
        return _unreadable(page, exc)
    return page.render(
        "calendar.html",
        status_code,
        nav="calendar",
        tokens=tokens,
        label_length=LABEL_LENGTH,
        **context,
    )


@router.get("/calendar")
def calendar_page(request: Request, services: ServicesDep) -> Response:
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    return _render(Page(request, services, session))


@router.post("/calendar")
def create_feed(request: Request, services: ServicesDep, form: FormDep) -> Response:
    """A new token; the answer shows its feed URLs (all, and the owner's if one was named)."""
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    page = Page(request, services, checked)
    label = form.get("label", "").strip()
    owner = form.get("owner", "").strip()
    if len(label) > LABEL_LENGTH:
        return _render(page, 400, error=f"Label: at most {LABEL_LENGTH} characters.")
    if owner and ("@" not in owner or len(owner) > OWNER_LENGTH):
        return _render(page, 400, error="Owner: an email address, as in the mapping's owners.")
    made, secret = TokenStore(services.engine).create(label)
    log.info("dashboard made calendar feed token %s", made.id)
    base = str(request.base_url)
    feeds = [("Every meeting and open task", *feed_urls(base, secret))]
    if owner:
        feeds.append((f"{owner_key(owner)}'s only", *feed_urls(base, secret, owner_key(owner))))
    return _render(page, 200, made=made, feeds=feeds)


@router.post("/calendar/{token_id}/revoke")
def revoke_feed(request: Request, services: ServicesDep, token_id: str, form: FormDep) -> Response:
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    token = TokenStore(services.engine).revoke(token_id[:16])
    if token is None:
        return _done(services, checked, "/ui/calendar", "That feed token does not exist.")
    log.info("dashboard revoked calendar feed token %s", token.id)
    label = f" ({token.label})" if token.label else ""
    return _done(
        services,
        checked,
        "/ui/calendar",
        f"Revoked feed token {token.id}{label}: its feeds stop now.",
    )
