"""The dashboard's session: a signed cookie carrying a CSRF token and whether the holder logged in.

The signing key is derived from the admin token (HMAC, never stored or logged),
so rotating ``ADMIN_TOKEN`` ends every session. The cookie is ``HttpOnly``,
``Secure`` (browsers accept it on ``http://localhost`` and ``127.0.0.1`` too)
and ``SameSite=Strict``, scoped to ``/ui``. Every form carries the session's
CSRF token, compared in constant time on each POST; a visitor who has not
logged in yet gets an anonymous session on the login page, so the login form
is protected as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "bookme_ui_session"
COOKIE_PATH = "/ui"
MAX_AGE_SECONDS = 8 * 3600
_SALT = "bookme-crm ui session"


@dataclass(frozen=True)
class Session:
    """What the cookie says: the form token, and whether the admin token was presented."""

    csrf: str
    authenticated: bool
    flash: str | None = None  # a one-time message for the next page (after a redirect)

    @classmethod
    def fresh(cls, *, authenticated: bool) -> Session:
        """A new session with a new CSRF token (login rotates it: no session fixation)."""
        return cls(csrf=secrets.token_urlsafe(32), authenticated=authenticated)

    def with_flash(self, message: str | None) -> Session:
        return Session(self.csrf, self.authenticated, message)


class SessionCodec:
    """Signs and reads the session cookie with a key derived from the admin token."""

    def __init__(self, admin_token: str) -> None:
        key = hmac.new(admin_token.encode(), b"bookme-crm ui session key v1", hashlib.sha256)
        self._serializer = URLSafeTimedSerializer(key.hexdigest(), salt=_SALT)

    def read(self, request: Request) -> Session | None:
        """The request's session, or ``None`` when absent, forged or older than 8 hours."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=MAX_AGE_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        flash = data.get("flash")
        return Session(
            csrf=data["csrf"],
            authenticated=data.get("auth") is True,
            flash=flash if isinstance(flash, str) else None,
        )

    def write(self, response: Response, session: Session) -> None:
        data: dict[str, object] = {"csrf": session.csrf, "auth": session.authenticated}
        if session.flash:
            data["flash"] = session.flash
        value = self._serializer.dumps(data)
        response.set_cookie(
            COOKIE,
            value,
            max_age=MAX_AGE_SECONDS,
            path=COOKIE_PATH,
            secure=True,
            httponly=True,
            samesite="strict",
        )


def clear(response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")


def token_matches(presented: str | None, expected: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not presented or not expected:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())
