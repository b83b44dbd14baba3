"""The transactional outbox.

Revision ID: 0001_outbox
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_outbox"
down_revision = None
branch_labels = None
depends_on = None

_seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("seq", _seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("webhook_id", sa.String(200), nullable=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("snapshot_at", _ts, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", _ts, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("received_at", _ts, nullable=False),
        sa.Column("synced_at", _ts, nullable=True),
        sa.Column("updated_at", _ts, nullable=False),
        sa.Column("lease_token", sa.String(36), nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", _ts, nullable=True),
        sa.UniqueConstraint("id", name="uq_outbox_events_id"),
        sa.UniqueConstraint("webhook_id", name="uq_outbox_events_webhook_id"),
        sa.UniqueConstraint("key", "body_hash", name="uq_outbox_events_key_body"),
    )
    op.create_index("ix_outbox_events_due", "outbox_events", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_events_key_seq", "outbox_events", ["key", "seq"])


def downgrade() -> None:
    op.drop_table("outbox_events")
