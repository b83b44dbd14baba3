"""What ``/readyz`` says about automatic emails."""

from __future__ import annotations

from typing import Any

from adapter.mapping import MappingConfig
from adapter.settings import Settings


def automatic_tasks(mapping: MappingConfig) -> list[str]:
    """``eventType/task key`` of every task the mapping marks ``send:``."""
    found = []
    for name in sorted(mapping.event_types):
        settings = mapping.event_type(name)
        lifecycle = settings.lifecycle
        every = (*settings.tasks, *lifecycle.on_cancel.tasks, *lifecycle.on_no_show.tasks)
        found += [f"{name}/{task.key}" for task in every if task.send is not None]
    return found


def mail_status(settings: Settings, mapping: MappingConfig) -> dict[str, Any]:
    """Whether mails go out, and if not, why; never the SMTP URL (it holds a password)."""
    tasks = automatic_tasks(mapping)
    if settings.smtp_url is None:
        reason = "SMTP_URL is not set: automatic tasks stay ordinary tasks"
        return {"enabled": False, "reason": reason, "automaticTasks": tasks}
    return {"enabled": True, "from": settings.smtp_from, "automaticTasks": tasks}
