"""Calendar feed tokens (``adapter.calendar.tokens``): only a hash of each is stored.

Revision ID: 0018_calendar_tokens
Revises: 0017_notify_sends
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_calendar_tokens"
down_revision = "0017_notify_sends"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calendar_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("calendar_tokens")
