"""Owners: the round robin's counters and per-booking assignments
(``adapter.owners.store``), and ``owner_email`` on the local CRM's records.

Revision ID: 0015_owner_rotations
Revises: 0014_ui_sessions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_owner_rotations"
down_revision = "0014_ui_sessions"
branch_labels = None
depends_on = None

_OWNED = ("crm_contacts", "crm_leads", "crm_activities", "crm_tasks")


def upgrade() -> None:
    op.create_table(
        "owner_rotations",
        sa.Column("rotation_key", sa.String(64), primary_key=True),
        sa.Column("owners", sa.Text(), nullable=False),
        sa.Column("assigned", sa.Integer(), nullable=False),
    )
    op.create_table(
        "owner_assignments",
        sa.Column("booking_id", sa.String(200), primary_key=True),
        sa.Column("rotation_key", sa.String(64), nullable=False),
        sa.Column("owner_email", sa.String(320), nullable=False),
    )
    for table in _OWNED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("owner_email", sa.String(320), nullable=True))
    op.create_index("ix_crm_leads_owner_email", "crm_leads", ["owner_email"])
    op.create_index(
        "ix_crm_tasks_owner_status_due", "crm_tasks", ["owner_email", "status", "due_date"]
    )


def downgrade() -> None:
    op.drop_index("ix_crm_tasks_owner_status_due", table_name="crm_tasks")
    op.drop_index("ix_crm_leads_owner_email", table_name="crm_leads")
    # recreate="never": plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+); a table
    # copy would drop crm_activities under crm_tasks' foreign key.
    for table in reversed(_OWNED):
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column("owner_email")
    op.drop_table("owner_assignments")
    op.drop_table("owner_rotations")
