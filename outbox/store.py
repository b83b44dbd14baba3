"""Every statement the outbox runs. Callers get functions, never queries.

States::

    queued ──claim──▶ (leased) ──synced──▶ synced
      ▲                  │
      │                  ├─retryable──▶ retrying ──(due)──▶ claimable again
      │                  ├─permanent / attempts exhausted──▶ dead
      │                  └─unplaceable──▶ quarantined
      └──────────── replay (dead, quarantined) ◀─────────┘

A claim is a lease: a random token and an expiry written on the row. Only the
token's holder may settle the event (fencing); once the lease expires another
worker may claim it, which changes the token. Events of one ``key`` are handed
out strictly one at a time, oldest first.

Worker processes also keep a heartbeat row (``beat``). The claims of a process
whose heartbeat is stale are freed at once (``take_over_stale``), so a crashed
process's events wait a few heartbeats rather than a whole lease; freeing
clears the token, so a process that was only paused is fenced out all the same.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from outbox.exceptions import EventNotFound, LeaseLost
from outbox.retry import RetryPolicy
from outbox.schema import events, replays, workers
from outbox.wakeup import announce

QUEUED = "queued"
RETRYING = "retrying"
SYNCED = "synced"
DEAD = "dead"
QUARANTINED = "quarantined"
SUPERSEDED = "superseded"
STATES = (QUEUED, RETRYING, SYNCED, DEAD, QUARANTINED, SUPERSEDED)
PENDING = (QUEUED, RETRYING)
REPLAYABLE = (DEAD, QUARANTINED)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    """One stored event as the outbox sees it."""

    id: str
    seq: int
    key: str
    kind: str
    payload: dict[str, Any]
    webhook_id: str | None
    state: str
    attempts: int
    last_error: str | None
    result: dict[str, Any] | None
    snapshot_at: datetime
    received_at: datetime
    synced_at: datetime | None
    next_attempt_at: datetime
    # What a repeated ``webhook_id`` is compared with: one id names one message.
    body_hash: str = ""

    @classmethod
    def from_row(cls, row: Any) -> Event:
        m = row._mapping
        return cls(
            id=m["id"],
            seq=m["seq"],
            key=m["key"],
            kind=m["kind"],
            payload=json.loads(m["payload"]),
            webhook_id=m["webhook_id"],
            state=m["state"],
            attempts=m["attempts"],
            last_error=m["last_error"],
            result=json.loads(m["result"]) if m["result"] else None,
            snapshot_at=_utc(m["snapshot_at"]),  # type: ignore[arg-type]
            received_at=_utc(m["received_at"]),  # type: ignore[arg-type]
            synced_at=_utc(m["synced_at"]),
            next_attempt_at=_utc(m["next_attempt_at"]),  # type: ignore[arg-type]
            body_hash=m["body_hash"],
        )


@dataclass(frozen=True)
class Replay:
    """One audited replay: who re-queued the event, when, and from which state."""

    event_id: str
    replayed_at: datetime
    actor: str
    from_state: str


@dataclass(frozen=True)
class Claim:
    """An event handed to a worker, with the token that fences its settle."""

    event: Event
    token: str


@dataclass(frozen=True)
class NewEvent:
    """What ``enqueue`` stores; ``webhook_id`` and (``key``, ``body_hash``) dedupe."""

    key: str
    kind: str
    payload: dict[str, Any]
    body_hash: str
    snapshot_at: datetime
    webhook_id: str | None = None
    state: str = QUEUED
    last_error: str | None = None
    # A job for later (a mail at its task's due moment): not claimable before this.
    not_before: datetime | None = None


@dataclass
class _Pending:
    """One ``enqueue_committed`` call waiting for a group commit."""

    new: NewEvent
    done: bool = False
    result: tuple[Event, bool] | None = None
    error: BaseException | None = None


# The claim's and settle's statements are built once and run with parameters:
# building them per event cost more CPU than SQLite took to run them.


@functools.cache
def _claimable(dialect: str, *, one: bool = False) -> Any:
    """Due, unleased events that are their key's newest pending, in a key with none leased.

    Parameters: ``p_now``, and ``p_limit`` (the batch) or, with ``one``, ``p_seq``
    (is this event still claimable?).
    """
    now = bindparam("p_now", type_=events.c.next_attempt_at.type)
    other = events.alias("other")
    newer_or_in_flight = (
        select(other.c.seq)
        .where(
            other.c.key == events.c.key,
            other.c.state.in_(PENDING),
            other.c.seq != events.c.seq,
            or_(
                other.c.lease_expires_at > now,
                other.c.snapshot_at > events.c.snapshot_at,
                and_(other.c.snapshot_at == events.c.snapshot_at, other.c.seq > events.c.seq),
            ),
        )
        .exists()
    )
    query = select(events).where(
        events.c.state.in_(PENDING),
        events.c.next_attempt_at <= now,
        or_(events.c.lease_expires_at.is_(None), events.c.lease_expires_at <= now),
        ~newer_or_in_flight,
    )
    if one:
        return query.where(events.c.seq == bindparam("p_seq", type_=events.c.seq.type))
    query = query.order_by(events.c.next_attempt_at, events.c.seq).limit(
        bindparam("p_limit", type_=Integer())
    )
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query


_LEASE = (
    update(events)
    .where(events.c.seq == bindparam("p_seq", type_=events.c.seq.type))
    .values(
        lease_token=bindparam("p_token", type_=events.c.lease_token.type),
        lease_owner=bindparam("p_owner", type_=events.c.lease_owner.type),
        lease_expires_at=bindparam("p_expires", type_=events.c.lease_expires_at.type),
        attempts=events.c.attempts + 1,
        updated_at=bindparam("p_now", type_=events.c.updated_at.type),
    )
)

# Literals, not an expanding parameter: the statements using it run once for a whole batch.
_IS_PENDING = events.c.state.in_([literal_column(f"'{state}'") for state in PENDING])
_KEY = bindparam("p_key", type_=events.c.key.type)
_SNAPSHOT_AT = bindparam("p_snapshot_at", type_=events.c.snapshot_at.type)
_SEQ = bindparam("p_seq", type_=events.c.seq.type)

_SUPERSEDE_OLDER = (
    update(events)
    .where(
        events.c.key == _KEY,
        _IS_PENDING,
        # Only older ones: on PostgreSQL a newer snapshot may have committed
        # since this claim's read; it must stay queued and be applied next.
        or_(
            events.c.snapshot_at < _SNAPSHOT_AT,
            and_(events.c.snapshot_at == _SNAPSHOT_AT, events.c.seq < _SEQ),
        ),
    )
    .values(
        state=SUPERSEDED,
        last_error=bindparam("p_error", type_=events.c.last_error.type),
        lease_token=None,
        lease_owner=None,
        lease_expires_at=None,
        updated_at=bindparam("p_now", type_=events.c.updated_at.type),
    )
)

_NEWEST_SYNCED = (
    select(events.c.key, func.max(events.c.snapshot_at))
    .where(
        events.c.key.in_(bindparam("p_keys", type_=events.c.key.type, expanding=True)),
        events.c.state == SYNCED,
    )
    .group_by(events.c.key)
)

_MARK_SYNCED = (
    update(events)
    .where(
        events.c.id == bindparam("p_id", type_=events.c.id.type),
        events.c.lease_token == bindparam("p_token", type_=events.c.lease_token.type),
        _IS_PENDING,
    )
    .values(
        state=SYNCED,
        result=bindparam("p_result", type_=events.c.result.type),
        synced_at=bindparam("p_now", type_=events.c.synced_at.type),
        updated_at=bindparam("p_now", type_=events.c.updated_at.type),
        last_error=None,
        lease_token=None,
        lease_owner=None,
        lease_expires_at=None,
    )
)


class OutboxStore:
    """The outbox on one SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: Engine,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.engine = engine
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._dialect = engine.dialect.name
        # Built once: constructing it per webhook cost about a third of the enqueue's CPU.
        self._enqueue_stmt = (
            self._insert().on_conflict_do_nothing().returning(events.c.id, events.c.seq)
        )
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._committer = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        with self.engine.begin() as conn:
            yield conn

    # -- writing events -------------------------------------------------------

    def enqueue(self, conn: Connection, new: NewEvent) -> tuple[Event, bool]:
        """Store ``new`` unless it is a repeat; returns (the event, whether it is new).

        A repeat is an event with the same ``webhook_id``, or the same
        ``body_hash`` for the same ``key``; the first one is returned as is.
        """
        (answer,) = self.enqueue_many(conn, [new])
        return answer

    def enqueue_many(self, conn: Connection, news: Sequence[NewEvent]) -> list[tuple[Event, bool]]:
        """``enqueue`` each of ``news`` in order, in one multi-row INSERT: a group commit's
        statements were most of the writer's CPU when each event had its own (issue 14).

        A repeat (of a stored event or of one earlier in ``news``) is not inserted
        and is answered with the first event, read back.
        """
        now = self.clock()
        rows = [self._row(new, now) for new in news]
        inserted: dict[str, int] = {i: seq for i, seq in conn.execute(self._enqueue_stmt, rows)}
        answers: list[tuple[Event, bool]] = []
        for new, row in zip(news, rows, strict=True):
            seq = inserted.get(row["id"])
            if seq is None:
                answers.append((self._first_of(conn, new), False))
            else:
                answers.append((self._stored(new, row, seq), True))
        return answers

    @staticmethod
    def _row(new: NewEvent, now: datetime) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "key": new.key,
            "kind": new.kind,
            "payload": json.dumps(new.payload, sort_keys=True, separators=(",", ":")),
            "webhook_id": new.webhook_id,
            "body_hash": new.body_hash,
            # SQLite keeps no offset: stored in UTC, as ``from_row`` reads it back.
            "snapshot_at": _utc(new.snapshot_at),
            "state": new.state,
            "attempts": 0,
            "next_attempt_at": _utc(new.not_before) or now,
            "last_error": new.last_error,
            "received_at": now,
            "updated_at": now,
        }

    @staticmethod
    def _stored(new: NewEvent, row: dict[str, Any], seq: int) -> Event:
        """The event just inserted as ``row``, as ``from_row`` would read it back."""
        return Event(
            id=row["id"],
            seq=seq,
            key=new.key,
            kind=new.kind,
            payload=json.loads(row["payload"]),
            webhook_id=new.webhook_id,
            state=new.state,
            attempts=0,
            last_error=new.last_error,
            result=None,
            snapshot_at=row["snapshot_at"],
            received_at=row["received_at"],
            synced_at=None,
            next_attempt_at=row["next_attempt_at"],
            body_hash=new.body_hash,
        )

    def _first_of(self, conn: Connection, new: NewEvent) -> Event:
        """The stored event ``new`` repeats (same webhook id, or same key and body)."""
        clauses = [and_(events.c.key == new.key, events.c.body_hash == new.body_hash)]
        if new.webhook_id is not None:
            clauses.append(events.c.webhook_id == new.webhook_id)
        existing = conn.execute(
            select(events).where(or_(*clauses)).order_by(events.c.seq).limit(1)
        ).first()
        if existing is None:  # pragma: no cover - a conflict implies a row
            raise RuntimeError("insert conflicted but no existing event was found")
        return Event.from_row(existing)

    def enqueue_committed(self, new: NewEvent) -> tuple[Event, bool]:
        """``enqueue`` in a transaction of its own, returning once it is committed.

        Group commit: the calls that arrive while a commit is under way are
        stored together in the next transaction, so concurrent webhooks share
        one durable commit (one fsync) instead of queueing for one each. If that
        shared transaction fails, each of its events is tried alone, so one bad
        event cannot fail the others.
        """
        mine = _Pending(new)
        with self._queue_lock:
            self._queue.append(mine)
        with self._committer:
            if not mine.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit_group(group)
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def enqueue_group(self, news: Sequence[NewEvent]) -> list[tuple[Event, bool] | BaseException]:
        """``enqueue`` each of ``news`` in one shared transaction (one durable commit), for
        a single writer (``outbox.writer``); each answer is its result or its own error."""
        group = [_Pending(new) for new in news]
        self._commit_group(group)
        answers: list[tuple[Event, bool] | BaseException] = []
        for pending in group:
            assert pending.error is not None or pending.result is not None
            answers.append(pending.error or pending.result)  # type: ignore[arg-type]
        return answers

    def _commit_group(self, group: list[_Pending]) -> None:
        try:
            with self.transaction() as conn:
                results = self.enqueue_many(conn, [pending.new for pending in group])
                if any(created for _, created in results):
                    announce(conn)  # PostgreSQL: other processes' workers wake at commit
        except Exception:
            if len(group) == 1:
                group[0].error, group[0].done = sys.exc_info()[1], True
                return
            for pending in group:
                self._commit_group([pending])
            return
        for pending, result in zip(group, results, strict=True):
            pending.result, pending.done = result, True

    def _insert(self, table: Table = events) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"outbox does not support {self._dialect}")

    # -- claiming ---------------------------------------------------------------

    def claim(self, owner: str, *, limit: int, lease_seconds: float) -> list[Claim]:
        """Lease up to ``limit`` due events, at most one per key: each key's newest snapshot.

        Per key, the newest pending snapshot (by ``snapshot_at``, then receipt)
        is the one applied; older pending ones are coalesced into it (marked
        superseded), and one that is not newer than the key's last synced
        snapshot is superseded too. A key with a leased event is skipped, so a
        key never has two events in flight. Counts an attempt per claim, so an
        event that keeps killing its worker still ends dead.
        """
        now = self.clock()
        expires = now + timedelta(seconds=lease_seconds)
        with self.transaction() as conn:
            # The candidates' whole rows in one read, not one read per candidate.
            rows = conn.execute(_claimable(self._dialect), {"p_now": now, "p_limit": limit})
            candidates = [Event.from_row(row) for row in rows]
            if self._dialect == "postgresql":
                candidates = [c for c in candidates if self._lock_key(conn, c, now)]
            claims = [
                Claim(replace(candidate, attempts=candidate.attempts + 1), uuid.uuid4().hex)
                for candidate in self._coalesce(conn, candidates, now)
            ]
            if claims:
                # One statement for the whole batch. The event handed out is the row
                # read above plus the attempt: the lease columns are not part of it,
                # and the supersede above touched only the key's other rows.
                conn.execute(
                    _LEASE,
                    [
                        {
                            "p_seq": claim.event.seq,
                            "p_token": claim.token,
                            "p_owner": owner,
                            "p_expires": expires,
                            "p_now": now,
                        }
                        for claim in claims
                    ],
                )
        return claims

    def _lock_key(self, conn: Connection, candidate: Event, now: datetime) -> bool:
        """PostgreSQL: serialise claims of one key across workers; re-check under the
        lock, since another worker may have committed a claim since our first read."""
        locked = conn.execute(
            select(func.pg_try_advisory_xact_lock(func.hashtext(candidate.key)))
        ).scalar()
        recheck = _claimable(self._dialect, one=True)
        params = {"p_now": now, "p_seq": candidate.seq}
        return bool(locked) and conn.execute(recheck, params).first() is not None

    def _coalesce(self, conn: Connection, candidates: list[Event], now: datetime) -> list[Event]:
        """Supersede each candidate key's older pending events; returns the candidates
        that are newer than their key's synced snapshot (the others are superseded too).

        The candidates are of distinct keys, so one statement for all of them does
        what one per candidate did.
        """
        if not candidates:
            return []
        conn.execute(
            _SUPERSEDE_OLDER,
            [
                {
                    "p_key": newest.key,
                    "p_snapshot_at": newest.snapshot_at,
                    "p_seq": newest.seq,
                    "p_error": f"coalesced into newer snapshot {newest.id}",
                    "p_now": now,
                }
                for newest in candidates
            ],
        )
        params = {"p_keys": [newest.key for newest in candidates]}
        applied = {key: _utc(at) for key, at in conn.execute(_NEWEST_SYNCED, params)}
        fresh = []
        for newest in candidates:
            synced = applied.get(newest.key)
            if synced is None or newest.snapshot_at > synced:
                fresh.append(newest)
            else:
                self._set_state(
                    conn, newest.id, SUPERSEDED, error="not newer than the snapshot already applied"
                )
        return fresh

    # -- settling -----------------------------------------------------------------

    def _fenced(self, event_id: str, token: str) -> Any:
        return and_(
            events.c.id == event_id,
            events.c.lease_token == token,
            events.c.state.in_(PENDING),
        )

    def _held_attempts(self, conn: Connection, event_id: str, token: str) -> int:
        """The event's attempt count if ``token`` still holds it, else ``LeaseLost``."""
        row = conn.execute(select(events.c.attempts).where(self._fenced(event_id, token))).first()
        if row is None:
            raise LeaseLost(event_id)
        return int(row.attempts)

    def mark_synced(
        self, conn: Connection, event_id: str, token: str, result: dict[str, Any]
    ) -> None:
        """Record success on ``conn`` (the caller's transaction); ``LeaseLost`` if fenced out."""
        done = conn.execute(
            _MARK_SYNCED,
            {
                "p_id": event_id,
                "p_token": token,
                "p_result": json.dumps(result, sort_keys=True),
                "p_now": self.clock(),
            },
        )
        if done.rowcount != 1:
            raise LeaseLost(event_id)

    def mark_synced_many(
        self, conn: Connection, settles: Sequence[tuple[str, str, dict[str, Any]]]
    ) -> None:
        """``mark_synced`` of each (event id, token, result) in one statement, on ``conn``;
        ``LeaseLost`` if any of them is fenced out (the caller rolls them all back)."""
        if not conn.dialect.supports_sane_multi_rowcount:
            for event_id, token, result in settles:
                self.mark_synced(conn, event_id, token, result)
            return
        now = self.clock()
        done = conn.execute(
            _MARK_SYNCED,
            [
                {
                    "p_id": event_id,
                    "p_token": token,
                    "p_result": json.dumps(result, sort_keys=True),
                    "p_now": now,
                }
                for event_id, token, result in settles
            ],
        )
        if done.rowcount != len(settles):
            raise LeaseLost(", ".join(event_id for event_id, _, _ in settles))

    def mark_failed(
        self,
        event_id: str,
        token: str,
        error: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> Event:
        """Schedule a retry, or dead-letter when permanent or out of attempts."""
        now = self.clock()
        with self.transaction() as conn:
            attempts = self._held_attempts(conn, event_id, token)
            if retryable and not self.retry.exhausted(attempts):
                delay = max(self.retry.delay(attempts), retry_after or 0.0)
                state, next_at = RETRYING, now + timedelta(seconds=delay)
            else:
                state, next_at = DEAD, now
                if retryable:
                    error = f"gave up after {attempts} attempts: {error}"
            return self._set_state(conn, event_id, state, error=error, next_attempt_at=next_at)

    def quarantine(self, event_id: str, token: str, reason: str) -> Event:
        """Park an event the mapping cannot place; ``replay`` brings it back."""
        with self.transaction() as conn:
            self._held_attempts(conn, event_id, token)
            return self._set_state(conn, event_id, QUARANTINED, error=reason)

    def extend(self, leases: Sequence[tuple[str, str]], lease_seconds: float) -> int:
        """Renew the leases ``(event id, token)`` still held to ``lease_seconds`` from now.

        A worker renews its batch's leases while the backend works on it, so a
        slow but live batch is not taken over; a stalled or dead worker renews
        nothing and its leases expire. Fenced like a settle: a lease another
        worker has taken is left alone. Returns how many were renewed.
        """
        if not leases:
            return 0
        until = self.clock() + timedelta(seconds=lease_seconds)
        renewed = 0
        with self.transaction() as conn:
            for event_id, token in leases:
                result = conn.execute(
                    update(events)
                    .where(self._fenced(event_id, token))
                    .values(lease_expires_at=until)
                )
                renewed += result.rowcount
        return renewed

    def postpone(self, event_id: str, token: str, until: datetime, reason: str) -> Event:
        """Put a claimed event back until ``until`` without counting the attempt.

        For a remote system that refuses everything for a while (HubSpot's
        account migration, its daily limit): the event is not at fault, so
        however often it meets the pause it moves no closer to dead.
        ``LeaseLost`` if ``token`` no longer holds it.
        """
        with self.transaction() as conn:
            attempts = self._held_attempts(conn, event_id, token)
            return self._set_state(
                conn,
                event_id,
                RETRYING,
                error=reason,
                next_attempt_at=_utc(until),
                attempts=max(attempts - 1, 0),
            )

    def release(self, event_id: str, token: str) -> None:
        """Give a claimed event back unprocessed (shutdown); the attempt is not counted."""
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                update(events)
                .where(self._fenced(event_id, token))
                .values(
                    attempts=func.max(events.c.attempts - 1, 0)
                    if self._dialect == "sqlite"
                    else func.greatest(events.c.attempts - 1, 0),
                    lease_token=None,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )

    # -- worker heartbeats ---------------------------------------------------------

    def beat(self, worker_id: str) -> None:
        """Record that the worker process ``worker_id`` is alive now (its row made if need be).

        ``worker_id`` must be the prefix, up to a ``:``, of every ``owner`` the
        process claims with: that is how its claims are found once it is stale.
        """
        now = self.clock()
        stmt = (
            self._insert(workers)
            .values(worker_id=worker_id, started_at=now, heartbeat_at=now)
            .on_conflict_do_update(index_elements=[workers.c.worker_id], set_={"heartbeat_at": now})
        )
        with self.transaction() as conn:
            conn.execute(stmt)

    def forget_worker(self, worker_id: str) -> None:
        """Drop the process's heartbeat row (a clean stop, its claims released already)."""
        with self.transaction() as conn:
            conn.execute(delete(workers).where(workers.c.worker_id == worker_id))

    def take_over_stale(self, stale_seconds: float) -> dict[str, int]:
        """Free the claims of every worker process silent for ``stale_seconds``.

        Each stale row is deleted and its pending claims lose their lease (token,
        owner, expiry), so any worker may claim them now; the attempt already
        counted stays counted, as after an expired lease. Returns how many claims
        each stale worker lost. A process that was only paused finds, when it
        comes back, that its token no longer holds (``LeaseLost``), and its next
        beat registers it again as a new, live process.
        """
        now = self.clock()
        cutoff = now - timedelta(seconds=stale_seconds)
        freed: dict[str, int] = {}
        with self.transaction() as conn:
            # Deleted first, with RETURNING: of two processes reaping at once on
            # PostgreSQL only one gets each row, and a row beaten since is left alone.
            stale = conn.execute(
                delete(workers)
                .where(workers.c.heartbeat_at < cutoff)
                .returning(workers.c.worker_id)
            ).scalars()
            for worker_id in list(stale):
                prefix = f"{worker_id}:"
                # An exact prefix test, not LIKE: a host name may hold ``_``, a LIKE wildcard.
                owned = func.substr(events.c.lease_owner, 1, len(prefix)) == prefix
                result = conn.execute(
                    update(events)
                    .where(events.c.state.in_(PENDING), events.c.lease_token.is_not(None), owned)
                    .values(
                        lease_token=None,
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                )
                freed[worker_id] = result.rowcount
        return freed

    def live_workers(self) -> list[tuple[str, datetime]]:
        """Worker processes with a heartbeat row: (id, last heartbeat), oldest beat first."""
        query = select(workers.c.worker_id, workers.c.heartbeat_at).order_by(workers.c.heartbeat_at)
        with self._reader.connect() as conn:
            return [(row.worker_id, _utc(row.heartbeat_at)) for row in conn.execute(query)]  # type: ignore[misc]

    def replay(self, event_ids: Sequence[str], *, actor: str = "unknown") -> list[Event]:
        """Queue dead or quarantined events again with a fresh attempt count.

        Idempotent: an event already queued, retrying or synced is returned
        unchanged. Each event actually re-queued gets an audit row naming
        ``actor``, in the same transaction. ``EventNotFound`` replays nothing.
        """
        with self.transaction() as conn:
            return [self._replay_one(conn, event_id, actor) for event_id in event_ids]

    def replay_state(self, state: str, *, actor: str) -> list[Event]:
        """Replay every event now in ``state`` (dead or quarantined); returns those re-queued."""
        if state not in REPLAYABLE:
            raise ValueError(f"only {' and '.join(REPLAYABLE)} events can be replayed")
        with self.transaction() as conn:
            ids = conn.execute(
                select(events.c.id).where(events.c.state == state).order_by(events.c.seq)
            ).scalars()
            out = [self._replay_one(conn, event_id, actor) for event_id in list(ids)]
        return [event for event in out if event.state == QUEUED]

    def _replay_one(self, conn: Connection, event_id: str, actor: str) -> Event:
        current = self._get(conn, event_id)
        if current.state not in REPLAYABLE:
            return current
        now = self.clock()
        # Conditional on the state, so of two concurrent replays only one re-queues and audits.
        row = conn.execute(
            update(events)
            .where(events.c.id == event_id, events.c.state.in_(REPLAYABLE))
            .values(
                state=QUEUED,
                attempts=0,
                next_attempt_at=now,
                updated_at=now,
                lease_token=None,
                lease_owner=None,
                lease_expires_at=None,
            )
            .returning(events)
        ).first()
        if row is None:
            return self._get(conn, event_id)
        conn.execute(
            insert(replays).values(
                event_id=event_id, replayed_at=now, actor=actor, from_state=current.state
            )
        )
        return Event.from_row(row)

    def replays(self, event_id: str) -> list[Replay]:
        """The event's audited replays, oldest first."""
        query = select(replays).where(replays.c.event_id == event_id).order_by(replays.c.id)
        with self._reader.connect() as conn:
            return [
                Replay(
                    event_id=row.event_id,
                    replayed_at=_utc(row.replayed_at),  # type: ignore[arg-type]
                    actor=row.actor,
                    from_state=row.from_state,
                )
                for row in conn.execute(query)
            ]

    def _set_state(
        self,
        conn: Connection,
        event_id: str,
        state: str,
        *,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        attempts: int | None = None,
    ) -> Event:
        now = self.clock()
        values: dict[str, Any] = {
            "state": state,
            "last_error": error,
            "next_attempt_at": next_attempt_at or now,
            "updated_at": now,
            "lease_token": None,
            "lease_owner": None,
            "lease_expires_at": None,
        }
        if attempts is not None:
            values["attempts"] = attempts
        row = conn.execute(
            update(events).where(events.c.id == event_id).values(**values).returning(events)
        ).one()
        return Event.from_row(row)

    # -- reading --------------------------------------------------------------------

    def _get(self, conn: Connection, event_id: str) -> Event:
        row = conn.execute(select(events).where(events.c.id == event_id)).first()
        if row is None:
            raise EventNotFound(event_id)
        return Event.from_row(row)

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self._reader.connect() as conn:
            conn.execute(select(1)).scalar()

    def get(self, event_id: str) -> Event | None:
        """The event, or ``None``."""
        with self._reader.connect() as conn:
            row = conn.execute(select(events).where(events.c.id == event_id)).first()
        return None if row is None else Event.from_row(row)

    def for_key(self, key: str, *, limit: int = 50) -> list[Event]:
        """The key's events (a booking's snapshots), newest received first."""
        query = select(events).where(events.c.key == key).order_by(events.c.seq.desc())
        with self._reader.connect() as conn:
            return [Event.from_row(row) for row in conn.execute(query.limit(limit))]

    def list(self, state: str | None = None, *, limit: int = 100, offset: int = 0) -> list[Event]:
        """Events, newest first, optionally of one state."""
        query = select(events).order_by(events.c.seq.desc()).limit(limit).offset(offset)
        if state is not None:
            query = query.where(events.c.state == state)
        with self._reader.connect() as conn:
            return [Event.from_row(row) for row in conn.execute(query)]

    def newest_for_key(self, key: str) -> Event | None:
        """The key's newest snapshot (by ``snapshot_at``, then receipt), in any state."""
        query = (
            select(events)
            .where(events.c.key == key)
            .order_by(events.c.snapshot_at.desc(), events.c.seq.desc())
            .limit(1)
        )
        with self._reader.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else Event.from_row(row)

    def counts(self) -> dict[str, int]:
        """Number of events in each state (every state present, zeros included)."""
        query = select(events.c.state, func.count()).group_by(events.c.state)
        with self._reader.connect() as conn:
            found = {str(row[0]): int(row[1]) for row in conn.execute(query)}
        return {state: found.get(state, 0) for state in STATES}

    def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest pending event was received, or ``None``."""
        query = select(func.min(events.c.received_at)).where(events.c.state.in_(PENDING))
        with self._reader.connect() as conn:
            oldest = _utc(conn.execute(query).scalar())
        return None if oldest is None else (self.clock() - oldest).total_seconds()
