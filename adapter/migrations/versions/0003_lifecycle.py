"""Booking lifecycle in the local CRM: snapshot versions and stage rules.

Companies, contacts and leads get the ``version`` of the snapshot their
descriptive fields come from (contacts also one for the phone and one for the
company); leads get the stage rules their stage is derived from; meetings the
``snapshot_at`` last applied. Only columns are added (with constant defaults),
so SQLite alters the tables in place instead of copying them, which its
enforced foreign keys would not allow.

Revision ID: 0003_lifecycle
Revises: 0002_local_crm
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_lifecycle"
down_revision = "0002_local_crm"
branch_labels = None
depends_on = None

VERSION_LENGTH = 240

_VERSIONS = {
    "crm_companies": ("version",),
    "crm_contacts": ("version", "phone_version", "company_version"),
    "crm_leads": ("version",),
}
_STAGES = ("live_stage", "cancelled_stage", "no_show_stage")


def _version(name: str) -> sa.Column[str]:
    # '' sorts before every real version: the next snapshot's fields replace the old ones.
    return sa.Column(name, sa.String(VERSION_LENGTH), nullable=False, server_default="")


def upgrade() -> None:
    for table, columns in _VERSIONS.items():
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.add_column(_version(column))
    with op.batch_alter_table("crm_leads") as batch:
        for column in _STAGES:
            batch.add_column(sa.Column(column, sa.String(64), nullable=True))
    # Before 0003 a lead's stage never changed after it was created: it is the live stage.
    op.execute("UPDATE crm_leads SET live_stage = stage")
    with op.batch_alter_table("crm_activities") as batch:
        batch.add_column(sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # recreate="never": plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), no table copy.
    drops = {
        "crm_activities": ("snapshot_at",),
        "crm_leads": (*_STAGES, "version"),
        "crm_contacts": _VERSIONS["crm_contacts"],
        "crm_companies": _VERSIONS["crm_companies"],
    }
    for table, columns in drops.items():
        with op.batch_alter_table(table, recreate="never") as batch:
            for column in columns:
                batch.drop_column(column)
