"""The HubSpot request budget in the database: one portal, one budget, however many processes.

Each ``DatabaseWindow`` here has its own engine, as a separate worker process
would; they meet only in the database.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from adapter import db
from adapter.backends.hubspot.budget import (
    DatabaseWindow,
    budget_metadata,
    portal_budget_name,
    rate_slots,
)
from outbox.db import make_engine


class FakeTime:
    """A clock and a sleep that advances it, shared by every window of a test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    engine = make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    return url


def _windows(url: str, n: int, limit: int, window: float, t: FakeTime) -> list[DatabaseWindow]:
    return [
        DatabaseWindow(
            make_engine(url), "requests:x", limit, window, clock=t.clock, sleep=t.sleep, margin=0.0
        )
        for _ in range(n)
    ]


def test_processes_share_one_budget(sqlite_file: str) -> None:
    """Three "processes" of limit 4: the fifth slot, whoever asks, waits for the window."""
    t = FakeTime()
    a, b, c = _windows(sqlite_file, 3, 4, 10.0, t)
    for window in (a, b, c, a):
        assert window.acquire() == 0.0
    assert t.slept == []
    waited = b.acquire()  # the budget is full, though b itself took only one slot
    assert waited == pytest.approx(10.0, abs=0.03)


def test_a_hold_stops_every_process_and_is_never_shortened(sqlite_file: str) -> None:
    t = FakeTime()
    a, b = _windows(sqlite_file, 2, 100, 10.0, t)
    a.hold(5.0)
    b.hold(1.0)  # a shorter hint from another process does not cut the first one short
    assert b.acquire() == pytest.approx(5.0, abs=0.03)


def test_slots_older_than_the_window_are_freed_and_deleted(sqlite_file: str) -> None:
    t = FakeTime()
    (a,) = _windows(sqlite_file, 1, 2, 10.0, t)
    a.acquire()
    a.acquire()
    t.now += 10.5
    assert a.acquire() == 0.0
    with a._engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rate_slots)).scalar_one() == 1


def test_budget_names_are_stable_and_keep_no_token() -> None:
    name = portal_budget_name("https://api.hubapi.com/", "pat-na1-secret", "requests")
    assert name == portal_budget_name("https://api.hubapi.com", "pat-na1-secret", "requests")
    assert name != portal_budget_name("https://api.hubapi.com", "pat-na1-other", "requests")
    assert "secret" not in name
    assert name.startswith("requests:")


def _grant_times(url: str, processes: int, each: int, limit: int, window: float) -> list[float]:
    """``processes`` windows on their own engines take ``each`` slots at once, in threads."""
    engines = [make_engine(url) for _ in range(processes)]
    grants: list[float] = []
    lock = threading.Lock()

    def run(engine: Engine) -> None:
        budget = DatabaseWindow(engine, "requests:real", limit, window, margin=0.0)
        for _ in range(each):
            budget.acquire()
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert len(grants) == processes * each
    return sorted(grants)


@pytest.mark.postgres
def test_postgres_processes_share_one_budget_on_the_server_clock(pg_url: str) -> None:
    """4 engines × 5 slots against a budget of 5 per 0.5 s: 20 slots span at least 3 windows."""
    engine = make_engine(pg_url)
    db.upgrade(engine)
    engine.dispose()
    grants = _grant_times(pg_url, 4, 5, 5, 0.5)
    # The 6th, 11th and 16th slot each had to wait a whole window after the 1st, 6th, 11th.
    assert grants[-1] - grants[0] >= 3 * 0.5 - 0.05


def test_sqlite_processes_share_one_budget(sqlite_file: str) -> None:
    grants = _grant_times(sqlite_file, 4, 5, 5, 0.5)
    assert grants[-1] - grants[0] >= 3 * 0.5 - 0.05


def test_migration_matches_the_budget_tables(sqlite_file: str) -> None:
    """Migration 0006 creates the budget tables exactly as ``budget`` defines them."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(sqlite_file)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), budget_metadata)
    finally:
        engine.dispose()
    assert [d for d in diff if "hubspot_rate" in repr(d)] == []
