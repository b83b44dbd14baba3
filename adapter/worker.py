"""The worker: claims outbox events, plans them with the mapping, applies them to the CRM.

The worker decides retry, dead-letter or quarantine from the error's type
alone (see ``adapter.errors``); it never builds SQL (``outbox.store`` does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from structlog.contextvars import bound_contextvars

from adapter.backends.base import CrmBackend, SyncJob, SyncResult
from adapter.booking import parse_booking
from adapter.errors import (
    AdapterError,
    MappingError,
    PausedError,
    PermanentError,
    RetryableError,
)
from adapter.heartbeat import process_worker_id
from adapter.mapping import MappingConfig, plan_booking
from adapter.metrics import Metrics
from adapter.owners import OwnerRotations
from adapter.plan import BookingPlan
from adapter.timeutil import utcnow
from outbox.exceptions import LeaseLost
from outbox.store import Claim, OutboxStore

log = logging.getLogger(__name__)


class JobHandler(Protocol):
    """The room that handles one outbox job kind (``notify.send``…): it settles the
    claim itself, or raises an ``AdapterError`` for the worker to retry or dead-letter."""

    def handle(self, claim: Claim) -> None: ...


PlanHook = Callable[[Connection, BookingPlan, dict[str, Any]], None]
"""Runs on the transaction that marks a booking synced (scheduling its follow-up jobs)."""

PlanStep = Callable[[Sequence[BookingPlan]], list[BookingPlan]]
"""Completes a batch's plans (in order) before the backend sees them, from the service's own
records (e.g. the tasks the service added to a booking, ``adapter.changes.tasks``); may read
the database, once per batch."""


def default_owner() -> str:
    """``host:pid:nonce:thread``: the process's heartbeat id, then the worker thread."""
    return f"{process_worker_id()}:{threading.get_ident()}"


