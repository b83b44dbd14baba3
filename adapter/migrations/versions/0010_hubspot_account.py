"""What the HubSpot portal told us about itself (``adapter.backends.hubspot.account``):
its id and the app host the dashboard links into (``app-eu1.hubspot.com`` in the EU).

Revision ID: 0010_hubspot_account
Revises: 0009_hubspot_deletions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_hubspot_account"
down_revision = "0009_hubspot_deletions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hubspot_account",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(500), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hubspot_account")
