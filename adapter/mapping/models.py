"""The mapping file's schema: pydantic models of the YAML, unknown keys are errors.

The root is ``MappingConfig``: ``version``, ``defaults`` (lead, meeting, contact,
company, lifecycle) and ``event_types``, where each event type overrides the
defaults field by field and lists its tasks. ``lifecycle`` (what reschedule,
cancel and no-show do) was added as an optional key with the documented
defaults, so files written before it still load; ``version`` stays 1 until a
change is incompatible.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from adapter.errors import MappingError
from adapter.mapping.dates import Offset, parse_offset
from adapter.plan import Priority, PropertyPolicy

TEMPLATE_FIELDS: tuple[str, ...] = (
    "eventType",
    "bookingId",
    "name",
    "firstName",
    "lastName",
    "email",
    "phone",
    "company",
    "notes",
    "date",
    "time",
    "duration",
    "meetingUrl",
    "timezone",
    "cancellationReason",
    "locale",
    "start",
    "startLocal",
    "startDate",
    "end",
)
"""The placeholders a template may use: the booking's fields, plus derived ones.

Beside these, the booking-form extensions are reached by path (``_PATHS``):
``answers.<key>``, ``utm.<source|medium|campaign|term|content>`` and
``attendees.<n>.<name|email>``.
"""

UTM_FIELDS = ("source", "medium", "campaign", "term", "content")
_PATHS = (
    # Any answer key: the form's questions are the booking page's, not ours to list.
    re.compile(r"^answers\.[^.{}\s][^{}]*$"),
    re.compile(r"^utm\.(?:" + "|".join(UTM_FIELDS) + r")$"),
    re.compile(r"^attendees\.(?:1?\d)\.(?:name|email)$"),
)

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


# --- templates ---------------------------------------------------------------

_Piece = tuple[str, str | None]
"""Literal text, then the placeholder that follows it (``None`` at the end)."""


@dataclass(frozen=True)
class _Candidate:
    source: str
    lines: tuple[tuple[_Piece, ...], ...]
    fields: frozenset[str]

    def render(self, values: Mapping[str, str]) -> str:
        multi_line = len(self.lines) > 1
        out: list[str] = []
        for pieces in self.lines:
            names = [name for _, name in pieces if name is not None]
            if multi_line and names and all(not values.get(name, "").strip() for name in names):
                continue
            out.append(
                "".join(text + (values.get(name, "") if name else "") for text, name in pieces)
            )
        return "\n".join(out).rstrip("\n")


@dataclass(frozen=True)
class Template:
    """A ``str.format``-style text with named placeholders from ``TEMPLATE_FIELDS``.

    In YAML a template is a string or a list of strings: the first whose
    placeholders all have values is used, else the last. In a multi-line
    template, a line whose placeholders are all empty is left out.
    """

    candidates: tuple[_Candidate, ...]

    @classmethod
    def parse(cls, value: str | Sequence[str]) -> Template:
        """Parse and check a template; raise ``TemplateError`` naming the fault."""
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise ValueError("a list of templates must not be empty")
        return cls(tuple(_parse_candidate(text, index) for index, text in enumerate(texts)))

    @property
    def source(self) -> str | list[str]:
        """The text as written in the file."""
        texts = [candidate.source for candidate in self.candidates]
        return texts[0] if len(texts) == 1 else texts

    @property
    def fields(self) -> frozenset[str]:
        """Every placeholder any candidate uses."""
        return frozenset().union(*(candidate.fields for candidate in self.candidates))

    @property
    def placeholder(self) -> str | None:
        """The placeholder when the template is exactly one (``"{answers.budget}"``), else ``None``.

        Such a value keeps the booking field's type where a CRM property is typed.
        """
        if len(self.candidates) != 1 or len(self.candidates[0].lines) != 1:
            return None
        pieces = self.candidates[0].lines[0]
        if len(pieces) == 1 and pieces[0][0] == "" and pieces[0][1] is not None:
            return pieces[0][1]
        if len(pieces) == 2 and pieces[0][0] == "" and pieces[1] == ("", None):
            return pieces[0][1]
        return None

    def render(self, values: Mapping[str, str]) -> str:
        """Fill in ``values``; a placeholder with no value (an absent field) renders empty."""
        for candidate in self.candidates[:-1]:
            if all(values.get(name, "").strip() for name in candidate.fields):
                return candidate.render(values)
        return self.candidates[-1].render(values)


class TemplateError(ValueError):
    """A template is malformed; ``candidate`` and ``line`` say where in it (0-based)."""

    def __init__(self, message: str, candidate: int, line: int) -> None:
        super().__init__(message)
        self.candidate = candidate
        self.line = line


def _parse_candidate(text: str, candidate: int) -> _Candidate:
    lines: list[tuple[_Piece, ...]] = []
    fields: set[str] = set()
    for number, line in enumerate(text.split("\n")):
        pieces: list[_Piece] = []
        try:
            parsed = list(string.Formatter().parse(line))
        except ValueError as exc:
            message = f"invalid template: {exc} (write a literal {{ or }} as {{{{ or }}}})"
            raise TemplateError(message, candidate, number) from None
        for literal, name, spec, conversion in parsed:
            if name is not None:
                try:
                    _check_placeholder(name, spec, conversion)
                except ValueError as exc:
                    raise TemplateError(str(exc), candidate, number) from None
                fields.add(name)
            pieces.append((literal, name))
        lines.append(tuple(pieces))
    return _Candidate(text, tuple(lines), frozenset(fields))


def _check_placeholder(name: str, spec: str | None, conversion: str | None) -> None:
    written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
    written += "}"
    if name in TEMPLATE_FIELDS or any(path.match(name) for path in _PATHS):
        if spec or conversion:
            raise ValueError(
                f"placeholder {written!r}: format specs and conversions are not supported"
            )
        return
    hint = ""
    if close := difflib.get_close_matches(name, TEMPLATE_FIELDS, n=1):
        hint = f"did you mean '{{{close[0]}}}'? "
    known = ", ".join((*TEMPLATE_FIELDS, "answers.<key>", "utm.<field>", "attendees.<n>.<field>"))
    raise ValueError(f"unknown placeholder {written!r} ({hint}known: {known})")


def _template(value: Any) -> Template:
    if isinstance(value, Template):
        return value
    if isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    ):
        try:
            return Template.parse(value)
        except TemplateError as exc:
            # ``at`` and ``text_line`` let the loader report the faulty line itself.
            raise PydanticCustomError(
                "invalid_template",
                "{reason}",
                {
                    "reason": str(exc),
                    "at": (exc.candidate,) if isinstance(value, list) else (),
                    "text_line": exc.line,
                },
            ) from None
    raise ValueError("must be a string or a list of strings")


TemplateText = Annotated[
    Template,
    PlainValidator(_template, json_schema_input_type=str | list[str]),
    PlainSerializer(lambda template: template.source),
]


def _offset(value: Any) -> Offset:
    if isinstance(value, Offset):
        return value
    if not isinstance(value, str):
        raise ValueError(f"invalid offset {value!r} (use e.g. -7d, +2h, 30m)")
    return parse_offset(value)


OffsetText = Annotated[
    Offset,
    PlainValidator(_offset, json_schema_input_type=str),
    PlainSerializer(str),
]


def _not_blank(value: str) -> str:
    if not value.strip() or value != value.strip():
        raise ValueError("must not be blank or start/end with spaces")
    return value


def _slug(value: str) -> str:
    if not _SLUG.match(value) or len(value) > 64:
        raise ValueError(f"{value!r} is not a slug like 'prep-info' (a-z, 0-9, single hyphens)")
    return value


Name = Annotated[str, Field(max_length=200), AfterValidator(_not_blank)]
Slug = Annotated[str, AfterValidator(_slug)]


# --- the file's sections -----------------------------------------------------


class _Section(BaseModel):
    # strict: YAML already gives ints, bools and lists; "15000" or 1 for true is a typo.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Overrides(_Section):
    """Per-event-type settings: a key left out inherits the default.

    ``null`` is refused (leave the key out instead), except for the keys in
    ``nullable_keys``, where ``null`` is itself a setting that overrides.
    """

    nullable_keys: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.nullable_keys:
            raise ValueError("must not be null; leave the key out to use the default")
        return value


# --- properties: any booking field onto any CRM property ------------------------

_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")

RESERVED_PROPERTIES: dict[str, frozenset[str]] = {
    "contact": frozenset({"email"}),
    "company": frozenset({"name"}),
    "lead": frozenset({"pipeline", "dealstage"}),
    "meeting": frozenset({"hs_meeting_outcome"}),
    "task": frozenset({"hs_task_status"}),
}
"""Properties the backends write themselves for identity or lifecycle; a mapping
that set them would fight the sync. ``bookme_*`` and the owner are reserved on
every record."""


def _property_value(value: Any) -> bool | int | float | Template:
    # One validator rather than a union, so a bad template gets one error, not one per type.
    if isinstance(value, bool | int | float):
        return value
    return _template(value)


PropertyValueText = Annotated[
    bool | int | float | Template,
    PlainValidator(_property_value, json_schema_input_type=bool | int | float | str | list[str]),
    PlainSerializer(lambda value: value.source if isinstance(value, Template) else value),
]


class PropertySpec(_Section):
    """One CRM property: a value (a template, or a fixed number or boolean) and its policy.

    In YAML either the value alone (``jobtitle: "{answers.role}"``) or
    ``{value: ..., policy: ..., order: [...]}``; ``order`` goes with
    ``forward_only`` and only with it.
    """

    value: PropertyValueText
    policy: PropertyPolicy = "always"
    order: list[Name] | None = None

    @model_validator(mode="after")
    def _policy_fits(self) -> PropertySpec:
        if self.policy == "forward_only":
            if not self.order:
                raise ValueError("policy forward_only needs an 'order' (earliest first)")
            if len(set(self.order)) != len(self.order):
                raise ValueError("'order' must not repeat a value")
            if isinstance(self.value, Template) and not self.value.fields:
                fixed = self.value.render({})
                if fixed not in self.order:
                    raise ValueError(f"value {fixed!r} is not in 'order' ({', '.join(self.order)})")
            elif not isinstance(self.value, Template):
                raise ValueError("policy forward_only needs a text value, one of 'order'")
        elif self.order is not None:
            raise ValueError(f"'order' goes with policy forward_only, not {self.policy}")
        if self.policy == "append" and not isinstance(self.value, Template):
            raise ValueError("policy append needs a text value (';'-separated items)")
        return self


def _shorthand(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            name: spec if isinstance(spec, dict | PropertySpec) else {"value": spec}
            for name, spec in value.items()
        }
    return value


def _property_names(record: str) -> AfterValidator:
    reserved = RESERVED_PROPERTIES[record]

    def check(props: dict[str, PropertySpec]) -> dict[str, PropertySpec]:
        for name in props:
            problem = None
            if not _PROPERTY_NAME.match(name):
                problem = "is not a CRM property name (a-z, 0-9 and _, starting with a letter)"
            elif name in reserved or name.startswith("bookme_") or name == "hubspot_owner_id":
                problem = f"is written by the sync itself and cannot be mapped on a {record}"
            if problem:
                raise PydanticCustomError(
                    "reserved_property",
                    "property '{name}' {problem}",
                    {"name": name, "problem": problem, "at": (name,)},
                )
        return props

    return AfterValidator(check)


_Specs = dict[str, PropertySpec]
ContactProperties = Annotated[_Specs, BeforeValidator(_shorthand), _property_names("contact")]
CompanyProperties = Annotated[_Specs, BeforeValidator(_shorthand), _property_names("company")]
LeadProperties = Annotated[_Specs, BeforeValidator(_shorthand), _property_names("lead")]
MeetingProperties = Annotated[_Specs, BeforeValidator(_shorthand), _property_names("meeting")]
TaskProperties = Annotated[_Specs, BeforeValidator(_shorthand), _property_names("task")]


class LeadSettings(_Section):
    """The lead (HubSpot: deal) one booking creates or touches."""

    title: TemplateText
    stage: Name
    source: Name
    source_details: TemplateText = Template.parse("")
    estimated_value: int = Field(default=0, ge=0)
    lead_score: int = Field(default=0, ge=0, le=100)
    tags: list[TemplateText] = []
    properties: LeadProperties = {}


class LeadOverrides(_Overrides):
    """``LeadSettings`` fields an event type sets itself."""

    title: TemplateText | None = None
    stage: Name | None = None
    source: Name | None = None
    source_details: TemplateText | None = None
    estimated_value: int | None = Field(default=None, ge=0)
    lead_score: int | None = Field(default=None, ge=0, le=100)
    tags: list[TemplateText] | None = None
    properties: LeadProperties | None = None


class MeetingSettings(_Section):
    """The meeting activity, one per booking."""

    subject: TemplateText
    description: TemplateText = Template.parse("")
    properties: MeetingProperties = {}


class MeetingOverrides(_Overrides):
    """``MeetingSettings`` fields an event type sets itself."""

    subject: TemplateText | None = None
    description: TemplateText | None = None
    properties: MeetingProperties | None = None


class ContactSettings(_Section):
    """The contact, one per email."""

    tags: list[TemplateText] = []
    properties: ContactProperties = {}


class ContactOverrides(_Overrides):
    """Contact keys an event type sets itself."""

    properties: ContactProperties | None = None


class CompanySettings(_Section):
    """The company, one per (case- and space-insensitive) name."""

    tags: list[TemplateText] = []
    properties: CompanyProperties = {}


class CompanyOverrides(_Overrides):
    """Company keys an event type sets itself."""

    properties: CompanyProperties | None = None


class TaskSettings(_Section):
    """What every follow-up task of a booking gets; a task's own ``properties`` add to it."""

    properties: TaskProperties = {}


