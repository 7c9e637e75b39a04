"""Migration 0031 (change sets) goes up and down: its three tables appear and go, and nothing
else changes (the schema it builds is pinned by tests/migrations/test_schema_drift.py)."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from sqlalchemy import Engine, inspect

from tallyflow.infra import db, migrate

TABLES = {"change_sets", "change_set_members", "change_set_bounds"}


def _migrate(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_0031_up_and_down(scratch_database: Callable[[], str]) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    _migrate(engine, "0030", down=True)
    names = set(inspect(engine).get_table_names())
    assert not TABLES & names and "running_usage" in names
    _migrate(engine, "0031")
    assert TABLES <= set(inspect(engine).get_table_names())
    assert [i["name"] for i in inspect(engine).get_indexes("change_set_bounds")] == [
        "ix_change_set_bounds_next_boundary"
    ]
