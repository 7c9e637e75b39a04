"""Migration 0030 (API objects reserved before they are written) goes up and down: its two
tables appear and go, and nothing else changes (the schema it builds is pinned by
tests/migrations/test_schema_drift.py)."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from sqlalchemy import Engine, inspect

from tallyflow.infra import db, migrate

TABLES = {"api_writes", "api_mark"}


def _migrate(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_0030_up_and_down(scratch_database: Callable[[], str]) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    _migrate(engine, "0029", down=True)
    names = set(inspect(engine).get_table_names())
    assert not TABLES & names and "running_usage" in names
    _migrate(engine, "0030")
    assert TABLES <= set(inspect(engine).get_table_names())