class TaskOverrides(_Overrides):
    """Task keys an event type sets itself."""

    properties: TaskProperties | None = None


def _send_to(value: str) -> str:
    if value.strip() == "{email}":
        return "{email}"
    # A fixed internal address only: a templated recipient could be steered by a booking.
    if "{" in value or "}" in value:
        raise ValueError("must be '{email}' (the booking's own email) or a fixed address")
    return _owner_email(value)


class SendConfig(_Section):
    """``send:`` on a task: the mail sent at its due moment (``adapter.notify``).

    ``template`` names ``<template>.txt`` (and optionally ``<template>.html``)
    next to the mapping file; ``window_hours``: a send missed while the
    service was down still goes out this long after its due moment.
    """

    template: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    to: Annotated[str, AfterValidator(_send_to)]
    subject: TemplateText
    reply_to: Annotated[str, AfterValidator(lambda value: _owner_email(value))] | None = None
    window_hours: int = Field(default=24, ge=0, le=24 * 30)


class TaskConfig(_Section):
    """A follow-up task, due ``offset`` from the meeting's ``anchor``."""

    key: Slug
    title: TemplateText
    description: TemplateText = Template.parse("")
    offset: OffsetText
    anchor: Literal["start", "end"] = "start"
    priority: Priority = "medium"
    skip_if_past: bool = False
    properties: TaskProperties = {}
    send: SendConfig | None = None


