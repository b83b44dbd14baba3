"""HubSpot ids of our records, and create intents (``adapter.backends.hubspot.store``).

Revision ID: 0004_hubspot_ids
Revises: 0003_lifecycle
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_hubspot_ids"
down_revision = "0003_lifecycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hubspot_objects",
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("natural_key", sa.String(600), nullable=False),
        sa.Column("hubspot_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lead_key", sa.String(600), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("links", sa.String(600), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("object_type", "natural_key", name="uq_hubspot_objects_key"),
    )
    op.create_index("ix_hubspot_objects_lead", "hubspot_objects", ["object_type", "lead_key"])


def downgrade() -> None:
    op.drop_index("ix_hubspot_objects_lead", table_name="hubspot_objects")
    op.drop_table("hubspot_objects")
