"""The replay audit: one row per event a replay re-queued (``outbox.schema.replays``).

Revision ID: 0005_outbox_replays
Revises: 0004_hubspot_ids
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_outbox_replays"
down_revision = "0004_hubspot_ids"
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox_replays",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            sa.String(36),
            sa.ForeignKey("outbox_events.id", name="fk_outbox_replays_event"),
            nullable=False,
        ),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
    )
    op.create_index("ix_outbox_replays_event", "outbox_replays", ["event_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_replays_event", table_name="outbox_replays")
    op.drop_table("outbox_replays")
