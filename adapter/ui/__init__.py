"""The dashboard: server-rendered pages at ``/ui`` over the local CRM and the outbox."""

from __future__ import annotations

from adapter.ui import calendar as _calendar  # noqa: F401 - registers /ui/calendar
from adapter.ui import insights as _insights  # noqa: F401 - registers /ui/insights
from adapter.ui.views import router

__all__ = ["router"]
