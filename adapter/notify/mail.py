"""A send's message: Jinja2 templates next to the mapping, rendered into a MIME mail.

``<template>.txt`` is the plain-text part (required); ``<template>.html``, if
present, the HTML alternative, autoescaped so a booking's fields cannot
inject markup. Headers go through ``email.policy.SMTP``, which refuses CR and
LF in a header value, so a booking's fields cannot inject headers either.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from adapter.booking import Booking
from adapter.errors import MappingError
from adapter.mapping.planner import template_values
from adapter.plan import SendPlan


def message_id(booking_id: str, task_key: str, sender: str) -> str:
    """The same ``Message-ID`` for every attempt at one task's mail: a receiving
    system that saw it once can tell a resend for what it is."""
    digest = hashlib.sha256(f"{booking_id}\0{task_key}".encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "bookme-crm.invalid"
    return f"<bookme-crm.{digest}@{domain}>"


def _environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(["html", "htm"], default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def template_context(booking: Booking) -> dict[str, Any]:
    """The mapping's placeholders (``name``, ``date``, ``meetingUrl``…) and ``answers``."""
    tz = ZoneInfo(booking.timezone) if booking.timezone else None
    values = template_values(booking, tz)
    context: dict[str, Any] = {key: value for key, value in values.items() if "." not in key}
    context["answers"] = {
        key.removeprefix("answers."): value
        for key, value in values.items()
        if key.startswith("answers.")
    }
    return context


def render_mail(
    send: SendPlan,
    booking: Booking,
    folder: Path,
    *,
    sender: str,
    task_key: str,
    date: datetime,
) -> EmailMessage:
    """The mail ``send`` makes for ``booking``; ``MappingError`` for a missing or faulty
    template (permanent: a retry renders the same)."""
    env = _environment(folder)
    context = template_context(booking)
    try:
        text = env.get_template(f"{send.template}.txt").render(context)
        html_name = f"{send.template}.html"
        html = (
            env.get_template(html_name).render(context) if (folder / html_name).is_file() else None
        )
    except jinja2.TemplateNotFound as exc:
        raise MappingError(f"mail template {exc.name!r} not found in {folder}") from exc
    except jinja2.TemplateError as exc:
        raise MappingError(f"mail template {send.template!r}: {exc}") from exc
    message = EmailMessage(policy=SMTP)
    try:
        message["From"] = sender
        message["To"] = send.to
        message["Subject"] = send.subject
        if send.reply_to:
            message["Reply-To"] = send.reply_to
    except ValueError as exc:  # CR/LF in a header value
        raise MappingError(f"mail header refused: {exc}") from exc
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id(booking.booking_id, task_key, sender)
    message["X-BookMe-Booking"] = booking.booking_id
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message
