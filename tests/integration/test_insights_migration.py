"""Migration 0022 creates insights' tables as ``adapter.insights.tables`` declares them,
and the outbox indexes, on SQLite and PostgreSQL; its downgrade removes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

REVISION = "0022_insights_indexes"


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_migration_0022_matches_the_tables_and_downgrades(
    request: pytest.FixtureRequest, tmp_path: Path, database: str
) -> None:
    """Every insights table has the declared columns; the outbox gains its two indexes;
    downgrading one step drops them all, and upgrading again restores them."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from adapter import db
    from adapter.insights.tables import insights_metadata

    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        found = inspect(engine)
        for table in insights_metadata.sorted_tables:
            columns = {c["name"] for c in found.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
        indexes = {i["name"] for i in found.get_indexes("outbox_events")}
        assert {"ix_outbox_events_received", "ix_outbox_events_updated"} <= indexes
        previous = ScriptDirectory.from_config(db._config()).get_revision(REVISION).down_revision
        with engine.begin() as conn:
            config = db._config()
            config.attributes["connection"] = conn
            command.downgrade(config, str(previous))
        after = inspect(engine)
        assert not set(insights_metadata.tables) & set(after.get_table_names())
        assert "ix_outbox_events_updated" not in {
            i["name"] for i in after.get_indexes("outbox_events")
        }
        db.upgrade(engine)
        assert set(insights_metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
