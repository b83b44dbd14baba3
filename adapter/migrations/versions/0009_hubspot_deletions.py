"""Which HubSpot records someone deleted there, and whether they were created again
(``adapter.backends.hubspot.store.mark_deleted``; the dashboard's sync page lists them).

Revision ID: 0009_hubspot_deletions
Revises: 0008_hubspot_tags
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_hubspot_deletions"
down_revision = "0008_hubspot_tags"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hubspot_objects") as batch:
        batch.add_column(sa.Column("deleted_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hubspot_objects") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("deleted_id")
