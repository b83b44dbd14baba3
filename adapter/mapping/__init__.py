"""The field mapping: a YAML file parsed once into models, and a pure planner.

``load_mapping`` turns ``mappings/*.yaml`` into a ``MappingConfig`` (or raises
``MappingFileError`` naming file, line and key); ``plan_booking`` turns a
``Booking`` into the ``BookingPlan`` every CRM backend applies.
"""

from adapter.mapping.dates import Offset, apply_offset, format_swedish, format_time, parse_offset
from adapter.mapping.loader import load_mapping, load_mapping_text
from adapter.mapping.models import (
    TEMPLATE_FIELDS,
    CancelSettings,
    CompanySettings,
    ContactSettings,
    Defaults,
    EventTypeConfig,
    LeadOverrides,
    LeadSettings,
    LifecycleOverrides,
    LifecycleSettings,
    MappingConfig,
    MeetingOverrides,
    MeetingSettings,
    NoShowSettings,
    RescheduleSettings,
    ResolvedEventType,
    TaskConfig,
    Template,
)
from adapter.mapping.planner import company_key, plan_booking, template_values

__all__ = [
    "TEMPLATE_FIELDS",
    "CancelSettings",
    "CompanySettings",
    "ContactSettings",
    "Defaults",
    "EventTypeConfig",
    "LeadOverrides",
    "LeadSettings",
    "LifecycleOverrides",
    "LifecycleSettings",
    "MappingConfig",
    "MeetingOverrides",
    "MeetingSettings",
    "NoShowSettings",
    "Offset",
    "RescheduleSettings",
    "ResolvedEventType",
    "TaskConfig",
    "Template",
    "apply_offset",
    "company_key",
    "format_swedish",
    "format_time",
    "load_mapping",
    "load_mapping_text",
    "parse_offset",
    "plan_booking",
    "template_values",
]
