"""Backfill positions for ``bookme-crm import --since`` (``adapter.bookme.store``).

Revision ID: 0007_bookme_backfills
Revises: 0006_hubspot_rate_budget
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_bookme_backfills"
down_revision = "0006_hubspot_rate_budget"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bookme_backfills",
        sa.Column("since", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("bookme_backfills")
