"""Insights (``adapter.insights``): the bookings projection, closed days' figures,
refused deliveries, the last duplicate check, and the indexes a year's report needs.

Revision ID: 0022_insights_indexes
Revises: 0021_bookme_push
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_insights_indexes"
down_revision = "0021_bookme_push"
branch_labels = None
depends_on = None

_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "insights_bookings",
        sa.Column("booking_id", sa.String(200), primary_key=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot_seq", _Seq, nullable=False),
        sa.Column("first_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("crm_outcome", sa.String(32), nullable=True),
        sa.Column("crm_outcome_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("advanced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("won_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(320), nullable=True),
    )
    op.create_index(
        "ix_insights_bookings_received", "insights_bookings", ["received_at", "event_type"]
    )
    op.create_index("ix_insights_bookings_owner", "insights_bookings", ["owner"])
    op.create_table(
        "insights_days",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("event_type", sa.String(200), primary_key=True),
        sa.Column("states", sa.Text, nullable=False),
        sa.Column("sync_ms", sa.Text, nullable=False),
        sa.Column("sync_sum", sa.Float, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "insights_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "webhook_refusals",
        sa.Column("id", _Seq, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("webhook_id", sa.String(200), nullable=True),
    )
    op.create_index("ix_webhook_refusals_received", "webhook_refusals", ["received_at"])
    op.create_table(
        "insights_duplicate_checks",
        sa.Column("backend", sa.String(16), primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    # A period's deliveries and sync times are read from this index alone.
    op.create_index(
        "ix_outbox_events_received",
        "outbox_events",
        ["received_at", "kind", "state", "synced_at"],
    )
    # The days whose events changed since the last refresh of insights_days.
    op.create_index("ix_outbox_events_updated", "outbox_events", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_events_updated", table_name="outbox_events")
    op.drop_index("ix_outbox_events_received", table_name="outbox_events")
    op.drop_table("insights_duplicate_checks")
    op.drop_index("ix_webhook_refusals_received", table_name="webhook_refusals")
    op.drop_table("webhook_refusals")
    op.drop_table("insights_state")
    op.drop_table("insights_days")
    op.drop_index("ix_insights_bookings_owner", table_name="insights_bookings")
    op.drop_index("ix_insights_bookings_received", table_name="insights_bookings")
    op.drop_table("insights_bookings")