def _unique_keys(tasks: list[TaskConfig]) -> list[TaskConfig]:
    first: dict[str, int] = {}
    for index, task in enumerate(tasks):
        if task.key in first:
            # ``at`` lets the loader point at the duplicate itself, not the list.
            raise PydanticCustomError(
                "duplicate_task_key",
                "duplicate task key '{key}' (first used by tasks[{first}])",
                {"key": task.key, "first": first[task.key], "at": (index, "key")},
            )
        first[task.key] = index
    return tasks


TaskList = Annotated[list[TaskConfig], AfterValidator(_unique_keys)]
"""Tasks whose keys are unique within the list."""

LiveOutcome = Literal["SCHEDULED", "RESCHEDULED", "COMPLETED"]
"""Meeting outcomes that leave a booking live (``CANCELED``/``NO_SHOW`` have their events)."""


# --- lifecycle: what reschedule, cancel and no-show do ------------------------


class RescheduleSettings(_Section):
    """``booking.rescheduled``: the meeting moves in place, its open tasks with it."""

    meeting_outcome: LiveOutcome = "RESCHEDULED"


class CancelSettings(_Section):
    """``booking.cancelled``: the booking's mapped tasks are cancelled.

    ``lead_stage`` is the lead's stage once none of its bookings is live
    (``None``: keep the live stage); ``tasks`` are added as open tasks.
    """

    lead_stage: Name | None = "LOST"
    tasks: TaskList = []


