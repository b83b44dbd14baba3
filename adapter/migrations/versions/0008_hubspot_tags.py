"""The tags we wrote to each HubSpot contact, company and deal, so later bookings add
to them instead of replacing them (``adapter.backends.hubspot.store``).

Revision ID: 0008_hubspot_tags
Revises: 0007_bookme_backfills
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_hubspot_tags"
down_revision = "0007_bookme_backfills"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hubspot_objects") as batch:
        batch.add_column(sa.Column("tags", sa.String(2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hubspot_objects") as batch:
        batch.drop_column("tags")
