"""Decoding a webhook body: every way JSON can be hostile becomes a 4xx naming the field.

``json.loads`` accepts things the rest of the service cannot hold: nesting deep
enough to exhaust the stack (``RecursionError``), integers past Python's
4,300-digit conversion limit (``ValueError``), and ``\\udfff``-style escapes
that decode to lone surrogates, which no UTF-8 encoder (hashing, the database)
will take. Each was a 500 with a traceback, so a sender retried forever. They
are all refused here, in one place, before anything is stored.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32  # a booking is two levels deep; room for senders' extra fields
_FIELD_CHARS = 200  # a field path is echoed to the client and the log: keep it short


@dataclass(frozen=True)
class BodyRejected(Exception):
    """The body cannot be taken; ``status`` 400 (with field details) or 415."""

    status: int
    error: str
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _HugeInt:
    """Stands in for an integer too long to convert, so its field can be named."""

    digits: int


def _parse_int(text: str) -> int | _HugeInt:
    digits = len(text.lstrip("-"))
    if digits > sys.get_int_max_str_digits():
        return _HugeInt(digits)
    return int(text)


def _path(parts: list[str | int]) -> str:
    path = ".".join(str(part) for part in parts) or "body"
    # A key may itself be the hostile value; never echo it whole.
    return path if len(path) <= _FIELD_CHARS else path[:_FIELD_CHARS] + "…"


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _problems(raw: Any) -> list[tuple[str, str]]:
    """Walk the decoded body without recursion; the first few problems, by field."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, list[str | int]]] = [(raw, [])]
    while stack and len(found) < 10:
        value, where = stack.pop()
        if len(where) > MAX_DEPTH:
            found.append((_path(where[:MAX_DEPTH]), f"is nested more than {MAX_DEPTH} levels"))
            continue
        if isinstance(value, _HugeInt):
            found.append((_path(where), f"is an integer of {value.digits} digits (too long)"))
        elif isinstance(value, str) and not _utf8(value):
            found.append((_path(where), "contains a lone surrogate (not valid Unicode)"))
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _utf8(key):
                    found.append(
                        (_path(where), "has a key with a lone surrogate (not valid Unicode)")
                    )
                    continue
                stack.append((item, [*where, key]))
        elif isinstance(value, list):
            stack.extend((item, [*where, index]) for index, item in enumerate(value))
    return found


def decode_json_body(body: bytes) -> Any:
    """The decoded body, or ``BodyRejected`` (415: not JSON; 400: JSON we cannot hold)."""
    try:
        raw = json.loads(body, parse_int=_parse_int)
    except RecursionError:
        raise BodyRejected(
            400, "Invalid payload", (("body", f"is nested more than {MAX_DEPTH} levels"),)
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BodyRejected(415, "Body is not valid JSON") from None
    problems = _problems(raw)
    if problems:
        raise BodyRejected(400, "Invalid payload", tuple(problems))
    return raw
