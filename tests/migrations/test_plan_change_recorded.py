"""Migration 0025: ``subscriptions.plan_changed_at`` comes and goes with the revision; rows
changed before it keep null (their invoices were closed as they were)."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from sqlalchemy import Engine, inspect

from tallyflow.infra import db, migrate


def _migrate_to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("subscriptions")}


def test_plan_changed_at_is_added_and_removed(scratch_database: Callable[[], str]) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine)
    assert "plan_changed_at" in _columns(engine)
    _migrate_to(engine, "0020", down=True)
    assert "plan_changed_at" not in _columns(engine)
    _migrate_to(engine, "0025")
    assert "plan_changed_at" in _columns(engine)
