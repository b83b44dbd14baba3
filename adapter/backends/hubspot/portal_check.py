"""A mapping checked against the portal it will write to, before it goes live (properties, owners).

``bookme-crm mappings check --hubspot`` and ``hubspot setup`` read the portal's
property definitions and ask of every ``properties:`` entry of the mapping
(defaults, event-type overrides, every task list): does the property exist on
that object, can HubSpot store a value of that kind in it, and is a fixed value
of an enumeration one of its options. Each problem is one line naming the
mapping key, the property and what the portal has, so ops fix the YAML before
a booking can dead-letter on it. Every owner email (fixed or in a round robin)
must be an active owner of the portal. Values from templates (``{answers.budget}``)
are known only per booking: those are checked at run time by HubSpot itself,
and a refusal dead-letters the event with HubSpot's message (replayable).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime

from pydantic import BaseModel

from adapter.backends.hubspot.client import HubSpotApi, PropertyDefinition
from adapter.mapping.models import (
    CompanyOverrides,
    CompanySettings,
    ContactOverrides,
    ContactSettings,
    LeadOverrides,
    LeadSettings,
    MappingConfig,
    MeetingOverrides,
    MeetingSettings,
    PropertySpec,
    TaskConfig,
    TaskOverrides,
    TaskSettings,
    Template,
)

OBJECT_TYPES = {
    "contact": "contacts",
    "company": "companies",
    "lead": "deals",
    "meeting": "meetings",
    "task": "tasks",
}
"""The HubSpot object each mapping record is written to."""

_RECORDS: tuple[tuple[type[BaseModel], str], ...] = (
    (ContactSettings, "contact"),
    (ContactOverrides, "contact"),
    (CompanySettings, "company"),
    (CompanyOverrides, "company"),
    (LeadSettings, "lead"),
    (LeadOverrides, "lead"),
    (MeetingSettings, "meeting"),
    (MeetingOverrides, "meeting"),
    (TaskSettings, "task"),
    (TaskOverrides, "task"),
    (TaskConfig, "task"),
)


def mapped_properties(mapping: MappingConfig) -> Iterator[tuple[str, str, str, PropertySpec]]:
    """Every ``properties:`` entry: ``(mapping key, record, property, spec)``."""
    yield from _walk(mapping, "")


def _walk(node: object, path: str) -> Iterator[tuple[str, str, str, PropertySpec]]:
    if isinstance(node, BaseModel):
        record = next((name for kind, name in _RECORDS if isinstance(node, kind)), None)
        for field_name in type(node).model_fields:
            value = getattr(node, field_name)
            here = f"{path}.{field_name}" if path else field_name
            if field_name == "properties" and record is not None and isinstance(value, dict):
                for name, spec in value.items():
                    yield f"{here}.{name}", record, name, spec
            else:
                yield from _walk(value, here)
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _fixed_text(spec: PropertySpec) -> str | None:
    """The value's text when no booking field changes it, else ``None``."""
    if isinstance(spec.value, Template):
        return None if spec.value.fields else spec.value.render({})
    if isinstance(spec.value, bool):
        return "true" if spec.value else "false"
    return str(spec.value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_moment(text: str) -> bool:
    if text.isdigit():  # HubSpot also takes epoch milliseconds
        return True
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def property_problem(spec: PropertySpec, definition: PropertyDefinition) -> str | None:
    """Why the portal's ``definition`` cannot take what ``spec`` writes, or ``None``."""
    if definition.read_only:
        return "is read-only in HubSpot"
    kind = definition.type
    if isinstance(spec.value, bool) and kind not in ("bool", "enumeration", "string"):
        return f"takes {kind} values, the mapping writes a boolean"
    is_number = isinstance(spec.value, int | float) and not isinstance(spec.value, bool)
    if is_number and kind not in ("number", "string", "enumeration"):
        return f"takes {kind} values, the mapping writes a number"
    if spec.policy == "append" and kind == "enumeration" and definition.field_type != "checkbox":
        return "is a single-choice enumeration; policy append needs a multi-select (checkbox)"
    fixed = _fixed_text(spec)
    options = set(definition.options)
    if kind == "enumeration" and options:
        if spec.order is not None:
            unknown = [value for value in spec.order if value not in options]
            if unknown:
                return (
                    f"order names {', '.join(unknown)}, not options of the property "
                    f"(options: {', '.join(definition.options)})"
                )
        if fixed is not None:
            chosen = fixed.split(";") if definition.field_type == "checkbox" else [fixed]
            unknown = [value for value in chosen if value and value not in options]
            if unknown:
                return (
                    f"value {';'.join(unknown)!r} is not an option "
                    f"(options: {', '.join(definition.options)})"
                )
    if fixed:
        if kind == "number" and not _is_number(fixed):
            return f"takes numbers, the mapping writes {fixed!r}"
        if kind in ("date", "datetime") and not _is_moment(fixed):
            return f"takes {kind} values, the mapping writes {fixed!r}"
        if kind == "bool" and fixed not in ("true", "false"):
            return f"takes true or false, the mapping writes {fixed!r}"
    return None


def check_mapping(api: HubSpotApi, mapping: MappingConfig) -> list[str]:
    """Every problem the portal has with ``mapping``, one line each."""
    return check_properties(api, mapping) + check_owners(api, mapping)


def mapped_owners(mapping: MappingConfig) -> Iterator[tuple[str, str]]:
    """Every owner email the mapping names: ``(mapping key, email)``."""
    sections = [("defaults.owner", mapping.defaults.owner)]
    sections += [
        (f"event_types.{name}.owner", config.owner)
        for name, config in sorted(mapping.event_types.items())
    ]
    for key, owner in sections:
        if owner is None:
            continue
        if owner.email is not None:
            yield f"{key}.email", owner.email
        for index, email in enumerate(owner.round_robin or []):
            yield f"{key}.round_robin[{index}]", email


def check_owners(api: HubSpotApi, mapping: MappingConfig) -> list[str]:
    """One line per owner email that is not an active owner of the portal."""
    named = list(mapped_owners(mapping))
    if not named:
        return []
    active = {owner.email for owner in api.owners()}
    return [
        f"{key}: {email} is not an active owner of the portal "
        f"({len(active)} active; add the user in HubSpot or fix the email)"
        for key, email in named
        if email.strip().lower() not in active
    ]


def check_properties(api: HubSpotApi, mapping: MappingConfig) -> list[str]:
    """One line per ``properties:`` entry the portal cannot take."""
    entries = list(mapped_properties(mapping))
    object_types = sorted({OBJECT_TYPES[record] for _, record, _, _ in entries})
    definitions = {
        object_type: api.property_definitions(object_type) for object_type in object_types
    }
    problems: list[str] = []
    for key, record, name, spec in entries:
        object_type = OBJECT_TYPES[record]
        definition = definitions[object_type].get(name)
        if definition is None:
            problems.append(f"{key}: HubSpot {object_type} have no property '{name}'")
            continue
        problem = property_problem(spec, definition)
        if problem is not None:
            problems.append(f"{key}: {object_type}.{name} {problem}")
    return problems
