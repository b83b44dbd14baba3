"""``bookme-crm hubspot setup``: the custom properties the backend needs, and a pipeline check.

Idempotent: a property group or property that exists already is left as it is
(HubSpot's 409), a missing one is created; a unique-key property that exists
without ``hasUniqueValue`` is reported, since HubSpot cannot then keep the
records unique. Every lead stage the mapping names must map (``hubspot.deal_stages``)
to a stage of ``hubspot.pipeline`` that exists in the portal. The portal's account
info (id, UI domain, data centre) is read first; the command stores it for the
dashboard's links.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapter.backends.hubspot.backend import (
    BOOKING_ID,
    COMPANIES,
    COMPANY_KEY,
    CONTACTS,
    DEALS,
    LEAD_KEY,
    MEETINGS,
    TASK_KEY,
    TASKS,
)
from adapter.backends.hubspot.client import AccountInfo, HubSpotApi, HubSpotAuthError
from adapter.backends.hubspot.portal_check import check_mapping
from adapter.errors import AdapterError
from adapter.mapping.models import MappingConfig

GROUP = "bookme"
GROUP_LABEL = "BookMe"


def _text(name: str, label: str, *, unique: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "string",
        "field_type": "text",
        "group_name": GROUP,
        "has_unique_value": unique,
        "description": "Written by bookme-crm; do not edit.",
    }


def required_properties(tags_property: str) -> dict[str, list[dict[str, Any]]]:
    """The custom properties per object type; the unique ones enforce contract §4."""
    tags = _text(tags_property, "BookMe tags")
    return {
        CONTACTS: [tags],
        COMPANIES: [_text(COMPANY_KEY, "BookMe company key", unique=True), tags],
        DEALS: [_text(LEAD_KEY, "BookMe lead key", unique=True), tags],
        MEETINGS: [_text(BOOKING_ID, "BookMe booking id")],
        TASKS: [_text(TASK_KEY, "BookMe task key")],
    }


def stage_names(mapping: MappingConfig) -> set[str]:
    """Every lead stage the mapping can set: live, on cancel and on no-show."""
    names: set[str] = set()
    for event_type in mapping.event_types:
        resolved = mapping.event_type(event_type)
        names.add(resolved.lead.stage)
        for stage in (
            resolved.lifecycle.on_cancel.lead_stage,
            resolved.lifecycle.on_no_show.lead_stage,
        ):
            if stage is not None:
                names.add(stage)
    return names


@dataclass
class SetupReport:
    """What ``run_setup`` did and found; ``ok`` is false when something is missing."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    account: AccountInfo | None = None
    account_error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def run_setup(api: HubSpotApi, mapping: MappingConfig) -> SetupReport:
    """Create what is missing, check what cannot be created; report both."""
    report = SetupReport()
    try:
        report.account = api.account_info()
    except HubSpotAuthError:
        raise
    except AdapterError as exc:  # the links fall back to app.hubspot.com; syncing is unaffected
        report.account_error = str(exc)
    config = mapping.defaults.hubspot
    for object_type, specs in required_properties(config.tags_property).items():
        created = api.create_group(object_type, GROUP, GROUP_LABEL)
        report.lines.append(
            f"{object_type}: property group '{GROUP}' {'created' if created else 'exists'}"
        )
        existing = api.property_names(object_type)
        for spec in specs:
            name = spec["name"]
            if name in existing:
                if spec["has_unique_value"] and not existing[name]:
                    report.problems.append(
                        f"{object_type}.{name} exists but is not unique-valued; "
                        "delete it in HubSpot and run setup again"
                    )
                else:
                    report.lines.append(f"{object_type}.{name}: exists")
                continue
            made = api.create_property(object_type, spec)
            unique = " (unique)" if spec["has_unique_value"] else ""
            report.lines.append(f"{object_type}.{name}{unique}: {'created' if made else 'exists'}")

    mapped = check_mapping(api, mapping)
    report.problems.extend(mapped)
    if not mapped:
        report.lines.append("mapping: every mapped property fits the portal")

    pipelines = api.pipelines(DEALS)
    stages = pipelines.get(config.pipeline)
    if stages is None:
        report.problems.append(
            f"deal pipeline {config.pipeline!r} not found (portal has: "
            f"{', '.join(sorted(pipelines)) or 'none'}); set hubspot.pipeline in the mapping"
        )
        return report
    report.lines.append(f"deal pipeline {config.pipeline!r}: exists")
    for name in sorted(stage_names(mapping)):
        stage_id = config.deal_stages.get(name)
        if stage_id is None:
            report.problems.append(
                f"lead stage {name!r} has no entry in hubspot.deal_stages of the mapping"
            )
        elif stage_id not in stages:
            report.problems.append(
                f"lead stage {name!r} -> deal stage {stage_id!r} is not in pipeline "
                f"{config.pipeline!r} (stages: {', '.join(sorted(stages))})"
            )
        else:
            report.lines.append(f"lead stage {name!r} -> deal stage {stage_id!r}: exists")
    return report
