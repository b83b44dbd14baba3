"""One spelling per tracked value, so the CRM's reformatting never looks like a change.

HubSpot answers a meeting's start as epoch milliseconds or as ISO text with
its own precision, enum tokens in either case, and deal stages as pipeline
stage ids; the local CRM stores datetimes and its own tokens. Every value the
service writes and every value it reads back goes through ``normalise`` first,
so equal values compare equal:

- ``start``: ISO 8601 in UTC to the millisecond (``2027-01-20T08:00:00.000Z``);
- ``duration``: whole minutes as text;
- ``outcome``: HubSpot's meeting outcome tokens, upper case (``CANCELLED`` → ``CANCELED``);
- ``stage``: the mapping's lead stage token (``WON``…); a HubSpot deal stage id
  is read back through ``defaults.hubspot.deal_stages``, an unknown id kept as is;
- ``status`` (tasks): ``done`` or ``todo``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from adapter.timeutil import iso_z

# The fields tracked per CRM object type.
FIELDS: Mapping[str, tuple[str, ...]] = {
    "meeting": ("start", "duration", "outcome"),
    "deal": ("stage",),
    "task": ("status",),
}

_OUTCOME_ALIASES = {"CANCELLED": "CANCELED", "NOSHOW": "NO_SHOW", "NO-SHOW": "NO_SHOW"}
_DONE = {"done", "completed", "complete"}


def _start(raw: object) -> str | None:
    if isinstance(raw, datetime):
        moment = raw
    else:
        text = str(raw).strip()
        if not text:
            return None
        if text.lstrip("-").isdigit():  # HubSpot's epoch milliseconds
            moment = datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_z(moment)


def _duration(raw: object) -> str | None:
    text = str(raw).strip()
    if not text:
        return None
    return str(round(float(text)))


def normalise(
    field: str, raw: object, *, deal_stages: Mapping[str, str] | None = None
) -> str | None:
    """``raw`` as ``field``'s one spelling; ``None`` (or blank) stays ``None``.

    Raises ``ValueError`` for a value that cannot be read as the field (a
    start that is not a time, a duration that is not a number).
    """
    if raw is None:
        return None
    if field == "start":
        return _start(raw)
    if field == "duration":
        return _duration(raw)
    text = str(raw).strip()
    if not text:
        return None
    if field == "outcome":
        token = text.upper().replace(" ", "_")
        return _OUTCOME_ALIASES.get(token, token)
    if field == "stage":
        for stage, stage_id in (deal_stages or {}).items():
            if stage_id == text:
                return stage.upper()
        return text.upper() if deal_stages is None or text.upper() in deal_stages else text
    if field == "status":
        return "done" if text.lower() in _DONE else "todo"
    raise ValueError(f"{field!r} is not a tracked field")
