"""The CRM-side history: normalised values, echo suppression, dedupe and routing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select

from adapter import db
from adapter.changes import PUSH_KIND, changes_metadata, normalise, observe, record_written, route
from adapter.changes import store as changes
from adapter.notify import store as sends
from outbox.schema import events
from outbox.store import OutboxStore

NOW = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)
START = "2027-01-20T08:00:00.000Z"


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("start", "1800432000000", START),  # HubSpot's epoch ms
        ("start", "2027-01-20T08:00:00Z", START),
        ("start", "2027-01-20T09:00:00.000+01:00", START),
        ("start", datetime(2027, 1, 20, 8, 0), START),  # naive: SQLite's UTC
        ("duration", "90", "90"),
        ("duration", 45.0, "45"),
        ("outcome", "cancelled", "CANCELED"),
        ("outcome", "Completed", "COMPLETED"),
        ("status", "COMPLETED", "done"),
        ("status", "NOT_STARTED", "todo"),
        ("status", "done", "done"),
        ("stage", "won", "WON"),
        ("start", "", None),
        ("outcome", None, None),
    ],
)
def test_each_field_has_one_spelling(field: str, raw: object, expected: str | None) -> None:
    assert normalise(field, raw) == expected


def test_a_deal_stage_id_reads_back_as_the_lead_stage() -> None:
    stages = {"CONTACTED": "appointmentscheduled", "WON": "closedwon"}
    assert normalise("stage", "closedwon", deal_stages=stages) == "WON"
    assert normalise("stage", "won", deal_stages=stages) == "WON"
    assert normalise("stage", "1234567", deal_stages=stages) == "1234567"  # not ours: as is


def test_unreadable_values_are_refused() -> None:
    with pytest.raises(ValueError, match="Invalid isoformat"):
        normalise("start", "next tuesday")
    with pytest.raises(ValueError, match="could not convert"):
        normalise("duration", "long")
    with pytest.raises(ValueError, match="tracked field"):
        normalise("colour", "red")


def test_the_migration_mirrors_the_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        ours = set(changes_metadata.tables)
        context = MigrationContext.configure(
            conn,
            opts={"include_name": lambda name, kind, _: kind != "table" or name in ours},
        )
        diff = compare_metadata(context, changes_metadata)
    assert diff == []


def _meeting(engine: Engine, crm_id: str = "m1") -> None:
    with engine.begin() as conn:
        record_written(
            conn,
            "meeting",
            crm_id,
            booking_id="bk_1",
            lead_key="lead:erik@holm.se",
            values={"start": START, "duration": "180", "outcome": "SCHEDULED"},
            now=NOW,
        )


def test_our_own_write_seen_again_is_not_a_change(engine: Engine) -> None:
    _meeting(engine)
    with engine.begin() as conn:
        seen = {
            "start": normalise("start", "2027-01-20T09:00:00+01:00"),
            "duration": "180",
            "outcome": normalise("outcome", "scheduled"),
        }
        assert observe(conn, "meeting", "m1", seen, changed_at=NOW, source="poll", now=NOW) == []
        assert conn.execute(select(changes.crm_changes)).all() == []


def test_a_salesperson_edit_is_recorded_once(engine: Engine) -> None:
    _meeting(engine)
    moved = "2027-01-21T08:00:00.000Z"
    at = NOW + timedelta(minutes=5)
    with engine.begin() as conn:
        first = observe(
            conn, "meeting", "m1", {"start": moved}, changed_at=at, source="poll", now=NOW
        )
    with engine.begin() as conn:  # the same edit through HubSpot's webhook
        again = observe(
            conn, "meeting", "m1", {"start": moved}, changed_at=at, source="webhook", now=NOW
        )
    assert [(c.field, c.old_value, c.new_value, c.source) for c in first] == [
        ("start", START, moved, "poll")
    ]
    assert first[0].lead_key == "lead:erik@holm.se"
    assert again == []
    with engine.begin() as conn:  # moved back to what we wrote: a change too
        back = observe(
            conn, "meeting", "m1", {"start": START}, changed_at=at, source="poll", now=NOW
        )
    assert back == []  # equal to our write: an echo, never pushed back
    with engine.begin() as conn:
        assert changes.shown(conn, "meeting", "m1")["start"] == START


def test_an_object_we_never_wrote_is_not_ours(engine: Engine) -> None:
    with engine.begin() as conn:
        found = observe(
            conn, "deal", "d9", {"stage": "WON"}, changed_at=NOW, source="poll", now=NOW
        )
    assert found == []


def test_a_moved_meeting_queues_one_reschedule_push(engine: Engine) -> None:
    _meeting(engine)
    store = OutboxStore(engine)
    moved = "2027-01-21T08:00:00.000Z"
    with engine.begin() as conn:
        found = observe(
            conn,
            "meeting",
            "m1",
            {"start": moved, "duration": "120"},
            changed_at=NOW,
            source="poll",
            now=NOW,
        )
        pending = route(conn, found, store=store, now=NOW)
    assert {c.state for c in pending} == {"pending"}
    assert len({c.push_event_id for c in pending}) == 1
    with engine.connect() as conn:
        jobs = conn.execute(select(events).where(events.c.kind == PUSH_KIND)).all()
    assert len(jobs) == 1
    body = json.loads(jobs[0].payload)
    assert jobs[0].key == "bookme:bk_1"
    assert body == {
        "changeId": pending[0].id,
        "bookingId": "bk_1",
        "action": "reschedule",
        "scheduledStart": moved,
        "duration": 120,
        "reason": None,
        "idempotencyKey": f"bookme-crm:change:{pending[0].id}",
    }


def test_a_cancelled_meeting_queues_a_cancellation_with_the_reason(engine: Engine) -> None:
    _meeting(engine)
    with engine.begin() as conn:
        found = observe(
            conn, "meeting", "m1", {"outcome": "CANCELED"}, changed_at=NOW, source="api", now=NOW
        )
        pending = route(conn, found, store=OutboxStore(engine), now=NOW, reason="Client ill")
    with engine.connect() as conn:
        job = conn.execute(select(events).where(events.c.kind == PUSH_KIND)).one()
    body = json.loads(job.payload)
    assert (body["action"], body["reason"], body["changeId"]) == (
        "cancel",
        "Client ill",
        pending[0].id,
    )


def test_progress_is_kept_and_a_done_task_drops_its_mail(engine: Engine) -> None:
    store = OutboxStore(engine)
    with engine.begin() as conn:
        record_written(
            conn, "deal", "d1", booking_id="bk_1", values={"stage": "CONTACTED"}, now=NOW
        )
        record_written(
            conn,
            "task",
            "t1",
            booking_id="bk_1",
            task_key="follow-up",
            values={"status": "todo"},
            now=NOW,
        )
        sends.schedule(
            conn,
            "bk_1",
            "follow-up",
            due_at=NOW + timedelta(days=1),
            to_address="erik@holm.se",
            subject="Thanks",
            now=NOW,
        )
        found = observe(
            conn, "deal", "d1", {"stage": "WON"}, changed_at=NOW, source="poll", now=NOW
        )
        found += observe(
            conn, "task", "t1", {"status": "done"}, changed_at=NOW, source="poll", now=NOW
        )
        assert route(conn, found, store=store, now=NOW) == []
    with engine.connect() as conn:
        assert [c.state for c in changes.changes_for_booking(conn, "bk_1")] == [
            "recorded",
            "recorded",
        ]
        assert sends.get(conn, "bk_1", "follow-up").state == sends.SKIPPED  # type: ignore[union-attr]
        assert conn.execute(select(events)).all() == []


def test_states_are_checked(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="state"):
        changes.set_state(conn, 1, "maybe")


@pytest.mark.postgres
def test_on_postgres_too(pg_url: str) -> None:
    """The upserts, the RETURNING insert and the push's enqueue on PostgreSQL."""
    engine = db.make_engine(pg_url)
    try:
        db.upgrade(engine)
        test_a_moved_meeting_queues_one_reschedule_push(engine)
    finally:
        engine.dispose()