class Worker:
    """One claim-plan-apply loop; run several (threads or processes) to scale out."""

    # At most this long a batch waits for the webhooks of its process to commit (``_yield``).
    YIELD_SECONDS = 0.05

    def __init__(
        self,
        store: OutboxStore,
        backend: CrmBackend,
        mapping: Callable[[], MappingConfig],
        *,
        batch_size: int = 20,
        lease_seconds: float = 60.0,
        poll_seconds: float = 0.5,
        on_settled: Callable[[str], None] | None = None,
        on_applied: Callable[[float], None] | None = None,
        yield_to: Callable[[], bool] | None = None,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        metrics: Metrics | None = None,
        owners: OwnerRotations | None = None,
        handlers: Mapping[str, JobHandler] | None = None,
        plan_hooks: Sequence[PlanHook] = (),
        plan_steps: Sequence[PlanStep] = (),
    ) -> None:
        self.store = store
        self.backend = backend
        self.mapping = mapping
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.on_settled = on_settled
        self.on_applied = on_applied  # told the seconds each batch took at the backend
        # Whether webhooks wait for a commit in this process now (``OutboxWriter.busy``).
        self.yield_to = yield_to
        self.clock = clock
        self.owner = owner or default_owner()
        self.metrics = metrics
        self.owners = owners or OwnerRotations(store.engine)
        # Jobs by kind; a kind without a handler is a booking snapshot.
        self.handlers = dict(handlers or {})
        self.plan_hooks = tuple(plan_hooks)
        self.plan_steps = tuple(plan_steps)
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; between empty polls, sleep or be woken.

        Once ``stop`` is set nothing more is claimed, and claims of the batch in
        hand that were not yet handed to the backend are released.
        """
        while not stop.is_set():
            self._yield(stop)
            try:
                busy = self.run_once(stop) > 0
            except Exception:
                log.exception("worker loop failed; backing off")
                busy = False
            if not busy:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def _yield(self, stop: threading.Event) -> None:
        """Let waiting webhooks commit first, for at most ``YIELD_SECONDS`` a batch.

        A worker in the API's process shares its GIL and SQLite's write lock:
        a batch begun while webhooks wait for their commit makes each of them
        wait behind the batch's transaction. Under a burst the writer is busy
        all the time, and the worker then runs a batch every ``YIELD_SECONDS``
        (the backlog is drained once the burst ends); at a steady rate the
        writer is idle between commits and the worker hardly waits.
        """
        if self.yield_to is None:
            return
        deadline = time.monotonic() + self.YIELD_SECONDS
        while self.yield_to() and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.002)

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim and process one batch; returns how many events it claimed."""
        claims = self.store.claim(
            self.owner, limit=self.batch_size, lease_seconds=self.lease_seconds
        )
        bookings = [claim for claim in claims if claim.event.kind not in self.handlers]
        for claim in claims:
            if claim.event.kind in self.handlers:
                self._dispatch(claim)
        if bookings:
            self.process(bookings, stop)
        return len(claims)

    def _dispatch(self, claim: Claim) -> None:
        """Hand a job to the room for its kind; its ``AdapterError`` is retried or
        dead-lettered by type like a booking's."""
        event = claim.event
        with bound_contextvars(event_id=event.id, job_key=event.key):
            try:
                # Renewed like a batch's: a slow SMTP server must not let a second
                # worker take the job over while this one is still sending.
                with self._renewing([(event.id, claim.token)]):
                    self.handlers[event.kind].handle(claim)
            except AdapterError as exc:
                self._fail(event.id, claim.token, exc)
            except LeaseLost:
                log.warning("lease lost; another worker owns this job now")
            except Exception as exc:  # a bug or an outage in the room: retried, logged
                log.exception("%s job failed", event.kind)
                self._fail(event.id, claim.token, RetryableError(repr(exc)))

    def drain(self, max_batches: int = 10_000) -> int:
        """Process until nothing is due (tests, ``worker --drain``); returns events claimed."""
        total = 0
        for _ in range(max_batches):
            claimed = self.run_once()
            if claimed == 0:
                break
            total += claimed
        return total

    def process(self, claims: Sequence[Claim], stop: threading.Event | None = None) -> None:
        """Plan every claim and apply the batch; when ``stop`` is set before the
        batch reaches the backend, release the claims instead (shutdown)."""
        jobs: list[SyncJob] = []
        received = {claim.event.id: claim.event.received_at for claim in claims}
        payloads = {claim.event.id: claim.event.payload for claim in claims}
        for claim in claims:
            event = claim.event
            with bound_contextvars(event_id=event.id, booking_id=event.key):
                try:
                    booking = parse_booking(event.payload)
                    plan = plan_booking(
                        booking, self.mapping(), now=self.clock(), received_at=event.received_at
                    )
                    plan = self._assign_owner(plan)
                except MappingError as exc:
                    self._fail(event.id, claim.token, exc)
                    continue
                except ValidationError as exc:  # stored payloads were valid; a schema change
                    invalid = PermanentError(f"payload invalid now: {exc}")
                    self._fail(event.id, claim.token, invalid)
                    continue
                except SQLAlchemyError as exc:  # the owner assignment's database
                    self._fail(event.id, claim.token, RetryableError(f"assigning owner: {exc}"))
                    continue
            jobs.append(SyncJob(event.id, event.key, claim.token, plan))
        jobs = self._complete(jobs)
        if not jobs:
            return
        if stop is not None and stop.is_set():
            for job in jobs:
                self.store.release(job.event_id, job.lease_token)
            log.info("shutting down: released %d unstarted claim(s)", len(jobs))
            return
        settle = _Settle(self.store, self.plan_hooks, payloads)
        settled = settle.settled

        try:
            with self._renewing([(job.event_id, job.lease_token) for job in jobs]):
                applying = time.monotonic()
                failures: Mapping[str, AdapterError] = self.backend.apply(jobs, settle)
                if self.on_applied is not None:
                    self.on_applied(time.monotonic() - applying)
        except Exception as exc:  # a backend bug or outage: every job of the batch retries
            log.exception(
                "backend %s failed a whole batch",
                self.backend.name,
                extra={"event_ids": [job.event_id for job in jobs]},
            )
            error = exc if isinstance(exc, AdapterError) else RetryableError(repr(exc))
            failures = {job.event_id: error for job in jobs}
        for job in jobs:
            with bound_contextvars(event_id=job.event_id, booking_id=job.booking_id):
                failure = failures.get(job.event_id)
                if failure is not None:
                    self._fail(job.event_id, job.lease_token, failure)
                elif job.event_id in settled:
                    self._synced(job, received[job.event_id])
                else:  # the backend dropped it: settle raised LeaseLost
                    log.warning("lease lost; another worker owns this event now")

    def _complete(self, jobs: list[SyncJob]) -> list[SyncJob]:
        """The batch's plans through the plan steps; if a step's database fails, every job
        of the batch is retried."""
        if not jobs or not self.plan_steps:
            return jobs
        plans = [job.plan for job in jobs]
        try:
            for step in self.plan_steps:
                plans = step(plans)
        except SQLAlchemyError as exc:
            for job in jobs:
                self._fail(job.event_id, job.lease_token, RetryableError(f"completing plan: {exc}"))
            return []
        return [replace(job, plan=plan) for job, plan in zip(jobs, plans, strict=True)]

    def _assign_owner(self, plan: BookingPlan) -> BookingPlan:
        """Turn the plan's round robin into the booking's assigned owner.

        Here rather than in the planner (which stays pure) or in each backend
        (HubSpot's writes are not in a database transaction): the assignment
        commits before any CRM write, so a retry, a replay or a reschedule of
        the booking finds it and every backend only ever sees an email.
        """
        owner = plan.owner
        if owner is None or not owner.round_robin:
            return plan
        email = self.owners.assign(plan.booking_id, owner.round_robin)
        return plan.model_copy(update={"owner": owner.model_copy(update={"email": email})})

    @contextmanager
    def _renewing(self, leases: Sequence[tuple[str, str]]) -> Iterator[None]:
        """Renew the batch's leases every third of a lease while the backend works.

        A live batch that outlasts its lease (a rate-limited HubSpot, a deal lock
        to wait for) is then not taken over by another worker, whose CRM writes
        would race its own. A stalled or killed worker renews nothing, so its
        leases still expire and are taken over.
        """

        def renew() -> None:
            try:
                self.store.extend(leases, self.lease_seconds)
            except Exception:  # the next renewal may get through; the lease still fences
                log.warning("could not renew the batch's leases", exc_info=True)

        held = _KEEPER.hold(self.lease_seconds / 3, renew)
        try:
            yield
        finally:
            _KEEPER.release(held)

    def _synced(self, job: SyncJob, received: datetime) -> None:
        latency = max((self.clock() - received).total_seconds(), 0.0)
        log.info("event synced", extra={"latency_seconds": round(latency, 3)})
        if self.metrics is not None:
            self.metrics.settled.labels("synced").inc()
            self.metrics.sync_latency.observe(latency)
        if self.on_settled is not None:
            self.on_settled(job.event_id)

    def _fail(self, event_id: str, token: str, error: AdapterError) -> None:
        """Quarantine, postpone, retry or dead-letter, chosen by the error's type alone.

        A ``PausedError`` (the CRM refuses everything until a time) puts the event
        back for that time without counting the attempt: a pause of hours, met
        again and again, never dead-letters an event.
        """
        result = None
        try:
            if isinstance(error, MappingError):
                event = self.store.quarantine(event_id, token, str(error))
            elif isinstance(error, PausedError):
                event = self.store.postpone(
                    event_id, token, error.until, f"{type(error).__name__}: {error}"
                )
                result = "postponed"
            else:
                event = self.store.mark_failed(
                    event_id,
                    token,
                    f"{type(error).__name__}: {error}",
                    retryable=isinstance(error, RetryableError),
                    retry_after=error.retry_after if isinstance(error, RetryableError) else None,
                )
        except LeaseLost:
            log.warning("lease lost on event %s; another worker owns it now", event_id)
        else:
            result = result or event.state
            log.warning("event %s %s: %s", event_id, result, error, extra={"state": event.state})
            if self.metrics is not None:
                self.metrics.settled.labels(result).inc()
        if self.on_settled is not None:
            self.on_settled(event_id)


