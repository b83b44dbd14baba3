"""Task due dates and human-readable dates for the mapping.

Day offsets are calendar days in the booking's time zone: a task "-7d" before
a 10:00 meeting is due at 10:00 local time a week earlier, even across a DST
change. Hour and minute offsets are elapsed time: "+2h" is exactly 7200 s.

A local wall time that does not exist or exists twice is resolved the way
RFC 5545 and JavaScript Temporal's ``"compatible"`` disambiguation do: a time
inside a spring-forward gap is pushed forward by the gap's length (02:30 on a
02:00→03:00 night becomes 03:30), and a time inside a fall-back fold takes its
first, earlier occurrence. (That is Python's ``fold=0`` under ``zoneinfo``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

MAX_OFFSET_DAYS = 3650
_OFFSET = re.compile(r"^(?P<sign>[+-])?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?$")
_OFFSET_HINT = "use e.g. -7d, +2h, 30m"


@dataclass(frozen=True)
class Offset:
    """A signed distance from a meeting: calendar ``days`` plus elapsed ``minutes``.

    Both parts carry the same sign; ``str()`` gives the canonical text (``-7d``,
    ``+1d2h``), which ``parse_offset`` reads back.
    """

    days: int = 0
    minutes: int = 0

    def __post_init__(self) -> None:
        if self.days * self.minutes < 0:
            raise ValueError("days and minutes of an offset must have the same sign")

    def __str__(self) -> str:
        sign = "-" if self.days < 0 or self.minutes < 0 else "+"
        hours, minutes = divmod(abs(self.minutes), 60)
        parts = [
            f"{abs(self.days)}d" if self.days else "",
            f"{hours}h" if hours else "",
            f"{minutes}m" if minutes else "",
        ]
        return sign + ("".join(parts) or "0m")


def parse_offset(text: str) -> Offset:
    """Read ``[+|-][Nd][Nh][Nm]`` (at least one part); raise ``ValueError`` otherwise."""
    match = _OFFSET.match(text)
    if match is None or not any(match.group(part) for part in "dhm"):
        raise ValueError(f"invalid offset {text!r} ({_OFFSET_HINT})")
    sign = -1 if match.group("sign") == "-" else 1
    days = int(match.group("d") or 0)
    minutes = int(match.group("h") or 0) * 60 + int(match.group("m") or 0)
    if days + minutes / 1440 > MAX_OFFSET_DAYS:
        raise ValueError(f"offset {text!r} is too large (at most {MAX_OFFSET_DAYS} days)")
    return Offset(days=sign * days, minutes=sign * minutes)


def apply_offset(start: datetime, offset: Offset, tz: ZoneInfo | None) -> datetime:
    """``start`` moved by ``offset``, as aware UTC.

    Days move the local date in ``tz`` (UTC when ``None``) keeping the wall
    time, resolved as the module docstring says; minutes are then added as
    elapsed time.
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    moved = start
    if offset.days:
        zone: tzinfo = tz if tz is not None else UTC
        # Naive arithmetic is wall-clock arithmetic; fold=0 picks the documented
        # resolution for a gap or a fold, whatever the start's own fold was.
        wall = start.astimezone(zone).replace(tzinfo=None) + timedelta(days=offset.days)
        moved = wall.replace(tzinfo=zone, fold=0)
    return moved.astimezone(UTC) + timedelta(minutes=offset.minutes)


def format_swedish(moment: datetime, tz: ZoneInfo | None) -> str:
    """``moment`` as sv-SE writes it, ``YYYY-MM-DD HH:MM`` (24 h), in ``tz`` or UTC."""
    local = moment.astimezone(tz if tz is not None else UTC)
    # strftime's %Y does not zero-pad years before 1000 on every platform.
    return f"{local.year:04d}-{local.month:02d}-{local.day:02d} {local.hour:02d}:{local.minute:02d}"


def format_time(moment: datetime, tz: ZoneInfo | None) -> str:
    """``HH:MM`` (24 h) of ``moment`` in ``tz`` or UTC."""
    local = moment.astimezone(tz if tz is not None else UTC)
    return f"{local.hour:02d}:{local.minute:02d}"
