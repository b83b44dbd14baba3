"""``OwnerRotations``: one assignment per booking, an even spread, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from adapter import db
from adapter.owners import OwnerRotations, rotations

OWNERS = ("ada@example.com", "bo@example.com", "cy@example.com")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database: a SQLite file, then the test PostgreSQL."""
    url = (
        f"sqlite:///{tmp_path / 'owners.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    eng = db.make_engine(url)
    db.upgrade(eng)
    yield eng
    eng.dispose()


def counted(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(rotations.c.assigned)).scalar_one())


def test_a_booking_keeps_its_owner_and_bookings_take_turns(engine: Engine) -> None:
    """Bookings go round the list in order; asking again for one returns its owner."""
    owners = OwnerRotations(engine)
    first = [owners.assign(f"bk-{n}", OWNERS) for n in range(7)]
    again = [owners.assign(f"bk-{n}", OWNERS) for n in reversed(range(7))]

    assert first == [*OWNERS, *OWNERS, OWNERS[0]]
    assert again == list(reversed(first))
    assert counted(engine) == 7


def test_a_booking_whose_owner_left_the_list_is_assigned_again(engine: Engine) -> None:
    """An owner taken out of the mapping's list loses the booking; the others keep theirs."""
    owners = OwnerRotations(engine)
    before = {f"bk-{n}": owners.assign(f"bk-{n}", OWNERS) for n in range(3)}
    smaller = OWNERS[1:]
    after = {booking: owners.assign(booking, smaller) for booking in before}

    assert after["bk-1"] == before["bk-1"]
    assert after["bk-2"] == before["bk-2"]
    assert after["bk-0"] in smaller


@pytest.mark.postgres
def test_concurrent_assignments_stay_even_on_postgres(pg_url: str) -> None:
    """8 threads race on 240 bookings (two per booking): 80 per owner, counter at 240."""
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    try:
        owners = OwnerRotations(engine)
        barrier = threading.Barrier(8)

        def assign(worker: int) -> dict[str, str]:
            barrier.wait()
            # Two threads share each booking, in opposite orders, to race its assignment.
            ids = [f"bk-{(worker // 2) * 60 + n}" for n in range(60)]
            return {b: owners.assign(b, OWNERS) for b in (ids if worker % 2 else ids[::-1])}

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(assign, range(8)))
        merged: dict[str, str] = {}
        for result in results:
            for booking, owner in result.items():
                assert merged.setdefault(booking, owner) == owner, booking
        assert len(merged) == 240
        assert Counter(merged.values()) == dict.fromkeys(OWNERS, 80)
        assert counted(engine) == 240
    finally:
        engine.dispose()
