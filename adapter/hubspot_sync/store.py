"""``hubspot_poll``: where the poll stands, who polls, and what it learned (migration 0020).

Rows by ``name``:

- ``meetings``, ``tasks``, ``deals``: ``position_ms``, the newest
  ``hs_lastmodifieddate`` (epoch ms) whose changes are committed. It only moves
  forward, in the transaction that records the changes it covers, so a process
  killed between a read and its commit reads the same page again.
- ``lease``: ``owner`` and ``lease_until``. A poll runs only while it holds the
  lease, taken with one conditional UPDATE (``lease_until`` passed, or ours
  already), which works alike on SQLite and PostgreSQL: several processes never
  poll at once, and a dead poller's lease simply expires.
- ``source``: ``value`` is the HubSpot source of this service's own writes
  (``sourceType:sourceId`` of the history entries that carry values it wrote),
  learned from the first value it reads back that it wrote.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    Text,
    or_,
    select,
    update,
)

from adapter.backends.local.models import UtcDateTime
from adapter.db import upsert_insert

poll_metadata = MetaData()

hubspot_poll = Table(
    "hubspot_poll",
    poll_metadata,
    Column("name", String(32), primary_key=True),
    Column("position_ms", BigInteger(), nullable=True),
    Column("owner", String(200), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("value", Text(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=True),
)

LEASE = "lease"
SOURCE = "source"


def position(conn: Connection, object_type: str) -> int | None:
    """The committed poll position of ``object_type`` (epoch ms), or ``None`` before the first."""
    found = conn.execute(
        select(hubspot_poll.c.position_ms).where(hubspot_poll.c.name == object_type)
    ).scalar()
    return None if found is None else int(found)


def advance(conn: Connection, object_type: str, position_ms: int, now: datetime) -> None:
    """Move ``object_type``'s position to ``position_ms`` unless it is already further."""
    insert = upsert_insert(conn, hubspot_poll).values(
        name=object_type, position_ms=position_ms, updated_at=now
    )
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[hubspot_poll.c.name],
            set_={"position_ms": position_ms, "updated_at": now},
            where=or_(
                hubspot_poll.c.position_ms.is_(None), hubspot_poll.c.position_ms < position_ms
            ),
        )
    )


def take_lease(conn: Connection, owner: str, seconds: float, now: datetime) -> bool:
    """Take (or renew) the poll's lease for ``seconds``; ``False`` while another holds it."""
    taken = conn.execute(
        update(hubspot_poll)
        .where(
            hubspot_poll.c.name == LEASE,
            or_(
                hubspot_poll.c.lease_until.is_(None),
                hubspot_poll.c.lease_until <= now,
                hubspot_poll.c.owner == owner,
            ),
        )
        .values(owner=owner, lease_until=now + timedelta(seconds=seconds), updated_at=now)
    )
    return taken.rowcount == 1


def release_lease(conn: Connection, owner: str, now: datetime) -> None:
    """Give the lease up now (only if still ours)."""
    conn.execute(
        update(hubspot_poll)
        .where(hubspot_poll.c.name == LEASE, hubspot_poll.c.owner == owner)
        .values(lease_until=now, updated_at=now)
    )


def own_source(conn: Connection) -> str | None:
    """The learned ``sourceType:sourceId`` of this service's writes, if known."""
    value = conn.execute(select(hubspot_poll.c.value).where(hubspot_poll.c.name == SOURCE)).scalar()
    return None if value is None else str(value)


def learn_source(conn: Connection, source: str, now: datetime) -> None:
    insert = upsert_insert(conn, hubspot_poll).values(name=SOURCE, value=source, updated_at=now)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[hubspot_poll.c.name], set_={"value": source, "updated_at": now}
        )
    )