class NoShowSettings(_Section):
    """``booking.no_show``: the meeting's outcome is NO_SHOW.

    ``lead_stage`` is the lead's stage once none of its bookings is live and
    one is a no-show (``None``: keep the live stage); ``cancel_open_tasks``
    cancels the booking's mapped tasks; ``tasks`` are added as open tasks.
    """

    lead_stage: Name | None = None
    cancel_open_tasks: bool = True
    tasks: TaskList = []


class LifecycleSettings(_Section):
    """What the events after ``booking.created`` do to the meeting, tasks and lead."""

    on_reschedule: RescheduleSettings = RescheduleSettings()
    on_cancel: CancelSettings = CancelSettings()
    on_no_show: NoShowSettings = NoShowSettings()

    @model_validator(mode="after")
    def _keys_shared_once(self) -> LifecycleSettings:
        """A cancelled and a no-show booking are one booking: their tasks share keys."""
        cancel_keys = {task.key: index for index, task in enumerate(self.on_cancel.tasks)}
        for index, task in enumerate(self.on_no_show.tasks):
            if task.key in cancel_keys:
                raise PydanticCustomError(
                    "duplicate_task_key",
                    "duplicate task key '{key}' (first used by on_cancel.tasks[{first}])",
                    {
                        "key": task.key,
                        "first": cancel_keys[task.key],
                        "at": ("on_no_show", "tasks", index, "key"),
                    },
                )
        return self


