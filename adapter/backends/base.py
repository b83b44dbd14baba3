"""The CRM backend interface every backend implements.

A backend receives a batch of claimed jobs. For each job it applies the plan
and then calls ``settle(conn, job, result)``, which marks the outbox row synced
(fenced by the job's lease) on ``conn``. A backend whose data lives in the
outbox database (``LocalBackend``) writes its records on that same ``conn``, so
the CRM write and the outbox mark commit together: exactly-once outright. A
remote backend calls ``settle`` after the remote writes, in a short transaction
of its own, recording its id mappings on the same ``conn``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection

from adapter.errors import AdapterError
from adapter.plan import BookingPlan


class _Ref(BaseModel):
    model_config = ConfigDict(frozen=True)


class LeadRef(_Ref):
    id: str
    title: str


class ContactRef(_Ref):
    id: str
    email: str


class CompanyRef(_Ref):
    id: str
    name: str


class ActivityRef(_Ref):
    id: str


class TaskRef(_Ref):
    id: str
    title: str
    dueDate: str


class SyncResult(_Ref):
    """The CRM part of the webhook's 200 body; ids are the CRM's own."""

    lead: LeadRef
    contact: ContactRef
    company: CompanyRef | None
    activity: ActivityRef
    tasks: list[TaskRef]


@dataclass(frozen=True)
class SyncJob:
    """One claimed outbox event with its plan; ``lease_token`` fences the settle."""

    event_id: str
    booking_id: str
    lease_token: str
    plan: BookingPlan


Settle = Callable[[Connection, SyncJob, SyncResult], None]
"""Marks ``job`` synced with ``result`` on ``conn``; raises ``LeaseLost`` if fenced out.

A backend may roll back a transaction that held settles and apply its jobs again
(``LocalBackend`` retries a failed batch job by job): a job's last settle counts."""


@runtime_checkable
class SettleMany(Protocol):
    """A ``Settle`` that can also settle many jobs at once, in fewer statements."""

    def __call__(self, conn: Connection, job: SyncJob, result: SyncResult) -> None: ...

    def many(self, conn: Connection, done: Sequence[tuple[SyncJob, SyncResult]]) -> None:
        """Settle each, in order, on ``conn``; ``LeaseLost`` if any of them is fenced out
        (which one is not said: roll them all back)."""
        ...


@runtime_checkable
class CrmBackend(Protocol):
    """A CRM the worker can write bookings to."""

    name: str

    def apply(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        """Apply each job, settling each success; return the failures by event id.

        One job's failure must not undo another's success. ``LeaseLost`` from
        ``settle`` means the job belongs to another worker now: roll back that
        job's own writes if possible and report nothing for it.
        """
        ...

    def ping(self) -> None:
        """Raise if the CRM cannot be reached (used by ``/readyz``)."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


@dataclass(frozen=True)
class Pause:
    """The CRM refuses every call until ``until`` (aware, UTC), for ``reason``."""

    until: datetime
    reason: str


@runtime_checkable
class Pausable(Protocol):
    """A backend whose CRM may pause the whole account (HubSpot's 477, a spent daily limit)."""

    def paused(self) -> Pause | None:
        """The pause in force, shared by every process on the database; ``None`` if none."""
        ...


@runtime_checkable
class Timed(Protocol):
    """A backend that knows how long its CRM takes to answer (a remote CRM)."""

    def sync_estimate(self) -> float | None:
        """Seconds a booking's sync can be expected to take now; ``None``: not known yet."""
        ...


def backend_sync_estimate(backend: CrmBackend) -> float | None:
    """``Timed.sync_estimate`` of ``backend``; ``None`` for a backend that does not know."""
    return backend.sync_estimate() if isinstance(backend, Timed) else None


def backend_pause(backend: CrmBackend) -> Pause | None:
    """The pause ``backend``'s CRM is under, for ``/readyz``, ``/metrics`` and the dashboard."""
    return backend.paused() if isinstance(backend, Pausable) else None
