"""The single outbox writer on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from outbox.schema import events
from outbox.store import Event, NewEvent, OutboxStore
from outbox.writer import OutboxWriter


class CountingStore(OutboxStore):
    """The real store, recording each group commit's size and what another connection saw."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.groups: list[int] = []

    def enqueue_group(self, news: Sequence[NewEvent]) -> list[tuple[Event, bool] | BaseException]:
        self.groups.append(len(news))
        return super().enqueue_group(news)


@pytest.fixture
def engine(outbox_engine: Engine) -> Engine:
    """The bare outbox of ``tests/conftest.py``, on SQLite and again on PostgreSQL."""
    return outbox_engine


def _new(key: str, body: str = "a", webhook_id: str | None = None) -> NewEvent:
    return NewEvent(
        key=key,
        kind="booking.created",
        payload={"bookingId": key},
        body_hash=body,
        snapshot_at=datetime(2026, 11, 29, tzinfo=UTC),
        webhook_id=webhook_id,
    )


def _stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def test_concurrent_enqueues_share_commits_and_answer_only_once_committed(engine: Engine) -> None:
    """300 concurrent awaits are committed in far fewer transactions, each answered only
    when another connection can already read its event, and repeats dedupe."""
    store = CountingStore(engine)
    writer = OutboxWriter(store)

    async def one(index: int) -> tuple[Event, bool, int]:
        event, created = await writer.enqueue(_new(f"b-{index % 250}"))
        return event, created, _stored(engine)

    async def burst() -> list[tuple[Event, bool, int]]:
        return await asyncio.gather(*(one(i) for i in range(300)))

    try:
        answers = asyncio.run(burst())
    finally:
        writer.close()
    assert sum(created for _, created, _ in answers) == 250
    assert len({event.id for event, _, _ in answers}) == 250
    with engine.connect() as conn:
        committed = {row.id for row in conn.execute(select(events.c.id))}
    assert all(event.id in committed for event, _, seen in answers)
    assert all(seen >= 1 for _, _, seen in answers)
    assert sum(store.groups) == 300
    assert len(store.groups) < 100, store.groups


def test_one_bad_event_fails_alone(engine: Engine) -> None:
    """An event the database refuses raises in its own caller; its group's others commit."""
    writer = OutboxWriter(OutboxStore(engine))
    bad = NewEvent(**{**_new("bad", body="b").__dict__, "payload": {"not": {1, 2}}})  # not JSON

    async def burst() -> list[object]:
        return await asyncio.gather(
            writer.enqueue(_new("good-1")),
            writer.enqueue(bad),
            writer.enqueue(_new("good-2")),
            return_exceptions=True,
        )

    try:
        good_1, failed, good_2 = asyncio.run(burst())
    finally:
        writer.close()
    assert isinstance(failed, TypeError)
    assert not isinstance(good_1, BaseException)
    assert not isinstance(good_2, BaseException)
    assert _stored(engine) == 2


def test_busy_while_a_commit_is_queued_or_under_way(engine: Engine) -> None:
    """``busy`` (what an embedded worker yields to) is true from submit through the
    commit, and false once the writer is idle."""
    seen_during: list[bool] = []

    class Watched(OutboxStore):
        def enqueue_group(
            self, news: Sequence[NewEvent]
        ) -> list[tuple[Event, bool] | BaseException]:
            seen_during.append(writer.busy())
            return super().enqueue_group(news)

    writer = OutboxWriter(Watched(engine))
    assert not writer.busy()
    answered: list[object] = []
    writer.submit(_new("busy-1"), answered.append)
    deadline = time.monotonic() + 10
    while not answered and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.close()
    assert answered
    assert seen_during == [True]
    assert not writer.busy()


def test_a_group_is_one_insert_and_its_answers_are_what_is_stored(engine: Engine) -> None:
    """``enqueue_many`` stores a group in one INSERT; a repeat of a stored event, of an
    earlier one in the same group, or of a webhook id is answered with the first event,
    and every new event's answer equals the row read back."""
    from sqlalchemy import event as sa_event

    store = OutboxStore(engine)
    with store.transaction() as conn:
        ((stored, _),) = store.enqueue_many(conn, [_new("old", webhook_id="wh-old")])
    inserts: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        with store.transaction() as conn:
            answers = store.enqueue_many(
                conn,
                [
                    _new("b-1"),
                    _new("old"),  # the same key and body as a stored event
                    _new("b-2", webhook_id="wh-2"),
                    _new("b-1"),  # a repeat of the first of this group
                    _new("b-3", body="other", webhook_id="wh-old"),  # a stored webhook id
                    _new("b-1", body="newer"),  # the same booking, another body: new
                ],
            )
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    assert len(inserts) == 1, inserts
    assert [created for _, created in answers] == [True, False, True, False, False, True]
    assert answers[1][0] == stored
    assert answers[4][0] == stored
    assert answers[3][0] == answers[0][0]
    for event, created in answers:
        if created:
            assert store.get(event.id) == event
    assert _stored(engine) == 4