class RescheduleOverrides(_Overrides):
    """``RescheduleSettings`` keys an event type sets itself."""

    meeting_outcome: LiveOutcome | None = None


class CancelOverrides(_Overrides):
    """``CancelSettings`` keys an event type sets itself (``lead_stage: null`` included)."""

    nullable_keys: ClassVar[frozenset[str]] = frozenset({"lead_stage"})

    lead_stage: Name | None = None
    tasks: TaskList | None = None


class NoShowOverrides(_Overrides):
    """``NoShowSettings`` keys an event type sets itself (``lead_stage: null`` included)."""

    nullable_keys: ClassVar[frozenset[str]] = frozenset({"lead_stage"})

    lead_stage: Name | None = None
    cancel_open_tasks: bool | None = None
    tasks: TaskList | None = None


class LifecycleOverrides(_Overrides):
    """Per-event-type lifecycle: each section overrides the default's key by key."""

    on_reschedule: RescheduleOverrides | None = None
    on_cancel: CancelOverrides | None = None
    on_no_show: NoShowOverrides | None = None


class HubSpotSettings(_Section):
    """Where the HubSpot backend puts deals: a pipeline, and a stage id per lead stage.

    Portal-wide, so it lives under ``defaults`` only (like ``contact`` and
    ``company``) and event types do not override it.

    ``tags_property`` is the custom property that carries tags on contacts,
    companies and deals. ``deal_stages`` maps every lead stage the mapping names (``lead.stage``,
    ``on_cancel.lead_stage``, ``on_no_show.lead_stage``) to a stage id of
    ``pipeline``; ``bookme-crm hubspot setup`` checks that they exist. The
    local backend ignores this section.
    """

    pipeline: Name = "default"
    tags_property: Name = "bookme_tags"
    deal_stages: dict[Name, Name] = Field(
        default_factory=lambda: {
            "CONTACTED": "appointmentscheduled",
            "QUALIFIED": "qualifiedtobuy",
            "PROPOSAL": "presentationscheduled",
            "WON": "closedwon",
            "LOST": "closedlost",
        }
    )


