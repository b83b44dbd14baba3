"""Replay is idempotent and audited: one audit row per event actually re-queued."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from adapter.cli import app
from outbox.db import make_engine
from outbox.store import NewEvent, OutboxStore
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(outbox_engine: Engine) -> Engine:
    return outbox_engine


@pytest.fixture
def store(engine: Engine) -> OutboxStore:
    return OutboxStore(engine, clock=lambda: NOW)


def parked(store: OutboxStore, key: str, state: str) -> str:
    """An event of ``key`` left dead or quarantined by a worker."""
    new = NewEvent(
        key=key,
        kind="booking.created",
        payload={"bookingId": key},
        body_hash=f"hash-{key}",
        snapshot_at=NOW - timedelta(hours=1),
    )
    with store.transaction() as conn:
        event, _ = store.enqueue(conn, new)
    (claim,) = [c for c in store.claim("w", limit=10, lease_seconds=30) if c.event.id == event.id]
    if state == "quarantined":
        store.quarantine(event.id, claim.token, "unknown event type")
    else:
        store.mark_failed(event.id, claim.token, "400 from the CRM", retryable=False)
    return event.id


def test_replay_records_one_audit_row_per_event_requeued(store: OutboxStore) -> None:
    """A replay audits who and from which state; replaying a queued event records nothing."""
    dead = parked(store, "bk-dead", "dead")
    (event,) = store.replay([dead], actor="cli:alice")
    assert (event.state, event.attempts) == ("queued", 0)
    (again,) = store.replay([dead], actor="api")
    assert again == event
    (audit,) = store.replays(dead)
    assert (audit.actor, audit.from_state, audit.replayed_at) == ("cli:alice", "dead", NOW)
    assert store.replays("no-such-event") == []


def test_replay_state_requeues_every_event_of_that_state(store: OutboxStore) -> None:
    """Bulk replay takes every quarantined event, leaves dead ones, and is idempotent."""
    quarantined = [parked(store, f"bk-q{n}", "quarantined") for n in range(3)]
    dead = parked(store, "bk-dead", "dead")
    replayed = store.replay_state("quarantined", actor="api")
    assert sorted(e.id for e in replayed) == sorted(quarantined)
    assert {e.state for e in replayed} == {"queued"}
    assert store.replay_state("quarantined", actor="api") == []
    for event_id in quarantined:
        assert [(r.actor, r.from_state) for r in store.replays(event_id)] == [
            ("api", "quarantined")
        ]
    assert store.replays(dead) == []
    assert store.counts()["dead"] == 1
    with pytest.raises(ValueError, match="dead and quarantined"):
        store.replay_state("synced", actor="api")


def test_cli_replays_by_id_and_by_state_as_the_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``outbox replay ID`` and ``--state quarantined`` audit the actor ``cli:<user>``."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("MAPPINGS_PATH", str(DEFAULT_MAPPING))
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    engine = make_engine(url)
    store = OutboxStore(engine)
    dead = parked(store, "bk-dead", "dead")
    quarantined = [parked(store, f"bk-q{n}", "quarantined") for n in range(2)]

    by_id = runner.invoke(app, ["outbox", "replay", dead])
    assert by_id.exit_code == 0, by_id.output
    assert f"{dead}  queued" in by_id.output
    by_state = runner.invoke(app, ["outbox", "replay", "--state", "quarantined"])
    assert by_state.exit_code == 0, by_state.output
    assert "replayed 2 quarantined event(s)" in by_state.output
    for event_id in [dead, *quarantined]:
        assert [r.actor for r in store.replays(event_id)] == ["cli:alice"]
    assert runner.invoke(app, ["outbox", "replay"]).exit_code == 2
    assert runner.invoke(app, ["outbox", "replay", dead, "--state", "dead"]).exit_code == 2
    assert runner.invoke(app, ["outbox", "replay", "--state", "synced"]).exit_code == 2
    engine.dispose()
