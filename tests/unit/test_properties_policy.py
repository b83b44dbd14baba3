"""adapter.properties.resolve: what each write policy writes over the CRM's current value."""

from __future__ import annotations

import pytest

from adapter.plan import PlannedProperty, PropertyValue
from adapter.properties import as_text, needs_current, resolve

ORDER = ("subscriber", "lead", "marketingqualifiedlead", "opportunity", "customer", "other")


def forward(value: str) -> PlannedProperty:
    return PlannedProperty(value=value, policy="forward_only", order=ORDER)


@pytest.mark.parametrize(
    ("planned", "current", "written"),
    [
        (PlannedProperty(value="CTO"), "CEO", "CTO"),
        (PlannedProperty(value=5000), None, 5000),
        (PlannedProperty(value="NEW", policy="if_empty"), None, "NEW"),
        (PlannedProperty(value="NEW", policy="if_empty"), "  ", "NEW"),
        (PlannedProperty(value="NEW", policy="if_empty"), "OPEN", None),
        (PlannedProperty(value=True, policy="if_empty"), "false", None),
        (PlannedProperty(value="ai;crm", policy="append"), "crm;seo", "crm;seo;ai"),
        (PlannedProperty(value="crm", policy="append"), "crm;seo", None),
        (PlannedProperty(value="crm", policy="append"), None, "crm"),
        (forward("lead"), None, "lead"),
        (forward("customer"), "lead", "customer"),
        (forward("lead"), "customer", None),
        (forward("lead"), "lead", None),
        (forward("lead"), "hand-made", None),
    ],
)
def test_resolve(planned: PlannedProperty, current: PropertyValue | None, written: object) -> None:
    """Each policy writes, merges or leaves the CRM's value as documented."""
    assert resolve(planned, current) == written


def test_text_forms_and_which_policies_read_first() -> None:
    """Booleans are written true/false, and only non-always policies need the current value."""
    assert (as_text(True), as_text(2.5), as_text(None)) == ("true", "2.5", "")
    planned = {
        "a": PlannedProperty(value="x"),
        "c": PlannedProperty(value="x", policy="append"),
        "b": PlannedProperty(value="x", policy="if_empty"),
    }
    assert needs_current(planned) == ["b", "c"]
