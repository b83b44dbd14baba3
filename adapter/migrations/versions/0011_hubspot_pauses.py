"""HubSpot pauses and the limit HubSpot reports, beside the shared budget's holds
(``adapter.backends.hubspot.budget.DatabaseWindow.pause`` / ``observe``).

Revision ID: 0011_hubspot_pauses
Revises: 0010_hubspot_account
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_hubspot_pauses"
down_revision = "0010_hubspot_account"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hubspot_rate_holds") as table:
        table.add_column(sa.Column("paused_until", sa.Float(), nullable=True))
        table.add_column(sa.Column("pause_reason", sa.String(500), nullable=True))
        table.add_column(sa.Column("limit_seen", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hubspot_rate_holds") as table:
        table.drop_column("limit_seen")
        table.drop_column("pause_reason")
        table.drop_column("paused_until")
