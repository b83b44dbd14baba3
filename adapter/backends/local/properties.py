"""Mapped CRM properties of the local CRM's records, and their write policies.

One row per (record type, record id, property name) rather than a column per
table: the mapping names the properties, so the schema cannot. Values are
JSON, so a number or boolean reads back as one.

Writes run after the record's upsert, in the same transaction, so they hold
that record's row lock: two bookings of one contact cannot interleave between
reading a property and writing it. An ``always`` property keeps the value of the
newest snapshot by version (as the record's own fields do); ``if_empty``,
``append`` and ``forward_only`` compare with the stored value
(``adapter.properties.resolve``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    Dialect,
    Select,
    String,
    Table,
    Text,
    bindparam,
    select,
)
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator

from adapter.backends.local.models import VERSION_LENGTH, UtcDateTime, crm_metadata
from adapter.db import upsert_insert
from adapter.plan import PlannedProperty, PropertyValue
from adapter.properties import resolve

__all__ = ["properties", "read_properties", "write_properties"]


class JsonValue(TypeDecorator[PropertyValue]):
    """A property's value as JSON text (a number stays a number)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: PropertyValue | None, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def process_result_value(self, value: Any, dialect: Dialect) -> PropertyValue | None:
        if value is None:
            return None
        loaded: PropertyValue = json.loads(value)
        return loaded


properties = Table(
    "crm_properties",
    crm_metadata,
    Column("record_type", String(16), primary_key=True),
    Column("record_id", String(32), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("value", JsonValue(), nullable=False),
    Column("version", String(VERSION_LENGTH), nullable=False, server_default=""),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint(
        "record_type IN ('contact', 'company', 'lead', 'meeting', 'task')",
        name="ck_crm_properties_record_type",
    ),
)

_HELD: Select[tuple[str, PropertyValue, str]] = select(
    properties.c.name, properties.c.value, properties.c.version
).where(
    properties.c.record_type == bindparam("p_type", type_=properties.c.record_type.type),
    properties.c.record_id == bindparam("p_id", type_=properties.c.record_id.type),
)


@functools.cache
def _upsert(dialect: str) -> Insert:
    stmt = upsert_insert(dialect, properties)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[properties.c.record_type, properties.c.record_id, properties.c.name],
        set_={"value": new.value, "version": new.version, "updated_at": new.updated_at},
    )


def write_properties(
    conn: Connection,
    record_type: str,
    record_id: str,
    planned: Mapping[str, PlannedProperty],
    version: str,
    now: datetime,
) -> None:
    """Apply ``planned`` to the record under each property's policy."""
    if not planned:
        return
    held = {
        row.name: row for row in conn.execute(_HELD, {"p_type": record_type, "p_id": record_id})
    }
    for name, prop in planned.items():
        row = held.get(name)
        if prop.policy == "always" and row is not None and row.version > version:
            continue  # an older snapshot applied late must not undo a newer one's value
        value = resolve(prop, row.value if row is not None else None)
        if value is None:
            continue
        conn.execute(
            _upsert(conn.dialect.name),
            {
                "record_type": record_type,
                "record_id": record_id,
                "name": name,
                "value": value,
                "version": version,
                "updated_at": now,
            },
        )


def read_properties(
    conn: Connection, record_type: str, record_ids: Iterable[str]
) -> dict[str, dict[str, PropertyValue]]:
    """Record id -> its properties by name, for the read API."""
    ids = sorted(set(record_ids))
    found: dict[str, dict[str, PropertyValue]] = {}
    if not ids:
        return found
    query = (
        select(properties.c.record_id, properties.c.name, properties.c.value)
        .where(properties.c.record_type == record_type, properties.c.record_id.in_(ids))
        .order_by(properties.c.name)
    )
    for row in conn.execute(query):
        found.setdefault(row.record_id, {})[row.name] = row.value
    return found
