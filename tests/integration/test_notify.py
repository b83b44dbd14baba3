"""Automatic emails against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from adapter.api.app import create_app
from adapter.backends.local.models import activities, tasks
from adapter.notify import store as sends
from adapter.services import Services, build_services
from adapter.settings import Settings
from outbox.schema import events
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, free_port, seed_booking

URL = "/api/bookings/incoming"
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}
SEND = """        send:
          template: workshop-prep
          to: "{email}"
          subject: "Prep for your workshop on {date}"
          reply_to: team@example.com
"""


class Inbox:
    """An aiosmtpd handler keeping every message it accepted; ``mode`` picks a fault."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.messages: list[EmailMessage] = []
        self.release = threading.Event()

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        if self.mode == "refuse":
            return "550 5.1.1 mailbox unavailable"
        if self.mode == "slow":
            await asyncio.sleep(2.5)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=policy.SMTP)
        self.messages.append(message)  # type: ignore[arg-type]
        if self.mode == "drop":
            # Accepted, then the connection dies before the client hears so.
            assert server.transport is not None
            server.transport.abort()
        if self.mode == "stall":
            while not self.release.is_set():
                await asyncio.sleep(0.05)
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    handler.release.set()
    controller.stop()


def write_mapping(folder: Path) -> Path:
    """The default mapping with the prep task made automatic, its offset -7d kept, and
    skip_if_past off so a test can make it due now; templates beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    text = text.replace("        skip_if_past: true\n", SEND, 1)
    (folder / "default.yaml").write_text(text, encoding="utf-8")
    (folder / "workshop-prep.txt").write_text(
        "Hi {{ firstName }},\n\nYour workshop starts {{ date }} ({{ timezone }}).\n"
        "Join: {{ meetingUrl }}\nBring: {{ answers.bring | default('a laptop') }}\n",
        encoding="utf-8",
    )
    (folder / "workshop-prep.html").write_text(
        "<p>Hi {{ firstName }},</p><p><a href='{{ meetingUrl }}'>Join</a></p>", encoding="utf-8"
    )
    return folder / "default.yaml"


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    return write_mapping(tmp_path / "mappings")


@pytest.fixture
def notify(
    make_settings: Callable[..., Settings], mapping: Path, inbox: tuple[Inbox, int]
) -> Iterator[tuple[Services, TestClient]]:
    settings = make_settings(
        mappings_path=mapping,
        smtp_url=f"smtp://127.0.0.1:{inbox[1]}",
        smtp_from="crm@bookme.example",
        sync_wait_ms=0,
        outbox_lease_seconds=2,
    )
    svc = build_services(settings)
    with TestClient(create_app(services=svc, embedded_workers=0)) as http:
        yield svc, http
    svc.close()


def workshop(due_in: timedelta, **changes: Any) -> dict[str, Any]:
    """A workshop whose prep mail (7 days before) is due ``due_in`` from now."""
    start = datetime.now(UTC) + timedelta(days=7) + due_in
    body = seed_booking(
        scheduledDate=start.isoformat().replace("+00:00", "Z"),
        meetingUrl="https://meet.example/ws",
        timezone="Europe/Stockholm",
        name="Ada\r\nBcc: evil@example.com Lovelace",
    )
    body.update(changes)
    return body


def deliver(http: TestClient, body: dict[str, Any]) -> None:
    response = http.post(URL, json=body, headers=SECRET)
    assert response.status_code in (200, 202), response.text


def send_row(svc: Services) -> sends.Send:
    with svc.engine.connect() as conn:
        row = sends.get(conn, "test-123", "prep-info")
    assert row is not None
    return row


def test_mail_goes_out_once_at_its_due_moment(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """A due prep mail is sent once (text + HTML, fixed Message-ID, no injected header),
    the task is done and an EMAIL activity records it; draining again sends nothing."""
    svc, http = notify
    deliver(http, workshop(timedelta(seconds=-1)))
    worker = svc.new_worker()
    worker.drain()
    worker.drain()
    (mail,) = inbox[0].messages
    assert mail["To"] == "test@example.com"
    assert mail["Reply-To"] == "team@example.com"
    assert mail["Message-ID"].startswith("<bookme-crm.")
    assert mail["Bcc"] is None
    assert "\r\nBcc" not in mail.as_string()
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None
    assert "Join: https://meet.example/ws" in text.get_content()
    assert html is not None
    assert "href='https://meet.example/ws'" in html.get_content()
    print(mail.as_string())  # the captured mail, for the report (pytest -s)
    assert send_row(svc).state == sends.SENT
    with svc.engine.connect() as conn:
        status = conn.execute(select(tasks.c.status).where(tasks.c.key == "prep-info")).scalar()
        emails = conn.execute(
            select(activities.c.subject).where(activities.c.type == "EMAIL")
        ).all()
    assert status == "done"
    assert [row.subject for row in emails] == [mail["Subject"]]


def test_a_later_snapshot_never_sends_a_sent_mail_again(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """Once sent, an update or reschedule of the booking sends the prep mail no second time."""
    svc, http = notify
    deliver(http, workshop(timedelta(seconds=-1)))
    svc.new_worker().drain()
    deliver(http, workshop(timedelta(seconds=-1), event="booking.updated", updatedAt=_stamp(1)))
    deliver(http, workshop(timedelta(seconds=-2), event="booking.rescheduled", updatedAt=_stamp(2)))
    svc.new_worker().drain()
    assert len(inbox[0].messages) == 1
    assert send_row(svc).state == sends.SENT


def test_reschedule_moves_and_cancel_drops(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """A send not yet due moves with a reschedule; once cancelled, nothing is ever sent."""
    svc, http = notify
    deliver(http, workshop(timedelta(hours=5)))
    svc.new_worker().drain()
    first_due = send_row(svc).due_at
    deliver(http, workshop(timedelta(seconds=1), event="booking.rescheduled", updatedAt=_stamp(1)))
    svc.new_worker().drain()
    assert send_row(svc).due_at < first_due
    deliver(http, workshop(timedelta(seconds=1), event="booking.cancelled", updatedAt=_stamp(2)))
    svc.new_worker().drain()
    time.sleep(1.5)
    svc.new_worker().drain()
    assert inbox[0].messages == []
    assert send_row(svc).state == sends.DROPPED


def test_task_done_by_hand_is_not_sent(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int], admin: dict[str, str]
) -> None:
    """A prep task a salesperson completed before its due moment sends nothing."""
    svc, http = notify
    deliver(http, workshop(timedelta(seconds=1)))
    svc.new_worker().drain()
    (task,) = [t for t in http.get("/api/tasks", headers=admin).json() if t["key"] == "prep-info"]
    assert (
        http.patch(f"/api/tasks/{task['id']}", json={"status": "done"}, headers=admin).status_code
        == 200
    )
    time.sleep(1.5)
    svc.new_worker().drain()
    assert inbox[0].messages == []
    assert send_row(svc).state == sends.SKIPPED


def test_missed_within_the_window_goes_out_on_start(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """A send due 2 h ago (the service was down) is still useful within 24 h: it goes out."""
    svc, http = notify
    deliver(http, workshop(timedelta(hours=-2)))
    svc.new_worker().drain()
    assert len(inbox[0].messages) == 1
    assert send_row(svc).state == sends.SENT


def test_missed_beyond_the_window_is_reported(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """A send due longer ago than its window (24 h) is reported missed, not sent."""
    svc, http = notify
    deliver(http, workshop(timedelta(hours=-30)))
    svc.new_worker().drain()
    assert inbox[0].messages == []
    assert send_row(svc).state == sends.MISSED


def test_drop_after_data_is_uncertain_not_repeated(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """A server that drops the connection after DATA leaves the send uncertain: no resend."""
    svc, http = notify
    inbox[0].mode = "drop"
    deliver(http, workshop(timedelta(seconds=-1)))
    svc.new_worker().drain()
    time.sleep(2.5)
    svc.new_worker().drain()
    assert len(inbox[0].messages) == 1
    row = send_row(svc)
    assert row.state == sends.UNCERTAIN
    assert "after DATA" in (row.last_error or "")


def test_a_slow_send_keeps_its_lease(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """A send slower than the lease (2 s) renews it: a second worker meanwhile takes
    nothing over, and the mail goes out once."""
    svc, http = notify
    inbox[0].mode = "slow"
    deliver(http, workshop(timedelta(seconds=-1)))
    first = threading.Thread(target=svc.new_worker().drain)
    first.start()
    time.sleep(0.5)
    while first.is_alive() and not inbox[0].messages:
        svc.new_worker().run_once()
        time.sleep(0.2)
    first.join()
    assert len(inbox[0].messages) == 1
    assert send_row(svc).state == sends.SENT


def test_refused_recipient_dead_letters_with_reason(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """A 5xx for the recipient dead-letters the send job with the server's reason."""
    svc, http = notify
    inbox[0].mode = "refuse"
    deliver(http, workshop(timedelta(seconds=-1)))
    svc.new_worker().drain()
    row = send_row(svc)
    assert row.state == sends.FAILED
    assert "550" in (row.last_error or "")
    with svc.engine.connect() as conn:
        job = conn.execute(
            select(events.c.state, events.c.last_error).where(events.c.kind == "notify.send")
        ).one()
    assert job.state == "dead"
    assert "mailbox unavailable" in job.last_error


