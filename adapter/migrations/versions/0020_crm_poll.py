"""The HubSpot poll's position per object type, its lease, and what it learned
(``adapter.hubspot_sync.store``).

Revision ID: 0020_crm_poll
Revises: 0019_crm_changes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020_crm_poll"
down_revision = "0019_crm_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hubspot_poll",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("position_ms", sa.BigInteger(), nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
    )
    # The lease row exists from the start: taking it is one conditional UPDATE.
    op.execute("INSERT INTO hubspot_poll (name) VALUES ('lease')")


def downgrade() -> None:
    op.drop_table("hubspot_poll")
