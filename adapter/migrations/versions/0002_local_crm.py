"""The local reference CRM's tables (``adapter.backends.local.models``).

Revision ID: 0002_local_crm
Revises: 0001_outbox
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002_local_crm"
down_revision = "0001_outbox"
branch_labels = None
depends_on = None


def _timestamps() -> tuple[sa.Column[datetime], sa.Column[datetime]]:
    return (
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def upgrade() -> None:
    op.create_table(
        "crm_companies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name_key", sa.String(300), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("name_key", name="uq_crm_companies_name_key"),
    )
    op.create_table(
        "crm_contacts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("first_name", sa.String(200), nullable=False),
        sa.Column("last_name", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(100), nullable=True),
        sa.Column(
            "company_id",
            sa.String(32),
            sa.ForeignKey("crm_companies.id", name="fk_crm_contacts_company_id"),
            nullable=True,
        ),
        sa.Column("tags", sa.Text(), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("email_key", name="uq_crm_contacts_email_key"),
    )
    op.create_index("ix_crm_contacts_company_id", "crm_contacts", ["company_id"])
    op.create_table(
        "crm_leads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("lead_key", sa.String(400), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("source_details", sa.Text(), nullable=False),
        sa.Column("estimated_value", sa.Integer(), nullable=False),
        sa.Column("lead_score", sa.Integer(), nullable=False),
        sa.Column(
            "company_id",
            sa.String(32),
            sa.ForeignKey("crm_companies.id", name="fk_crm_leads_company_id"),
            nullable=True,
        ),
        sa.Column(
            "contact_id",
            sa.String(32),
            sa.ForeignKey("crm_contacts.id", name="fk_crm_leads_contact_id"),
            nullable=False,
        ),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("last_activity_date", sa.DateTime(timezone=True), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("lead_key", name="uq_crm_leads_lead_key"),
    )
    op.create_index("ix_crm_leads_company_id", "crm_leads", ["company_id"])
    op.create_index("ix_crm_leads_contact_id", "crm_leads", ["contact_id"])
    op.create_table(
        "crm_activities",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("booking_id", sa.String(200), nullable=False),
        sa.Column(
            "lead_id",
            sa.String(32),
            sa.ForeignKey("crm_leads.id", name="fk_crm_activities_lead_id"),
            nullable=False,
        ),
        sa.Column(
            "contact_id",
            sa.String(32),
            sa.ForeignKey("crm_contacts.id", name="fk_crm_activities_contact_id"),
            nullable=False,
        ),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("activity_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("meeting_url", sa.Text(), nullable=True),
        sa.Column("source", sa.String(100), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("booking_id", name="uq_crm_activities_booking_id"),
    )
    op.create_index("ix_crm_activities_type_date", "crm_activities", ["type", "activity_date"])
    op.create_index("ix_crm_activities_lead_date", "crm_activities", ["lead_id", "activity_date"])
    op.create_index("ix_crm_activities_contact_id", "crm_activities", ["contact_id"])
    op.create_table(
        "crm_tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "lead_id",
            sa.String(32),
            sa.ForeignKey("crm_leads.id", name="fk_crm_tasks_lead_id"),
            nullable=False,
        ),
        sa.Column(
            "booking_id",
            sa.String(200),
            sa.ForeignKey("crm_activities.booking_id", name="fk_crm_tasks_booking_id"),
            nullable=False,
        ),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("due_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("booking_id", "key", name="uq_crm_tasks_booking_id_key"),
        sa.CheckConstraint("status IN ('todo', 'done', 'cancelled')", name="ck_crm_tasks_status"),
        sa.CheckConstraint("priority IN ('low', 'medium', 'high')", name="ck_crm_tasks_priority"),
    )
    op.create_index("ix_crm_tasks_status_due", "crm_tasks", ["status", "due_date"])
    op.create_index("ix_crm_tasks_lead_id", "crm_tasks", ["lead_id"])


def downgrade() -> None:
    for table in ("crm_tasks", "crm_activities", "crm_leads", "crm_contacts", "crm_companies"):
        op.drop_table(table)
