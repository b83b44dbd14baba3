"""Structured logs: one JSON object per line (or a console line), with secrets masked.

Our modules, uvicorn and alembic all log through the standard library;
``configure_logging`` routes every record through structlog's
``ProcessorFormatter``, so a line carries ``timestamp``, ``level``, ``logger``
and ``event``, any ``extra=`` fields, and whatever the code bound with
``structlog.contextvars`` (the worker binds ``event_id`` and ``booking_id``
around each job).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor

__all__ = ["LogFormat", "configure_logging", "redact_secrets", "resolve_format"]

LogFormat = Literal["json", "console"]
REDACTED = "***"
# A key naming any of these has its value masked, at any depth of the event dict.
_SENSITIVE_KEYS = (
    "secret",
    "token",
    "authorization",
    "password",
    "signature",
    "api_key",
    "apikey",
    "cookie",
)
# Credentials that may sit inside free text (an exception message, a URL).
_SENSITIVE_TEXT = re.compile(
    r"(?i)(bearer\s+)\S+|whsec_\S+|\bpat-[\w-]+|\bbcal_[\w-]+|(://[^:/@\s]+:)[^@\s]+@"
)


def _is_sensitive(key: object) -> bool:
    lowered = str(key).lower()
    return any(word in lowered for word in _SENSITIVE_KEYS)


def _scrub_text(text: str) -> str:
    def mask(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(1) + REDACTED
        if match.group(2):
            return match.group(2) + REDACTED + "@"
        return REDACTED

    return _SENSITIVE_TEXT.sub(mask, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_sensitive(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(item) for item in value)
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Mask the values of secret-looking keys anywhere in the event, and credentials in text."""
    for key in list(event_dict):
        if key.startswith("_"):  # structlog's own bookkeeping (the stdlib record)
            continue
        event_dict[key] = REDACTED if _is_sensitive(key) else _redact(event_dict[key])
    return event_dict


def _drop_color_message(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """uvicorn passes an ANSI-coloured copy of its message as an extra; one copy is enough."""
    event_dict.pop("color_message", None)
    return event_dict


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (tests and runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def resolve_format(requested: str | None, stream: TextIO | None = None) -> LogFormat:
    """``requested`` (``--log-format`` or ``LOG_FORMAT``) if given; else console on a
    terminal, JSON otherwise."""
    value = (requested or "").strip().lower()
    if value in ("json", "console"):
        return value  # type: ignore[return-value]
    if value:
        raise ValueError(f"LOG_FORMAT must be 'json' or 'console', not {value!r}")
    target = stream or sys.stderr
    return "console" if target.isatty() else "json"


def configure_logging(
    fmt: str | None = None, *, level: int | str = logging.INFO, stream: TextIO | None = None
) -> LogFormat:
    """Send every log record (ours, uvicorn's, alembic's) to ``stream`` (stderr) as ``fmt``.

    Called once by ``serve`` and ``worker`` before anything logs; returns the
    format chosen. Replaces the root logger's handlers.
    """
    chosen = resolve_format(fmt, stream)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    renderer: Processor
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer()
        tail: list[Processor] = [structlog.processors.format_exc_info, redact_secrets]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        tail = [redact_secrets]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn and alembic propagate to the root; keep their own handlers out of the way.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return chosen
