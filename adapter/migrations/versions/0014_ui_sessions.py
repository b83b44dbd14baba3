"""Server-side dashboard sessions, so logout ends a session (``adapter.ui.session``).

Revision ID: 0014_ui_sessions
Revises: 0013_outbox_workers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_ui_sessions"
down_revision = "0013_outbox_workers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ui_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ui_sessions")