def _owner_email(value: str) -> str:
    # email-validator (as the webhook's ``email``) rather than a hand-written pattern;
    # no deliverability check: loading a mapping must not touch DNS.
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None


OwnerEmail = Annotated[str, AfterValidator(_owner_email)]


def _distinct_owners(emails: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, email in enumerate(emails):
        if email in seen:
            raise PydanticCustomError(
                "duplicate_owner",
                "owner {email} is listed twice",
                {"email": email, "at": (index,)},
            )
        seen.add(email)
    return emails


OwnerList = Annotated[list[OwnerEmail], Field(min_length=1), AfterValidator(_distinct_owners)]


class OwnerSettings(_Section):
    """Who owns what a booking creates: the contact (if it has no owner), deal, meeting, tasks.

    ``email`` is one fixed owner; ``round_robin`` spreads bookings evenly over
    a list (each booking assigned once, kept through retries, replays and
    reschedules); ``keep_existing`` lets a contact that already has an owner
    keep it, and gives that owner the new deal, meeting and tasks. At most one
    of ``email`` and ``round_robin``; ``keep_existing`` combines with either
    (alone it only follows the contact's owner).
    """

    email: OwnerEmail | None = None
    round_robin: OwnerList | None = None
    keep_existing: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> OwnerSettings:
        if self.email is not None and self.round_robin is not None:
            raise ValueError("give either email or round_robin, not both")
        if self.email is None and self.round_robin is None and not self.keep_existing:
            raise ValueError("give email, round_robin or keep_existing: true")
        return self


class Defaults(_Section):
    """Settings every event type starts from."""

    lead: LeadSettings
    meeting: MeetingSettings
    contact: ContactSettings = ContactSettings()
    company: CompanySettings = CompanySettings()
    task: TaskSettings = TaskSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    hubspot: HubSpotSettings = Field(default_factory=HubSpotSettings)
    owner: OwnerSettings | None = None


class EventTypeConfig(_Section):
    """One ``eventType``: overrides of the defaults, and its tasks."""

    lead: LeadOverrides = LeadOverrides()
    meeting: MeetingOverrides = MeetingOverrides()
    contact: ContactOverrides = ContactOverrides()
    company: CompanyOverrides = CompanyOverrides()
    task: TaskOverrides = TaskOverrides()
    lifecycle: LifecycleOverrides = LifecycleOverrides()
    tasks: TaskList = []
    # A whole owner section replaces the default's: "email" and "round_robin"
    # exclude each other, so merging them key by key could build an invalid one.
    owner: OwnerSettings | None = None


class ResolvedEventType(BaseModel):
    """An event type's effective settings: its overrides laid over the defaults."""

    model_config = ConfigDict(frozen=True)

    name: str
    lead: LeadSettings
    meeting: MeetingSettings
    contact: ContactSettings
    company: CompanySettings
    task: TaskSettings
    lifecycle: LifecycleSettings
    tasks: tuple[TaskConfig, ...]
    owner: OwnerSettings | None = None


class MappingConfig(_Section):
    """A whole mapping file (``mappings/default.yaml``)."""

    version: Literal[1]
    defaults: Defaults
    event_types: dict[Name, EventTypeConfig] = Field(min_length=1)

    _resolved: dict[str, ResolvedEventType] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> MappingConfig:
        """Lay each event type over the defaults; its task keys must not collide."""
        resolved: dict[str, ResolvedEventType] = {}
        for name, config in self.event_types.items():
            _check_task_keys(name, config, self.defaults.lifecycle)
            resolved[name] = ResolvedEventType(
                name=name,
                lead=_overlay(self.defaults.lead, config.lead),
                meeting=_overlay(self.defaults.meeting, config.meeting),
                contact=_overlay(self.defaults.contact, config.contact),
                company=_overlay(self.defaults.company, config.company),
                task=_overlay(self.defaults.task, config.task),
                lifecycle=_overlay_lifecycle(self.defaults.lifecycle, config.lifecycle),
                tasks=tuple(config.tasks),
                owner=config.owner if config.owner is not None else self.defaults.owner,
            )
        self._resolved = resolved
        return self

    def event_type(self, name: str) -> ResolvedEventType:
        """The effective settings for ``name``; ``MappingError`` when it is not mapped."""
        try:
            return self._resolved[name]
        except KeyError:
            known = ", ".join(sorted(self.event_types))
            raise MappingError(
                f"eventType {name!r} is not in the mapping (known: {known})"
            ) from None


_S = TypeVar("_S", bound=_Section)


def _overlay(base: _S, overrides: _Overrides | None) -> _S:
    if overrides is None:
        return base
    update = {name: getattr(overrides, name) for name in overrides.model_fields_set}
    if "properties" in update:
        # Properties override by name: an event type adds its own to the defaults'.
        # (``_S`` is any section; only those with properties get here.)
        update["properties"] = {**getattr(base, "properties"), **update["properties"]}  # noqa: B009
    return base.model_copy(update=update)


def _overlay_lifecycle(base: LifecycleSettings, overrides: LifecycleOverrides) -> LifecycleSettings:
    return LifecycleSettings(
        on_reschedule=_overlay(base.on_reschedule, overrides.on_reschedule),
        on_cancel=_overlay(base.on_cancel, overrides.on_cancel),
        on_no_show=_overlay(base.on_no_show, overrides.on_no_show),
    )


_TaskSource = tuple[tuple[int | str, ...], list[TaskConfig]]


def _check_task_keys(name: str, config: EventTypeConfig, defaults: LifecycleSettings) -> None:
    """One key names one CRM task of a booking: an event type's own tasks and the
    lifecycle tasks it ends up with (its own or the defaults') share one key space.

    A clash between a default and the event type is reported at the event
    type's key, where a new event type brings it in.
    """
    inherited: list[_TaskSource] = []
    own: list[_TaskSource] = [(("event_types", name, "tasks"), config.tasks)]
    for section in ("on_cancel", "on_no_show"):
        override: CancelOverrides | NoShowOverrides | None = getattr(config.lifecycle, section)
        if override is not None and override.tasks is not None:
            own.append((("event_types", name, "lifecycle", section, "tasks"), override.tasks))
        else:
            default: CancelSettings | NoShowSettings = getattr(defaults, section)
            inherited.append((("defaults", "lifecycle", section, "tasks"), default.tasks))
    sources = inherited + own
    first: dict[str, str] = {}
    for prefix, tasks in sources:
        for index, task in enumerate(tasks):
            if task.key in first:
                raise PydanticCustomError(
                    "duplicate_task_key",
                    "duplicate task key '{key}' in event type '{event_type}' "
                    "(first used by {first})",
                    {
                        "key": task.key,
                        "event_type": name,
                        "first": first[task.key],
                        "at": (*prefix, index, "key"),
                    },
                )
            first[task.key] = _dotted((*prefix, index))


def _dotted(loc: tuple[int | str, ...]) -> str:
    return "".join(
        f"[{step}]" if isinstance(step, int) else f".{step}" if i else step
        for i, step in enumerate(loc)
    )
