"""Worker heartbeats: a silent process's claims taken over, a live one's kept, fencing kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from adapter.cli import app
from adapter.heartbeat import Heartbeat, process_worker_id
from adapter.settings import Settings
from adapter.worker import default_owner
from outbox.db import make_engine
from outbox.exceptions import LeaseLost
from outbox.store import OutboxStore
from tests.unit.test_outbox_store import Clock, new


@pytest.fixture
def engine(outbox_engine: Engine) -> Engine:
    """The bare outbox of ``tests/conftest.py``, on SQLite and again on PostgreSQL."""
    return outbox_engine


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, clock: Clock) -> OutboxStore:
    return OutboxStore(engine, clock=clock)


runner = CliRunner()

DEAD = "host-a:11:aaaa1111"
LIVE = "host-b:22:bbbb2222"


def _enqueue(store: OutboxStore, n: int) -> None:
    with store.transaction() as conn:
        for i in range(n):
            store.enqueue(conn, new(key=f"bk{i}", body=str(i)))


def test_stale_worker_claims_taken_over_and_its_settle_fenced(
    store: OutboxStore, clock: Clock
) -> None:
    """A process silent past the limit loses its claims to others at once; its settle is refused."""
    _enqueue(store, 3)
    store.beat(DEAD)
    held = store.claim(f"{DEAD}:7", limit=10, lease_seconds=60)
    assert len(held) == 3
    clock.advance(9)
    store.beat(LIVE)
    assert store.take_over_stale(8) == {DEAD: 3}
    assert [worker for worker, _ in store.live_workers()] == [LIVE]
    taken = store.claim(f"{LIVE}:1", limit=10, lease_seconds=60)  # long before the lease ends
    assert sorted(c.event.id for c in taken) == sorted(c.event.id for c in held)
    with pytest.raises(LeaseLost), store.transaction() as conn:
        store.mark_synced(conn, held[0].event.id, held[0].token, {})
    with store.transaction() as conn:
        store.mark_synced(conn, taken[0].event.id, taken[0].token, {})
    assert store.get(taken[0].event.id).state == "synced"  # type: ignore[union-attr]


def test_live_worker_keeps_its_claims(store: OutboxStore, clock: Clock) -> None:
    """A heartbeat within the limit keeps the claims; a stale id never frees a longer id's."""
    _enqueue(store, 2)
    store.beat(LIVE)
    store.beat("host-b:22:bbbb")  # a prefix of LIVE, without the ':'
    mine = store.claim(f"{LIVE}:1", limit=10, lease_seconds=60)
    assert len(mine) == 2
    clock.advance(7)
    assert store.take_over_stale(8) == {}
    store.beat(LIVE)
    clock.advance(7)
    assert store.take_over_stale(8) == {"host-b:22:bbbb": 0}
    assert store.claim("someone-else:1", limit=10, lease_seconds=60) == []
    with store.transaction() as conn:
        store.mark_synced(conn, mine[0].event.id, mine[0].token, {})


def test_paused_worker_comes_back_as_a_new_live_process(store: OutboxStore, clock: Clock) -> None:
    """After its claims were taken over, a resumed process's next beat registers it again."""
    _enqueue(store, 1)
    beat = Heartbeat(store, DEAD, interval=2, stale_after=8)
    beat.beat_once()
    store.claim(f"{DEAD}:3", limit=1, lease_seconds=60)
    clock.advance(20)
    other = Heartbeat(store, LIVE, interval=2, stale_after=8)
    assert other.beat_once() == {DEAD: 1}
    assert beat.beat_once() == {}
    assert sorted(worker for worker, _ in store.live_workers()) == [DEAD, LIVE]


def test_lease_owner_starts_with_the_process_worker_id() -> None:
    """Every worker thread's lease owner is the heartbeat id plus a ':' and its thread."""
    worker_id = process_worker_id()
    assert default_owner().startswith(f"{worker_id}:")
    assert len(worker_id.split(":")) == 3


def test_stale_limit_must_span_several_beats() -> None:
    """A stale limit under two heartbeats is refused: a late beat would lose live claims."""
    with pytest.raises(ValueError, match="WORKER_STALE_SECONDS"):
        Settings(worker_heartbeat_seconds=5, worker_stale_seconds=6)


def test_outbox_status_lists_worker_heartbeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """outbox status shows each worker process's last beat, and flags a stale one."""
    db_url = f"sqlite:///{tmp_path / 'status.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    engine = make_engine(db_url)
    try:
        past = Clock()
        past.now = datetime.now(UTC) - timedelta(seconds=60)
        OutboxStore(engine, clock=past).beat(DEAD)
        OutboxStore(engine).beat(LIVE)
    finally:
        engine.dispose()
    result = runner.invoke(app, ["outbox", "status"])
    assert result.exit_code == 0, result.output
    assert "workers: 2 with a heartbeat" in result.stdout
    assert f"{DEAD}  last beat 60." in result.stdout
    assert "stale: its claims are taken over" in result.stdout.split(DEAD)[1].split("\n")[0]
    assert "stale" not in result.stdout.split(LIVE)[1]
