"""Authenticated webhook deliveries refused before anything was stored, recorded so the
success rate counts them (the outbox has no row for them)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from sqlalchemy import Engine, insert
from sqlalchemy.exc import SQLAlchemyError

from adapter.insights.tables import refusals

log = logging.getLogger(__name__)

REFUSED_OUTCOMES = frozenset({"invalid", "conflict", "unsupported"})
"""The webhook's outcomes (its metric labels) that refuse an authenticated delivery."""


def describe(body: bytes) -> str | None:
    """The refused fields and reasons of a 400/409/415 answer (never the values sent)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    parts = [str(answer.get("error", ""))]
    for detail in answer.get("details") or []:
        if isinstance(detail, dict):
            parts.append(f"{str(detail.get('field'))[:200]}: {str(detail.get('message'))[:200]}")
    return "; ".join(p for p in parts if p)[:2000] or None


def record_refusal(
    engine: Engine,
    *,
    status: int,
    body: bytes,
    webhook_id: str | None,
    now: datetime | None = None,
) -> None:
    """Store one refused delivery; a failure to store it is logged, never the caller's 500."""
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(refusals).values(
                    received_at=now or datetime.now(UTC),
                    status=status,
                    detail=describe(body),
                    webhook_id=(webhook_id or None) and webhook_id[:200],
                )
            )
    except SQLAlchemyError as exc:
        log.warning("insights: a refused delivery could not be recorded: %s", exc)
