"""Feed tokens: the secret in a calendar feed's URL, stored only as its SHA-256.

A token is shown once, when it is made (``bookme-crm calendar token create`` or
the dashboard); the database keeps its hash, so a copy of the database names no
working feed URL. A token has a short public id for listing and revoking.
Revoking keeps the row (who made what, and when it stopped) and makes the feed
a 404 at once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, insert, select, update

from adapter.timeutil import as_utc, utcnow

TOKEN_PREFIX = "bcal_"  # noqa: S105 - a prefix, not a secret
"""Marks a feed token in text, so the log redactor (``adapter.logs``) can mask it in URLs."""
LABEL_LENGTH = 200

calendar_metadata = MetaData()
# Mirrored by migration 0018_calendar_tokens.
calendar_tokens = Table(
    "calendar_tokens",
    calendar_metadata,
    Column("id", String(16), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("label", String(LABEL_LENGTH), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class CalendarToken:
    """A token as listed: never the secret itself."""

    id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _token(row: object) -> CalendarToken:
    mapping = row._mapping  # type: ignore[attr-defined]
    revoked = mapping["revoked_at"]
    return CalendarToken(
        id=mapping["id"],
        label=mapping["label"],
        created_at=as_utc(mapping["created_at"]),
        revoked_at=None if revoked is None else as_utc(revoked),
    )


class TokenStore:
    """Every statement on ``calendar_tokens``."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._clock = clock

    def create(self, label: str) -> tuple[CalendarToken, str]:
        """A new token and its secret (the only time the secret is known)."""
        label = label.strip()[:LABEL_LENGTH]
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(4)
        now = self._clock()
        with self._engine.begin() as conn:
            conn.execute(
                insert(calendar_tokens).values(
                    id=token_id, token_hash=_hash(secret), label=label, created_at=now
                )
            )
        return CalendarToken(token_id, label, now, None), secret

    def list(self) -> list[CalendarToken]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(calendar_tokens).order_by(calendar_tokens.c.created_at, calendar_tokens.c.id)
            )
            return [_token(row) for row in rows]

    def revoke(self, token_id: str) -> CalendarToken | None:
        """Revoke by public id; ``None`` when there is no such token. Revoking twice is a no-op."""
        with self._engine.begin() as conn:
            conn.execute(
                update(calendar_tokens)
                .where(calendar_tokens.c.id == token_id, calendar_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            row = conn.execute(
                select(calendar_tokens).where(calendar_tokens.c.id == token_id)
            ).first()
        return None if row is None else _token(row)

    def is_active(self, secret: str) -> bool:
        """Whether ``secret`` is a token that has not been revoked.

        The lookup is by hash, so the comparison never runs over the secret itself.
        """
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
            return False
        reads = self._engine.execution_options(sqlite_begin="DEFERRED")
        with reads.connect() as conn:
            found = conn.execute(
                select(calendar_tokens.c.id).where(
                    calendar_tokens.c.token_hash == _hash(secret),
                    calendar_tokens.c.revoked_at.is_(None),
                )
            ).first()
        return found is not None


def feed_urls(base_url: str, secret: str, owner: str | None = None) -> tuple[str, str]:
    """The feed's ``https``/``http`` URL and the same as a ``webcal://`` subscription link."""
    base = base_url.rstrip("/")
    path = f"/calendar/{secret}" + (f"/owner/{quote(owner, safe='@')}" if owner else "") + ".ics"
    url = base + path
    scheme, _, rest = url.partition("://")
    return url, "webcal://" + rest if scheme in ("http", "https") else url
