"""The local CRM's owners: who owns a shared lead does not depend on arrival order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from adapter import db
from adapter.backends.local import leads
from adapter.backends.local.backend import write_plan
from adapter.booking import parse_booking
from adapter.mapping import load_mapping, plan_booking
from adapter.plan import BookingPlan, OwnerPlan
from tests.conftest import DEFAULT_MAPPING, seed_booking

NOW = datetime(2026, 11, 1, tzinfo=UTC)
MAPPING = load_mapping(DEFAULT_MAPPING)


def owned_plan(booking_id: str, owner: str, updated: datetime) -> BookingPlan:
    """A workshop booking of one contact (so one lead), owned by ``owner``."""
    body = seed_booking(bookingId=booking_id, updatedAt=updated.isoformat())
    plan = plan_booking(parse_booking(body), MAPPING, now=NOW)
    return plan.model_copy(update={"owner": OwnerPlan(email=owner)})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("newest_first", [False, True])
def test_a_lead_belongs_to_its_newest_bookings_owner_in_any_order(
    engine: Engine, newest_first: bool
) -> None:
    """Two bookings of one lead with different owners: the newer booking's owner wins."""
    older = owned_plan("bk-1", "ada@example.com", NOW)
    newer = owned_plan("bk-2", "bo@example.com", NOW + timedelta(hours=1))
    with engine.begin() as conn:
        for plan in (newer, older) if newest_first else (older, newer):
            write_plan(conn, plan)
        owners = conn.execute(select(leads.c.owner_email)).scalars().all()
    assert owners == ["bo@example.com"]
