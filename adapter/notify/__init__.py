"""Automatic emails: a task's mail sent once, at its due moment, through the outbox."""

from adapter.notify.jobs import SEND_KIND, NotifyHandler, SendScheduler
from adapter.notify.mail import render_mail
from adapter.notify.smtp import SmtpSender
from adapter.notify.store import sends_metadata

__all__ = [
    "SEND_KIND",
    "NotifyHandler",
    "SendScheduler",
    "SmtpSender",
    "render_mail",
    "sends_metadata",
]
