"""One HubSpot request budget for every process on the database
(``adapter.backends.hubspot.budget.DatabaseWindow``).

Revision ID: 0006_hubspot_rate_budget
Revises: 0005_outbox_replays
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_hubspot_rate_budget"
down_revision = "0005_outbox_replays"
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hubspot_rate_slots",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("budget", sa.String(200), nullable=False),
        sa.Column("taken_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_hubspot_rate_slots_budget", "hubspot_rate_slots", ["budget", "taken_at"])
    op.create_table(
        "hubspot_rate_holds",
        sa.Column("budget", sa.String(200), primary_key=True),
        sa.Column("held_until", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hubspot_rate_holds")
    op.drop_index("ix_hubspot_rate_slots_budget", table_name="hubspot_rate_slots")
    op.drop_table("hubspot_rate_slots")
