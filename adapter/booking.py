"""The BookMe webhook body (contract §3), validated into a ``Booking``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import langcodes
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    PlainValidator,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

BookingEvent = Literal[
    "booking.created",
    "booking.rescheduled",
    "booking.updated",
    "booking.cancelled",
    "booking.no_show",
]


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be an ISO 8601 datetime with an offset or 'Z'")
    return value


def _no_nul_in(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL: such a booking was stored, then died
    # in the CRM write (or was a 500 as a bookingId). Found by fuzzing.
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


MAX_ANSWERS = 50
MAX_ANSWER_CHARS = 2000
MAX_ATTENDEES = 20

AnswerValue = str | int | float | bool | list[str]
"""One form answer as BookMe sends it: text, a number, a yes/no or a multiple choice."""


def _answer(value: Any) -> AnswerValue:
    # A plain validator, so that an error's location is ``answers.<key>`` alone
    # rather than pydantic's per-union-member locations.
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value
    if isinstance(value, str):
        _no_nul_in(value)
        if len(value) > MAX_ANSWER_CHARS:
            raise ValueError(f"must be at most {MAX_ANSWER_CHARS} characters")
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        for item in value:
            _no_nul_in(item)
        if sum(len(item) for item in value) + max(len(value) - 1, 0) > MAX_ANSWER_CHARS:
            raise ValueError(f"must be at most {MAX_ANSWER_CHARS} characters in all")
        return list(value)
    raise ValueError("must be a string, a number, a boolean or a list of strings")


Answer = Annotated[AnswerValue, PlainValidator(_answer, json_schema_input_type=AnswerValue)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _no_nul_in(value)


class Utm(_Part):
    """The campaign the booking came from (the booking page's UTM parameters)."""

    source: StrictStr | None = Field(default=None, max_length=500)
    medium: StrictStr | None = Field(default=None, max_length=500)
    campaign: StrictStr | None = Field(default=None, max_length=500)
    term: StrictStr | None = Field(default=None, max_length=500)
    content: StrictStr | None = Field(default=None, max_length=500)

    @field_validator("*")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class Attendee(_Part):
    """An extra guest of the booking."""

    name: StrictStr = Field(min_length=1, max_length=200)
    email: EmailStr

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class Booking(BaseModel):
    """One booking snapshot as BookMe sends it; unknown fields are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    booking_id: StrictStr = Field(alias="bookingId", min_length=1, max_length=200)
    event_type: StrictStr = Field(alias="eventType", min_length=1, max_length=200)
    name: StrictStr = Field(min_length=1, max_length=200)
    email: EmailStr
    phone: StrictStr | None = Field(default=None, max_length=100)
    company: StrictStr | None = Field(default=None, max_length=200)
    notes: StrictStr | None = Field(default=None, max_length=10_000)
    scheduled_date: datetime = Field(alias="scheduledDate")
    duration: StrictInt = Field(ge=1, le=1440)
    meeting_url: AnyHttpUrl | None = Field(default=None, alias="meetingUrl")
    source: Literal["bookme"]
    created_at: datetime | None = Field(default=None, alias="createdAt")
    event: BookingEvent = "booking.created"
    updated_at: datetime | None = Field(default=None, alias="updatedAt")
    # IANA names are at most ~30 characters; an unbounded one made ZoneInfo raise OSError.
    timezone: StrictStr | None = Field(default=None, max_length=64)
    cancellation_reason: StrictStr | None = Field(
        default=None, alias="cancellationReason", max_length=2000
    )
    answers: dict[Annotated[str, Field(min_length=1, max_length=100)], Answer] | None = Field(
        default=None,
        max_length=MAX_ANSWERS,
        description="The booking form's answers: question key -> string, number, boolean "
        f"or list of strings; at most {MAX_ANSWERS} keys, each value at most "
        f"{MAX_ANSWER_CHARS} characters.",
    )
    utm: Utm | None = Field(
        default=None, description="The campaign the booking came from (UTM parameters)."
    )
    locale: StrictStr | None = Field(
        default=None, max_length=100, description="The booker's locale, a BCP 47 tag."
    )
    attendees: list[Attendee] | None = Field(
        default=None,
        max_length=MAX_ATTENDEES,
        description=f"Extra guests (name and email), at most {MAX_ATTENDEES}.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return _no_nul_in(value)

    @field_validator("answers", mode="before")
    @classmethod
    def _answer_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                _no_nul_in(key)
        return value

    @field_validator("locale")
    @classmethod
    def _bcp47(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        # langcodes parses the whole BCP 47 grammar (scripts, regions, variants,
        # extensions); its canonical form makes "sv_se" and "sv-SE" one locale.
        if not langcodes.tag_is_valid(value.strip()):
            raise ValueError("must be a BCP 47 language tag, e.g. 'sv-SE'")
        return langcodes.standardize_tag(value.strip())

    @field_validator("booking_id", "event_type", "name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("phone", "company", "notes", "timezone", "cancellation_reason")
    @classmethod
    def _blank_optional_is_none(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip()

    @field_validator("email")
    @classmethod
    def _email_trimmed(cls, value: str) -> str:
        return value.strip()

    @field_validator("scheduled_date", "created_at", "updated_at", mode="before")
    @classmethod
    def _iso_string(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, str) and _ISO_DATETIME.match(value)):
            raise ValueError("must be an ISO 8601 datetime string, e.g. '2027-02-15T10:00:00Z'")
        return value

    @field_validator("scheduled_date", "created_at", "updated_at")
    @classmethod
    def _with_offset(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _aware(value)

    @field_validator("meeting_url", mode="before")
    @classmethod
    def _blank_url_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            # OSError: a name the file system refuses (too long for a path component).
            raise ValueError("must be an IANA time zone name, e.g. 'Europe/Stockholm'") from exc
        return value

    @property
    def email_key(self) -> str:
        """The contact identity: the email trimmed and lower-cased."""
        return self.email.strip().lower()


class FieldError(BaseModel):
    """One entry of a 400 body's ``details``."""

    field: str
    message: str


def validation_details(error: ValidationError) -> list[FieldError]:
    """Turn pydantic's errors into the contract's ``[{field, message}]``, by wire name."""
    details: list[FieldError] = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"]
        if item["type"] == "missing":
            message = "is required"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        details.append(FieldError(field=field, message=message))
    return details


def parse_booking(data: Any) -> Booking:
    """Validate a decoded JSON body; raises pydantic's ``ValidationError``."""
    return Booking.model_validate(data, by_alias=True)
