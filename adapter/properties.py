"""Write policies of mapped CRM properties: what to write, given what the CRM holds.

Pure, and shared by every backend, so the local CRM and HubSpot keep a
salesperson's value, union multi-selects and move lifecycles forward alike.
The CRM's current value is compared as text: HubSpot returns every property as
a string, and a multi-select as ``;``-separated options.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapter.plan import PlannedProperty, PropertyValue

__all__ = ["as_text", "needs_current", "resolve", "resolve_all"]


def as_text(value: PropertyValue | None) -> str:
    """``value`` as a CRM takes it in text: booleans ``true``/``false``, numbers as written."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def needs_current(planned: Mapping[str, PlannedProperty]) -> list[str]:
    """The properties whose policy needs the CRM's current value, sorted."""
    return sorted(name for name, prop in planned.items() if prop.policy != "always")


def resolve(planned: PlannedProperty, current: PropertyValue | None) -> PropertyValue | None:
    """The value to write for ``planned`` over ``current``; ``None``: leave it as it is."""
    held = as_text(current).strip()
    if planned.policy == "always":
        return planned.value
    if planned.policy == "if_empty":
        return planned.value if not held else None
    if planned.policy == "append":
        items = [item for item in held.split(";") if item.strip()]
        added = [item for item in as_text(planned.value).split(";") if item.strip()]
        merged = list(dict.fromkeys([*items, *added]))
        return ";".join(merged) if merged != items else None
    # forward_only: a value we cannot rank (set by hand outside the order) is not ours to move.
    new = as_text(planned.value)
    if new not in planned.order or new == held:
        return None
    if not held:
        return new
    if held not in planned.order:
        return None
    return new if planned.order.index(new) > planned.order.index(held) else None


def resolve_all(
    planned: Mapping[str, PlannedProperty], current: Mapping[str, PropertyValue | None]
) -> dict[str, PropertyValue]:
    """Every property of ``planned`` that changes, with the value to write."""
    writes: dict[str, PropertyValue] = {}
    for name, prop in planned.items():
        value = resolve(prop, current.get(name))
        if value is not None:
            writes[name] = value
    return writes
