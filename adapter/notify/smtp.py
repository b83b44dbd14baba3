"""SMTP delivery with the standard library's ``smtplib`` (sync, like the rest of the
service; no dependency to add). Every SMTP fault is translated here, once::

    RetryableError   4xx, connection refused or lost before DATA: the outbox retries
    PermanentError   5xx (the recipient refused): the send dead-letters with the reason
    SendUncertain    lost after DATA began: the server may have the message
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from adapter.errors import PermanentError, RetryableError


class SendUncertain(Exception):
    """The connection broke after the message was handed over: it may be delivered."""


@dataclass(frozen=True)
class SmtpTarget:
    """``SMTP_URL`` parsed: ``smtp://`` uses STARTTLS, ``smtps://`` TLS from the start."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("must look like smtp://user:pass@host:587 or smtps://host:465")
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 587),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def _refused(code: int, reply: bytes | str, what: str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    message = f"SMTP {what} refused: {code} {text}"
    return PermanentError(message) if 500 <= code < 600 else RetryableError(message)


class SmtpSender:
    """Sends one message per connection (a send a day per task needs no pooling)."""

    def __init__(self, target: SmtpTarget, *, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout

    def send(self, message: EmailMessage, *, on_data: Callable[[], None]) -> None:
        """Deliver ``message``; ``on_data`` runs just before DATA (record the phase there)."""
        t = self.target
        sender, to = str(message["From"]), str(message["To"])
        try:
            client: smtplib.SMTP
            if t.tls:
                client = smtplib.SMTP_SSL(
                    t.host, t.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(t.host, t.port, timeout=self.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise RetryableError(f"SMTP connect to {t.host}:{t.port} failed: {exc}") from exc
        try:
            self._prepare(client)
            code, reply = client.mail(sender)
            if code != 250:
                raise _refused(code, reply, "sender")
            code, reply = client.rcpt(to)
            if code not in (250, 251):
                raise _refused(code, reply, f"recipient {to}")
            on_data()
            try:
                code, reply = client.data(message.as_bytes())
            except smtplib.SMTPDataError as exc:  # DATA itself refused: nothing handed over
                raise _refused(exc.smtp_code, exc.smtp_error, "DATA") from exc
            except (OSError, smtplib.SMTPException) as exc:
                raise SendUncertain(f"connection lost after DATA: {exc}") from exc
            if code != 250:
                raise _refused(code, reply, "message")
        except (PermanentError, RetryableError, SendUncertain):
            raise
        except smtplib.SMTPResponseException as exc:
            raise _refused(exc.smtp_code, exc.smtp_error, "session") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise RetryableError(f"SMTP session failed: {exc}") from exc
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()

    def _prepare(self, client: smtplib.SMTP) -> None:
        t = self.target
        client.ehlo()
        if not t.tls and client.has_extn("starttls"):
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if t.username is not None:
            if not t.tls and not isinstance(client.sock, ssl.SSLSocket):
                # Never send the password in clear text to a server without STARTTLS.
                raise PermanentError(f"{t.host} offers no STARTTLS; refusing to log in in clear")
            client.login(t.username, t.password or "")
