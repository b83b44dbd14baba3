"""Tasks the service adds to a booking beyond the mapping's (e.g. "BookMe refused the reschedule").

A booking's plan is absolute: each snapshot makes the booking's tasks exactly
the planned set, and removes any other open task. A task the service adds
itself must therefore be part of every later plan of that booking, or the
booking's next event would archive it. It is kept here, one row per (booking,
key), and ``ExtraTasks.extend`` adds it to each plan the worker builds (after
the owner assignment, before the backend sees the plan), for every backend.
The planner stays pure; ``mappings check --sample`` does not show these.

Migration ``0021_bookme_push`` mirrors the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, Text, select

from adapter.backends.local.models import UtcDateTime
from adapter.db import upsert_insert
from adapter.plan import BookingPlan, Priority, TaskPlan

__all__ = ["ExtraTask", "ExtraTasks", "add", "extra_tasks", "for_booking", "tasks_metadata"]

tasks_metadata = MetaData()

extra_tasks = Table(
    "booking_extra_tasks",
    tasks_metadata,
    Column("booking_id", String(200), primary_key=True),
    Column("key", String(100), primary_key=True),
    Column("title", String(500), nullable=False),
    Column("description", Text, nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)


@dataclass(frozen=True)
class ExtraTask:
    """One task the service added to a booking."""

    booking_id: str
    key: str
    title: str
    description: str
    due_at: datetime
    priority: Priority

    def plan(self, *, cancelled: bool) -> TaskPlan:
        return TaskPlan(
            key=self.key,
            title=self.title,
            description=self.description,
            due=self.due_at,
            priority=self.priority,
            status="cancelled" if cancelled else "todo",
        )


def add(conn: Connection, task: ExtraTask, *, now: datetime) -> None:
    """Keep ``task`` for its booking (on the caller's transaction); a repeat changes nothing."""
    stmt = upsert_insert(conn, extra_tasks).values(
        booking_id=task.booking_id,
        key=task.key,
        title=task.title[:500],
        description=task.description,
        due_at=task.due_at,
        priority=task.priority,
        created_at=now,
    )
    conn.execute(stmt.on_conflict_do_nothing())


def for_booking(conn: Connection, booking_id: str) -> list[ExtraTask]:
    """The booking's extra tasks, oldest first."""
    rows = conn.execute(
        select(extra_tasks)
        .where(extra_tasks.c.booking_id == booking_id)
        .order_by(extra_tasks.c.created_at, extra_tasks.c.key)
    )
    return [_task(row) for row in rows]


def _task(row: Any) -> ExtraTask:
    return ExtraTask(
        booking_id=row.booking_id,
        key=row.key,
        title=row.title,
        description=row.description,
        due_at=row.due_at,
        priority=row.priority,
    )


class ExtraTasks:
    """The worker's plan step that adds each booking's extra tasks to its plan."""

    def __init__(self, engine: Engine) -> None:
        self._reads = engine.execution_options(sqlite_begin="DEFERRED")

    def extend(self, plans: Sequence[BookingPlan]) -> list[BookingPlan]:
        """Each plan with its booking's extra tasks (cancelled with the booking, else open):
        one read for the whole batch."""
        booking_ids = sorted({plan.booking_id for plan in plans})
        found: dict[str, list[ExtraTask]] = {}
        with self._reads.connect() as conn:
            rows = conn.execute(
                select(extra_tasks)
                .where(extra_tasks.c.booking_id.in_(booking_ids))
                .order_by(extra_tasks.c.created_at, extra_tasks.c.key)
            )
            for row in rows:
                found.setdefault(row.booking_id, []).append(_task(row))
        return [with_tasks(plan, found.get(plan.booking_id, ())) for plan in plans]


def with_tasks(plan: BookingPlan, found: Sequence[ExtraTask]) -> BookingPlan:
    planned = {task.key for task in plan.tasks}
    added = tuple(
        task.plan(cancelled=plan.lifecycle == "cancelled")
        for task in found
        if task.key not in planned
    )
    if not added:
        return plan
    return plan.model_copy(update={"tasks": (*plan.tasks, *added)})
