"""Migration 0025: ``subscriptions.plan_changed_at`` and the invoices' prepaid breakdown
(``prepaid_granted_credit_amount_cents``, ``prepaid_purchased_credit_amount_cents``) come and
go with the revision; rows from before it keep null."""

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


ADDED = {"plan_changed_at", "prepaid_granted_credit_amount_cents",
         "prepaid_purchased_credit_amount_cents"}


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for table in ("subscriptions", "invoices")
            for c in inspect(engine).get_columns(table)}


def test_the_columns_are_added_and_removed(scratch_database: Callable[[], str]) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine)
    assert ADDED <= _columns(engine)
    _migrate_to(engine, "0020", down=True)
    assert not ADDED & _columns(engine)
    _migrate_to(engine, "0025")
    assert ADDED <= _columns(engine)
