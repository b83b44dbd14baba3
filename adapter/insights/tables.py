"""The tables insights keeps (migration ``0022_insights_indexes`` mirrors them), and
``crm_changes`` (``adapter.changes``'), which it reads."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from adapter.backends.local.models import UtcDateTime
from adapter.changes.store import crm_changes as changes_crm_changes

insights_metadata = MetaData()

_Seq = BigInteger().with_variant(Integer(), "sqlite")

# One row per booking, kept up to date from the outbox's booking events (``project``):
# what the payloads say, in columns, so that a year of bookings is grouped by SQL
# instead of parsing 500,000 JSON payloads per report.
bookings = Table(
    "insights_bookings",
    insights_metadata,
    Column("booking_id", String(200), primary_key=True),
    Column("event_type", String(200), nullable=False),
    # The first receipt of any of the booking's events: the booking's cohort.
    Column("received_at", UtcDateTime(), nullable=False),
    Column("start_at", UtcDateTime(), nullable=False),  # of the newest snapshot
    # 'live' | 'cancelled' | 'no_show': what the newest snapshot's event says.
    Column("status", String(16), nullable=False),
    Column("snapshot_at", UtcDateTime(), nullable=False),  # the newest snapshot's
    Column("snapshot_seq", _Seq, nullable=False),
    # What was done in the CRM for the booking, from ``crm_changes`` (read by id):
    # the first sales action, the newest meeting outcome, the first move to a stage
    # beyond those a booking sets itself, and the first move to WON.
    Column("first_action_at", UtcDateTime(), nullable=True),
    Column("crm_outcome", String(32), nullable=True),
    Column("crm_outcome_at", UtcDateTime(), nullable=True),
    Column("advanced_at", UtcDateTime(), nullable=True),
    Column("won_at", UtcDateTime(), nullable=True),
    # The booking's owner once it was written to the CRM ('' for none; NULL: not yet read).
    Column("owner", String(320), nullable=True),
    Index("ix_insights_bookings_received", "received_at", "event_type"),
    Index("ix_insights_bookings_owner", "owner"),
)

# Closed days' booking events (``adapter.insights.days``): per UTC day and event type,
# the count per outbox state (JSON), the sync-time histogram in whole ms (JSON) and sum.
days = Table(
    "insights_days",
    insights_metadata,
    Column("day", String(10), primary_key=True),
    Column("event_type", String(200), primary_key=True),
    Column("states", Text, nullable=False),
    Column("sync_ms", Text, nullable=False),
    Column("sync_sum", Float, nullable=False),
    Column("computed_at", UtcDateTime(), nullable=False),
)

# Small named values: the outbox ``seq`` the projection has read up to.
state = Table(
    "insights_state",
    insights_metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Authenticated webhook deliveries refused before anything was stored (400, 409, 415):
# the outbox has no row for them, and the success rate must count them.
refusals = Table(
    "webhook_refusals",
    insights_metadata,
    Column("id", _Seq, primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("status", Integer, nullable=False),  # the HTTP status answered
    Column("detail", Text, nullable=True),  # the refused fields and reasons, never values
    Column("webhook_id", String(200), nullable=True),
    Index("ix_webhook_refusals_received", "received_at"),
)

# The last duplicate check per backend (HubSpot's is read back through the API, at most
# once an hour): its result as JSON, when it ran, and why the last attempt failed.
duplicate_checks = Table(
    "insights_duplicate_checks",
    insights_metadata,
    Column("backend", String(16), primary_key=True),
    Column("checked_at", UtcDateTime(), nullable=True),
    Column("result", Text, nullable=True),
    Column("attempted_at", UtcDateTime(), nullable=False),
    Column("error", Text, nullable=True),
)

# What sales staff changed in the CRM (issue 16's history), read here, written there.
crm_changes = changes_crm_changes