class _Settle:
    """The worker's ``SettleMany``: marks jobs synced (fenced), then runs the plan hooks;
    ``settled`` holds the jobs whose last settle went through."""

    def __init__(
        self, store: OutboxStore, hooks: Sequence[PlanHook], payloads: Mapping[str, dict[str, Any]]
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.payloads = payloads
        self.settled: set[str] = set()

    def __call__(self, conn: Connection, job: SyncJob, result: SyncResult) -> None:
        self.many(conn, [(job, result)])

    def many(self, conn: Connection, done: Sequence[tuple[SyncJob, SyncResult]]) -> None:
        # A backend may settle a job again after rolling back the first settle.
        self.settled.difference_update(job.event_id for job, _ in done)
        marks = [
            (job.event_id, job.lease_token, result.model_dump(mode="json")) for job, result in done
        ]
        if len(marks) == 1:
            self.store.mark_synced(conn, *marks[0])
        else:
            self.store.mark_synced_many(conn, marks)
        for job, _ in done:
            for hook in self.hooks:
                hook(conn, job.plan, self.payloads[job.event_id])
        self.settled.update(job.event_id for job, _ in done)


class _LeaseKeeper:
    """One daemon thread that runs every held batch's renewal when it is due.

    A thread of its own per batch cost a fast batch more than its bookings did:
    starting and joining it each wait for the GIL the worker holds. A renewal
    already running when its batch is released may still finish; it is fenced
    by the tokens like any settle, so it renews only leases still held.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: dict[int, tuple[float, float, Callable[[], None]]] = {}
        self._count = 0
        self._thread: threading.Thread | None = None

    def hold(self, every: float, renew: Callable[[], None]) -> int:
        """Run ``renew`` every ``every`` seconds from now until ``release``."""
        with self._changed:
            self._count += 1
            self._held[self._count] = (time.monotonic() + every, every, renew)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
            self._changed.notify()
            return self._count

    def release(self, key: int) -> None:
        with self._changed:
            self._held.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [(key, entry) for key, entry in self._held.items() if entry[0] <= now]
                if not due:
                    nearest = min((entry[0] for entry in self._held.values()), default=None)
                    self._changed.wait(None if nearest is None else nearest - now)
                    continue
                for key, (_, every, renew) in due:
                    self._held[key] = (now + every, every, renew)
            for _, (_, _, renew) in due:
                renew()


_KEEPER = _LeaseKeeper()
