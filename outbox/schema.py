"""The outbox's tables. Migrations (in the adapter) mirror these definitions."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

outbox_metadata = MetaData()

# Integer on SQLite so that the primary key is the rowid (auto-increment).
_Seq = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "outbox_events",
    outbox_metadata,
    # Receipt order; the public id is ``id``.
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False),
    # Ordering key: events of one key are handed out one at a time, in order.
    Column("key", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("webhook_id", String(200), nullable=True),
    Column("body_hash", String(64), nullable=False),
    Column("snapshot_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("result", Text, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("synced_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("lease_token", String(36), nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("id", name="uq_outbox_events_id"),
    UniqueConstraint("webhook_id", name="uq_outbox_events_webhook_id"),
    UniqueConstraint("key", "body_hash", name="uq_outbox_events_key_body"),
    Index("ix_outbox_events_due", "state", "next_attempt_at"),
    Index("ix_outbox_events_key_seq", "key", "seq"),
    # A claim's per-key look-ups (newest synced snapshot, older pending ones to
    # supersede) read only the key's rows, not every event in the state.
    Index("ix_outbox_events_key_state", "key", "state", "snapshot_at"),
    # A period's deliveries and sync times (the adapter's insights) read this index alone.
    Index("ix_outbox_events_received", "received_at", "kind", "state", "synced_at"),
    # The days whose events changed since insights last summed them up.
    Index("ix_outbox_events_updated", "updated_at"),
)

# One row per replay that actually re-queued an event (who, when, from which state).
replays = Table(
    "outbox_replays",
    outbox_metadata,
    Column("id", _Seq, primary_key=True, autoincrement=True),
    Column(
        "event_id",
        String(36),
        ForeignKey("outbox_events.id", name="fk_outbox_replays_event"),
        nullable=False,
    ),
    Column("replayed_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("from_state", String(16), nullable=False),
    Index("ix_outbox_replays_event", "event_id", "id"),
)

# One row per worker process, its heartbeat refreshed every few seconds. A row
# whose heartbeat is stale names a dead (or paused) process: its claims are taken
# over without waiting for their leases (``OutboxStore.take_over_stale``).
workers = Table(
    "outbox_workers",
    outbox_metadata,
    # host:pid:nonce, the prefix of every ``lease_owner`` the process writes.
    Column("worker_id", String(200), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Index("ix_outbox_workers_heartbeat", "heartbeat_at"),
)
