"""Where a backfill stands, kept in the service's database so an interrupted run resumes.

One row per ``since``: the cursor of the next page to fetch (``NULL``: the
first), the pages done in this pass, and when the pass completed. A page's
cursor is saved only after every booking on it was accepted, so an
interruption repeats at most one page — harmless, since imports are
idempotent. Migration ``0007_bookme_backfills`` mirrors this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    update,
)

from adapter.db import upsert_insert
from adapter.timeutil import as_utc, utcnow

__all__ = ["BackfillPosition", "BackfillStore", "backfills", "bookme_metadata"]

bookme_metadata = MetaData()

backfills = Table(
    "bookme_backfills",
    bookme_metadata,
    Column("since", String(64), primary_key=True),
    Column("cursor", Text, nullable=True),
    Column("pages", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class BackfillPosition:
    """Where the pass for ``since`` stands; ``resumed`` when it continues an interrupted one."""

    since: str
    cursor: str | None
    pages: int
    resumed: bool


class BackfillStore:
    """Reads and moves the backfill position; every statement on ``bookme_backfills``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def begin(self, since: str) -> BackfillPosition:
        """Resume the unfinished pass for ``since``, or start a new one from the first page."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(backfills).where(backfills.c.since == since)).first()
            if row is not None and row.completed_at is None:
                return BackfillPosition(since, row.cursor, row.pages, resumed=True)
            stmt = upsert_insert(conn, backfills).values(
                since=since, cursor=None, pages=0, started_at=now, updated_at=now, completed_at=None
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[backfills.c.since],
                    set_={
                        "cursor": None,
                        "pages": 0,
                        "started_at": now,
                        "updated_at": now,
                        "completed_at": None,
                    },
                )
            )
        return BackfillPosition(since, None, 0, resumed=False)

    def advance(self, since: str, next_cursor: str | None) -> None:
        """Record a page as done: the next run starts at ``next_cursor``."""
        with self.engine.begin() as conn:
            conn.execute(
                update(backfills)
                .where(backfills.c.since == since)
                .values(cursor=next_cursor, pages=backfills.c.pages + 1, updated_at=utcnow())
            )

    def complete(self, since: str) -> None:
        """Mark the pass done: a next run with this ``since`` starts over, finding nothing new."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(backfills)
                .where(backfills.c.since == since)
                .values(cursor=None, updated_at=now, completed_at=now)
            )

    def completed_at(self, since: str) -> datetime | None:
        """When the last pass for ``since`` completed, or ``None``."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(backfills.c.completed_at).where(backfills.c.since == since)
            ).scalar()
        return None if value is None else as_utc(value)
