"""Changes made in the CRM (``adapter.changes``): the history, and per object what we
wrote and what the CRM last showed.

Revision ID: 0019_crm_changes
Revises: 0018_calendar_tokens
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019_crm_changes"
down_revision = "0018_calendar_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedupe_key", sa.String(64), nullable=False, unique=True),
        sa.Column("booking_id", sa.String(200), nullable=False),
        sa.Column("lead_key", sa.String(600), nullable=True),
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("crm_id", sa.String(64), nullable=False),
        sa.Column("task_key", sa.String(100), nullable=True),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("old_value", sa.Text, nullable=True),
        sa.Column("new_value", sa.Text, nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(320), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("push_event_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_crm_changes_booking_changed", "crm_changes", ["booking_id", "changed_at"])
    op.create_index("ix_crm_changes_field_changed", "crm_changes", ["field", "changed_at"])
    op.create_index("ix_crm_changes_lead_key", "crm_changes", ["lead_key"])
    op.create_table(
        "crm_field_state",
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("crm_id", sa.String(64), nullable=False),
        sa.Column("booking_id", sa.String(200), nullable=False),
        sa.Column("lead_key", sa.String(600), nullable=True),
        sa.Column("task_key", sa.String(100), nullable=True),
        sa.Column("written", sa.Text, nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen", sa.Text, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("object_type", "crm_id", name="pk_crm_field_state"),
    )
    op.create_index("ix_crm_field_state_booking", "crm_field_state", ["booking_id"])


def downgrade() -> None:
    op.drop_table("crm_field_state")
    op.drop_table("crm_changes")
