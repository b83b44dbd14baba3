"""SMTP_URL and SMTP_FROM settings, header injection, and no password over clear text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from pydantic import ValidationError

from adapter.booking import parse_booking
from adapter.errors import PermanentError
from adapter.mapping import load_mapping_text, plan_booking
from adapter.notify import SmtpSender, render_mail
from adapter.notify.smtp import SmtpTarget
from adapter.settings import Settings
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, free_port, seed_booking


def test_smtp_url_forms() -> None:
    """smtp:// is STARTTLS on 587 by default, smtps:// TLS on 465; credentials are unquoted."""
    plain = SmtpTarget.parse("smtp://user%40x:p%3Ass@mail.example")
    assert (plain.host, plain.port, plain.tls) == ("mail.example", 587, False)
    assert (plain.username, plain.password) == ("user@x", "p:ss")
    tls = SmtpTarget.parse("smtps://mail.example")
    assert (tls.port, tls.tls, tls.username) == (465, True, None)


def test_bad_smtp_settings_are_refused_without_showing_the_password() -> None:
    """A malformed SMTP_URL, or one without SMTP_FROM, stops start-up naming the setting;
    the password never appears in the message."""
    with pytest.raises(ValidationError) as bad:
        Settings(_env_file=None, crm_webhook_secret=WEBHOOK_SECRET, smtp_url="http://u:hunter2@x")
    assert "smtp_url" in str(bad.value)
    assert "hunter2" not in str(bad.value)
    with pytest.raises(ValidationError) as no_from:
        Settings(_env_file=None, crm_webhook_secret=WEBHOOK_SECRET, smtp_url="smtp://u:hunter2@x")
    assert "SMTP_FROM is required" in str(no_from.value)
    assert "hunter2" not in str(no_from.value)


def test_booking_fields_cannot_inject_headers(tmp_path: object) -> None:
    """A subject built from a name holding CR/LF stays one header: no Bcc is added."""
    text = DEFAULT_MAPPING.read_text().replace("#| ", "")
    text = text.replace('subject: "Prep for your workshop on {date}"', 'subject: "Prep for {name}"')
    text = text.replace("        skip_if_past: true\n", "", 1)
    mapping = load_mapping_text(text)
    booking = parse_booking(seed_booking(name="Ada\r\nBcc: evil@example.com"))
    plan = plan_booking(booking, mapping, now=datetime(2026, 1, 1, tzinfo=UTC))
    (send,) = [task.send for task in plan.tasks if task.send is not None]
    assert send.subject == "Prep for Ada Bcc: evil@example.com"
    mail = render_mail(
        send,
        booking,
        DEFAULT_MAPPING.parent,
        sender="crm@bookme.example",
        task_key="prep-info",
        date=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert mail["Bcc"] is None
    assert "\nBcc:" not in mail.as_string()


class _Refuser:
    """Accepts nothing: a login attempt would reach AUTH, which this server lacks."""

    async def handle_RCPT(self, *args: object) -> str:
        return "250 OK"


@pytest.fixture
def no_starttls() -> Iterator[int]:
    port = free_port()
    controller = Controller(_Refuser(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


def test_no_login_in_clear_text(no_starttls: int) -> None:
    """With credentials and a server without STARTTLS, nothing is sent: a permanent error."""
    sender = SmtpSender(SmtpTarget.parse(f"smtp://user:secret@127.0.0.1:{no_starttls}"))
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "a@example.com", "b@example.com", "x"
    message.set_content("hello")
    with pytest.raises(PermanentError, match="refusing to log in in clear"):
        sender.send(message, on_data=lambda: None)
