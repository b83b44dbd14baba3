"""Worker heartbeats: one row per worker process (``outbox.schema.workers``).

Revision ID: 0013_outbox_workers
Revises: 0012_crm_properties
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_outbox_workers"
down_revision = "0012_crm_properties"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_workers",
        sa.Column("worker_id", sa.String(200), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_outbox_workers_heartbeat", "outbox_workers", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_workers_heartbeat", table_name="outbox_workers")
    op.drop_table("outbox_workers")
