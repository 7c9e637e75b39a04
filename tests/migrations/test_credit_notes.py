"""Migration 0022: the credit note tables and their guards come and go with it, and a
subscription keeps its rows through it (on_termination_credit_note is null: no note, as
before)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from tallyflow.infra import db, migrate

TABLES = {"credit_notes", "credit_note_items", "credit_note_credits"}


def _migrate_to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_upgrade_guards_and_downgrade(scratch_database: Callable[[], str]) -> None:
    engine = db.get_engine(scratch_database())
    _migrate_to(engine, "0020")
    assert not TABLES & set(inspect(engine).get_table_names())
    _migrate_to(engine, "0022")
    assert TABLES <= set(inspect(engine).get_table_names())
    columns = {c["name"] for c in inspect(engine).get_columns("subscriptions")}
    assert "on_termination_credit_note" in columns
    # the guards are tested on real notes in tests/tasks/corrections/test_credit_notes.py
    for statement in ("delete from credit_note_items", "update credit_note_credits set id = 1"):
        with engine.begin() as conn:  # nothing to touch: no row, no error
            conn.execute(text(statement))
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(text("select credit_note_parts_guard()"))  # a trigger function only
    _migrate_to(engine, "0020", down=True)
    assert not TABLES & set(inspect(engine).get_table_names())
    columns = {c["name"] for c in inspect(engine).get_columns("subscriptions")}
    assert "on_termination_credit_note" not in columns
