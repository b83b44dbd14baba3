"""Mapped CRM properties of the local CRM's records (``adapter.backends.local.properties``).

Revision ID: 0012_crm_properties
Revises: 0011_hubspot_pauses
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_crm_properties"
down_revision = "0011_hubspot_pauses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_properties",
        sa.Column("record_type", sa.String(16), nullable=False),
        sa.Column("record_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("version", sa.String(240), server_default="", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("record_type", "record_id", "name", name="pk_crm_properties"),
        sa.CheckConstraint(
            "record_type IN ('contact', 'company', 'lead', 'meeting', 'task')",
            name="ck_crm_properties_record_type",
        ),
    )


def downgrade() -> None:
    op.drop_table("crm_properties")
