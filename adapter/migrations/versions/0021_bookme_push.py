"""Pushing CRM changes back to BookMe: the service's own extra tasks, and a lead stage set by hand.

``booking_extra_tasks`` (``adapter.changes.tasks``): tasks the service adds to a
booking beyond the mapping's ("BookMe refused the reschedule: …"), added to
each of the booking's plans so its next event does not archive them.

``crm_leads.manual_stage``: the stage a salesperson gave the lead
(``PATCH /api/leads/{id}``, the dashboard's stage picker); while set, the
lead's stage is this instead of the one derived from its meetings.

Revision ID: 0021_bookme_push
Revises: 0020_crm_poll
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_bookme_push"
down_revision = "0020_crm_poll"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "booking_extra_tasks",
        sa.Column("booking_id", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("crm_leads") as batch:
        batch.add_column(sa.Column("manual_stage", sa.String(64), nullable=True))


def downgrade() -> None:
    # recreate="never": plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), no table copy
    # (a copy of crm_leads would break the foreign keys that point at it).
    with op.batch_alter_table("crm_leads", recreate="never") as batch:
        batch.drop_column("manual_stage")
    op.drop_table("booking_extra_tasks")
