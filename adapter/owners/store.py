"""The round robin's state: one counter per rotation, one assignment per booking.

A booking is assigned once and keeps its owner through retries, replays,
reschedules and any number of workers, because the assignment is a row keyed
by ``booking_id``, read before anything is counted. A new assignment takes
the rotation's counter with one ``INSERT ... ON CONFLICT DO UPDATE ...
RETURNING`` (atomic on SQLite and PostgreSQL, where it row-locks the counter)
in the same transaction that stores the assignment, so every count is one
assigned booking and the spread stays even (``n`` bookings over ``k`` owners:
each gets ``n // k`` or one more).

The assignment commits on its own, before the CRM is written: a CRM write
that fails and is retried finds the booking already assigned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from adapter.db import upsert_insert

owners_metadata = MetaData()

rotations = Table(
    "owner_rotations",
    owners_metadata,
    Column("rotation_key", String(64), primary_key=True),
    Column("owners", Text, nullable=False),
    Column("assigned", Integer, nullable=False),
)

assignments = Table(
    "owner_assignments",
    owners_metadata,
    Column("booking_id", String(200), primary_key=True),
    Column("rotation_key", String(64), nullable=False),
    Column("owner_email", String(320), nullable=False),
)


def rotation_key(owners: Sequence[str]) -> str:
    """One counter per list of owners, in order: event types that name the same
    list share it, so each salesperson's share is even across them."""
    return hashlib.sha256("\n".join(owners).encode()).hexdigest()[:32]


class OwnerRotations:
    """Assigns bookings to owners of a rotation, on the outbox's database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def assign(self, booking_id: str, owners: Sequence[str]) -> str:
        """The owner of ``booking_id`` in the rotation ``owners``: the stored one while
        it is still in the list, else the rotation's next (then stored)."""
        if not owners:
            raise ValueError("a rotation needs at least one owner")
        key = rotation_key(owners)
        for _ in range(3):
            try:
                return self._assign(booking_id, owners, key)
            except IntegrityError:
                # Another worker assigned this booking just now (a lease taken
                # over mid-batch); its transaction won, so read its choice.
                continue
        return self._assign(booking_id, owners, key)

    def _assign(self, booking_id: str, owners: Sequence[str], key: str) -> str:
        with self._engine.begin() as conn:
            stored: str | None = conn.execute(
                select(assignments.c.owner_email).where(assignments.c.booking_id == booking_id)
            ).scalar_one_or_none()
            if stored is not None and stored in owners:
                return stored
            counter = upsert_insert(conn, rotations).values(
                rotation_key=key, owners="\n".join(owners), assigned=1
            )
            count = conn.execute(
                counter.on_conflict_do_update(
                    index_elements=[rotations.c.rotation_key],
                    set_={"assigned": rotations.c.assigned + 1},
                ).returning(rotations.c.assigned)
            ).scalar_one()
            owner: str = owners[(count - 1) % len(owners)]
            if stored is None:
                conn.execute(
                    insert(assignments).values(
                        booking_id=booking_id, rotation_key=key, owner_email=owner
                    )
                )
            else:  # the mapping's list no longer has the stored owner
                conn.execute(
                    update(assignments)
                    .where(assignments.c.booking_id == booking_id)
                    .values(rotation_key=key, owner_email=owner)
                )
            return owner