def test_sigkilled_sender_sends_no_duplicate(
    notify: tuple[Services, TestClient],
    inbox: tuple[Inbox, int],
    mapping: Path,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """A worker process SIGKILLed while the server holds its DATA: the next worker marks
    the send uncertain and the server has the message exactly once."""
    svc, http = notify
    inbox[0].mode = "stall"
    deliver(http, workshop(timedelta(seconds=-1)))
    env = {
        **os.environ,
        "DATABASE_URL": sqlite_url,
        "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAPPINGS_PATH": str(mapping),
        "SMTP_URL": f"smtp://127.0.0.1:{inbox[1]}",
        "SMTP_FROM": "crm@bookme.example",
        "OUTBOX_LEASE_SECONDS": "2",
        "DATA_DIR": str(tmp_path / "var"),
        "ADMIN_TOKEN": "test-admin-token-0123456789",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapter.cli", "worker", "--drain"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not inbox[0].messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inbox[0].messages, "the worker process never reached DATA"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    inbox[0].release.set()
    time.sleep(2.5)  # the dead process's lease runs out
    svc.new_worker().drain()
    assert len(inbox[0].messages) == 1
    assert send_row(svc).state == sends.UNCERTAIN


def _stamp(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def test_without_smtp_automatic_tasks_stay_ordinary(
    make_settings: Callable[..., Settings], mapping: Path
) -> None:
    """SMTP_URL unset: the task is an ordinary open task, no send is scheduled, and
    /readyz stays ready while saying why no mail goes out."""
    svc = build_services(make_settings(mappings_path=mapping, sync_wait_ms=0))
    try:
        with TestClient(create_app(services=svc, embedded_workers=0)) as http:
            deliver(http, workshop(timedelta(seconds=-1)))
            svc.new_worker().drain()
            ready = http.get("/readyz")
        assert ready.status_code == 200
        mail = ready.json()["mail"]
        assert mail["enabled"] is False
        assert "SMTP_URL is not set" in mail["reason"]
        assert mail["automaticTasks"] == ["workshop/prep-info"]
        with svc.engine.connect() as conn:
            assert sends.for_booking(conn, "test-123") == []
            status = conn.execute(select(tasks.c.status).where(tasks.c.key == "prep-info")).scalar()
        assert status == "todo"
    finally:
        svc.close()


def _dashboard(svc: Services) -> TestClient:
    from tests.integration.test_dashboard import log_in

    client = TestClient(create_app(services=svc, embedded_workers=0), base_url="https://testserver")
    client.__enter__()
    assert log_in(client).status_code == 303
    return client


def test_dashboard_resolves_an_uncertain_send(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """/ui/mails shows an uncertain send with "Send again" (resent once, the same
    Message-ID) and "Mark sent" (recorded as sent, nothing resent)."""
    from tests.integration.test_dashboard import csrf_of

    svc, http = notify
    inbox[0].mode = "drop"
    deliver(http, workshop(timedelta(seconds=-1)))
    svc.new_worker().drain()
    ui = _dashboard(svc)
    try:
        page = ui.get("/ui/mails")
        assert page.status_code == 200
        assert "uncertain" in page.text
        assert "Send again" in page.text
        assert "Mark sent" in page.text
        inbox[0].mode = "ok"
        path = "/ui/mails/test-123/prep-info"
        again = ui.post(f"{path}/send-again", data={"csrf": csrf_of(page.text)})
        assert again.status_code == 200
        svc.new_worker().drain()
        first, second = inbox[0].messages
        assert first["Message-ID"] == second["Message-ID"]
        assert send_row(svc).state == sends.SENT
        # Once sent, neither action applies: nothing changes, nothing is resent.
        page = ui.get("/ui/mails")
        refused = ui.post(f"{path}/mark-sent", data={"csrf": csrf_of(page.text)})
        assert "nothing changed" in refused.text
        svc.new_worker().drain()
        assert len(inbox[0].messages) == 2
    finally:
        ui.__exit__(None, None, None)


def test_mark_sent_records_the_mail_without_sending(
    notify: tuple[Services, TestClient], inbox: tuple[Inbox, int]
) -> None:
    """ "Mark sent" on an uncertain send records it (task done, EMAIL activity), sends nothing."""
    from tests.integration.test_dashboard import csrf_of

    svc, http = notify
    inbox[0].mode = "drop"
    deliver(http, workshop(timedelta(seconds=-1)))
    svc.new_worker().drain()
    ui = _dashboard(svc)
    try:
        page = ui.get("/ui/mails")
        done = ui.post("/ui/mails/test-123/prep-info/mark-sent", data={"csrf": csrf_of(page.text)})
        assert "recorded as sent" in done.text
    finally:
        ui.__exit__(None, None, None)
    svc.new_worker().drain()
    assert len(inbox[0].messages) == 1
    assert send_row(svc).state == sends.SENT
    with svc.engine.connect() as conn:
        status = conn.execute(select(tasks.c.status).where(tasks.c.key == "prep-info")).scalar()
        n_emails = len(
            conn.execute(select(activities.c.id).where(activities.c.type == "EMAIL")).all()
        )
    assert status == "done"
    assert n_emails == 1


@pytest.mark.postgres
def test_on_postgresql_reschedule_then_send_once(
    make_settings: Callable[..., Settings],
    mapping: Path,
    inbox: tuple[Inbox, int],
    pg_url: str,
) -> None:
    """On PostgreSQL too: a send moved by a reschedule goes out once, at its new moment."""
    settings = make_settings(
        database_url=pg_url,
        mappings_path=mapping,
        smtp_url=f"smtp://127.0.0.1:{inbox[1]}",
        smtp_from="crm@bookme.example",
        sync_wait_ms=0,
    )
    svc = build_services(settings)
    try:
        with TestClient(create_app(services=svc, embedded_workers=0)) as http:
            deliver(http, workshop(timedelta(hours=5)))
            svc.new_worker().drain()
            assert send_row(svc).state == sends.SCHEDULED
            moved = workshop(
                timedelta(seconds=-1), event="booking.rescheduled", updatedAt=_stamp(1)
            )
            deliver(http, moved)
            svc.new_worker().drain()
            svc.new_worker().drain()
        assert len(inbox[0].messages) == 1
        assert send_row(svc).state == sends.SENT
    finally:
        svc.close()


def test_migration_0017_mirrors_the_sends_table(engine: Engine) -> None:
    """Migration 0017 creates exactly notify_sends as adapter.notify.store defines it."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), sends.sends_metadata)
    assert [d for d in diff if "notify_sends" in repr(d)] == []
