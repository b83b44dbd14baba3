"""Automatic emails with the HubSpot backend: the task's status read back, the mail logged
as an email engagement on the contact and the deal (against the fake HubSpot)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine

from adapter.backends.hubspot import HubSpotBackend, RollingWindow, build_api, run_setup
from adapter.booking import parse_booking
from adapter.ingest import accept_booking
from adapter.mapping import load_mapping
from adapter.notify import SEND_KIND, NotifyHandler, SendScheduler, SmtpSender
from adapter.notify import store as sends
from adapter.notify.hubspot import HubSpotMailRecord
from adapter.notify.smtp import SmtpTarget
from adapter.worker import Worker
from outbox.store import OutboxStore
from tests.conftest import DEFAULT_MAPPING, free_port
from tests.fakes.hubspot import FakeHubSpot
from tests.integration.test_notify import Inbox, workshop
from tests.integration.test_notify import mapping as mapping  # the fixture


class MailPortal:
    """The fake portal, a worker with the send room, and a loopback SMTP server."""

    def __init__(self, fake: FakeHubSpot, engine: Engine, mapping_path: Path, port: int) -> None:
        budget = RollingWindow(10_000, 10.0, sleep=lambda _s: None)
        self.fake = fake
        self.api = build_api(
            fake.token or "",
            fake.url,
            (100, 10.0),
            timeout=5.0,
            max_attempts=2,
            sleep=lambda _s: None,
            budget=budget,
            search_budget=budget,
        )
        self.mapping = load_mapping(mapping_path)
        assert run_setup(self.api, load_mapping(DEFAULT_MAPPING)).ok
        backend = HubSpotBackend(
            self.api,
            engine,
            lambda: self.mapping.defaults.hubspot,
            mapping_in_use=lambda: self.mapping,
        )
        self.store = OutboxStore(engine)
        self.engine = engine
        handler = NotifyHandler(
            self.store,
            SmtpSender(SmtpTarget.parse(f"smtp://127.0.0.1:{port}")),
            HubSpotMailRecord(self.api),
            lambda: self.mapping,
            templates=mapping_path.parent,
            mail_from="crm@bookme.example",
        )
        self.worker = Worker(
            self.store,
            backend,
            lambda: self.mapping,
            handlers={SEND_KIND: handler},
            plan_hooks=[SendScheduler(self.store).schedule],
        )

    def book(self, due_in: timedelta) -> None:
        body = workshop(due_in)
        accept_booking(self.store, parse_booking(body), body, self.mapping)
        self.worker.drain()

    def send_state(self) -> str:
        with self.engine.connect() as conn:
            row = sends.get(conn, "test-123", "prep-info")
        assert row is not None
        return row.state


@pytest.fixture
def portal(fake: FakeHubSpot, engine: Engine, mapping: Path) -> Iterator[tuple[MailPortal, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield MailPortal(fake, engine, mapping, port), inbox
    controller.stop()


def test_sent_mail_is_an_email_engagement_on_contact_and_deal(
    portal: tuple[MailPortal, Inbox],
) -> None:
    """The sent prep mail becomes one HubSpot email (EMAIL, SENT, subject, text) associated
    to the booking's contact and deal, and the HubSpot task is COMPLETED."""
    crm, inbox = portal
    crm.book(timedelta(seconds=-1))
    (mail,) = inbox.messages
    (email,) = crm.fake.objects("emails")
    props = email["properties"]
    assert props["hs_email_direction"] == "EMAIL"
    assert props["hs_email_status"] == "SENT"
    assert props["hs_email_subject"] == mail["Subject"]
    assert "Your workshop starts" in props["hs_email_text"]
    [meeting] = crm.fake.objects("meetings")
    contacts = dict(crm.fake.associations("meetings", meeting["id"], "contacts"))
    deals = dict(crm.fake.associations("meetings", meeting["id"], "deals"))
    assert set(dict(crm.fake.associations("emails", email["id"], "contacts"))) == set(contacts)
    assert set(dict(crm.fake.associations("emails", email["id"], "deals"))) == set(deals)
    [task] = [
        t
        for t in crm.fake.objects("tasks")
        if t["properties"]["bookme_task_key"].endswith("|prep-info")
    ]
    assert task["properties"]["hs_task_status"] == "COMPLETED"
    assert crm.send_state() == sends.SENT


def test_task_completed_in_hubspot_is_not_sent(portal: tuple[MailPortal, Inbox]) -> None:
    """A prep task a salesperson completed in HubSpot before its due moment sends nothing."""
    import time

    crm, inbox = portal
    crm.book(timedelta(seconds=1))
    [task] = [
        t
        for t in crm.fake.objects("tasks")
        if t["properties"]["bookme_task_key"].endswith("|prep-info")
    ]
    crm.api.update("tasks", task["id"], {"hs_task_status": "COMPLETED"})
    time.sleep(1.2)
    crm.worker.drain()
    assert inbox.messages == []
    assert crm.send_state() == sends.SKIPPED
    assert crm.fake.objects("emails") == []
