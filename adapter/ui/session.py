"""The dashboard's session: a signed cookie carrying a CSRF token and whether the holder logged in.

A logged-in cookie also names a server-side session (a row in ``ui_sessions``,
keyed by the SHA-256 of its random id): logout deletes the row, so a copied
cookie is refused after logout instead of working for its remaining 8 hours.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Column, Engine, Float, MetaData, String, Table, delete, insert, select
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "bookme_ui_session"
COOKIE_PATH = "/ui"
MAX_AGE_SECONDS = 8 * 3600
_SALT = "bookme-crm ui session"

ui_metadata = MetaData()
# Mirrored by migration 0014_ui_sessions.
ui_sessions = Table(
    "ui_sessions",
    ui_metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),  # Unix time
)


def _hash(session_id: str) -> str:
    # Only the hash is stored: a copy of the database names no usable session.
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """The logged-in sessions the server still honours; every statement on ``ui_sessions``."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def open(self) -> str:
        """A new session id, live for ``MAX_AGE_SECONDS``; expired rows are swept here."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        with self._engine.begin() as conn:
            conn.execute(delete(ui_sessions).where(ui_sessions.c.expires_at < now))
            conn.execute(
                insert(ui_sessions).values(
                    id_hash=_hash(session_id), expires_at=now + MAX_AGE_SECONDS
                )
            )
        return session_id

    def is_live(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        with self._engine.connect() as conn:
            expires = conn.execute(
                select(ui_sessions.c.expires_at).where(ui_sessions.c.id_hash == _hash(session_id))
            ).scalar()
        return expires is not None and expires > self._clock()

    def end(self, session_id: str | None) -> None:
        if session_id:
            with self._engine.begin() as conn:
                conn.execute(delete(ui_sessions).where(ui_sessions.c.id_hash == _hash(session_id)))


@dataclass(frozen=True)
class Session:
    """What the cookie says: the form token, and whether the admin token was presented."""

    csrf: str
    authenticated: bool
    flash: str | None = None  # a one-time message for the next page (after a redirect)
    sid: str | None = None  # the server-side session (``SessionStore``) once logged in

    @classmethod
    def fresh(cls, *, authenticated: bool, sid: str | None = None) -> Session:
        """A new session with a new CSRF token (login rotates it: no session fixation)."""
        return cls(csrf=secrets.token_urlsafe(32), authenticated=authenticated, sid=sid)

    def with_flash(self, message: str | None) -> Session:
        return replace(self, flash=message)


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
        sid = data.get("sid")
        return Session(
            csrf=data["csrf"],
            authenticated=data.get("auth") is True,
            flash=flash if isinstance(flash, str) else None,
            sid=sid if isinstance(sid, str) else None,
        )

    def write(self, response: Response, session: Session) -> None:
        data: dict[str, object] = {"csrf": session.csrf, "auth": session.authenticated}
        if session.flash:
            data["flash"] = session.flash
        if session.sid:
            data["sid"] = session.sid
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
