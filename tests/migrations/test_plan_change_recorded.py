"""Migration 0025: ``subscriptions.plan_changed_at`` and the invoices' prepaid breakdown
(``prepaid_granted_credit_amount_cents``, ``prepaid_purchased_credit_amount_cents``) come and
go with the revision; rows from before it keep null.

Run on the test database itself, which is at the head and empty (a scratch database costs
seconds to make and drop); it is back at the head whatever happens."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect

from tallyflow.infra import migrate

ADDED = {"plan_changed_at", "prepaid_granted_credit_amount_cents",
         "prepaid_purchased_credit_amount_cents"}


def _migrate_to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for table in ("subscriptions", "invoices")
            for c in inspect(engine).get_columns(table)}


def test_the_columns_are_added_and_removed(engine: Engine) -> None:
    assert ADDED <= _columns(engine)
    try:
        _migrate_to(engine, "0025-1", down=True)  # the revision before 0025
        assert not ADDED & _columns(engine)
    finally:
        _migrate_to(engine, "head")
    assert ADDED <= _columns(engine)
