"""The database: engine construction and schema migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.dialects import postgresql, sqlite

from outbox.db import make_engine

__all__ = ["current_revision", "head_revision", "make_engine", "upgrade", "upsert_insert"]

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: serialises concurrent ``migrate`` runs on PostgreSQL.
_PG_MIGRATION_LOCK = 0x600C3E


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def upgrade(engine: Engine) -> None:
    """Apply every pending migration; safe when several processes start at once."""
    config = _config()
    with engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite: one migrator at a time
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def upsert_insert(conn: Connection | str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT that takes ``on_conflict_do_update`` / ``do_nothing`` on this dialect
    (``conn``'s, or a dialect name, for a statement built once per dialect)."""
    dialect = conn if isinstance(conn, str) else conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"only SQLite and PostgreSQL are supported, not {dialect}")
