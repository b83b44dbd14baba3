"""Automatic emails: one row per automatic task's send (``adapter.notify.store``).

Revision ID: 0017_notify_sends
Revises: 0016_outbox_key_state
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_notify_sends"
down_revision = "0016_outbox_key_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_sends",
        sa.Column("booking_id", sa.String(200), nullable=False),
        sa.Column("task_key", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("to_address", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("booking_id", "task_key", name="pk_notify_sends"),
    )
    op.create_index("ix_notify_sends_state_due", "notify_sends", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_notify_sends_state_due", table_name="notify_sends")
    op.drop_table("notify_sends")
