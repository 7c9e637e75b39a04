"""Migration 0024 on a filled database: invoices and fees keep every row, the one-off invoice
and add-on fee columns arrive empty, an idempotency key is unique; a downgrade with a one-off
invoice is refused (it would lose it), without one it gives back 0020's schema."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tallyflow.infra import db, migrate


def _migrate_to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


_INVOICE = """
    insert into invoices (lago_id, customer_id, invoice_type, issuing_date, currency,
      fees_amount_cents, taxes_amount_cents, total_amount_cents, customer, finalize_after,
      payment_due_date{extra})
    values (:lago, 1, :type, '2026-12-01', 'USD', 100, 0, 100, '{{}}', now(), '2026-12-01'{values})
"""


def test_upgrade_keeps_invoices_and_a_downgrade_never_loses_a_one_off(
    scratch_database: Callable[[], str]
) -> None:
    engine = db.get_engine(scratch_database())
    _migrate_to(engine, "0020")
    with engine.begin() as conn:
        conn.execute(text("insert into customers (external_id, document, digest)"
                          " values ('acme', '{}', 'd')"))
        conn.execute(text(_INVOICE.format(extra="", values="")),
                     {"lago": "a", "type": "subscription"})
    _migrate_to(engine, "0024")
    with engine.begin() as conn:
        assert conn.execute(text("select lago_id, idempotency_key from invoices")).all() == [
            ("a", None)]
        conn.execute(text("insert into add_ons (code, name, amount_cents, amount_currency,"
                          " document, digest) values ('setup', 'Setup', 100, 'USD', '{}', 'd')"))
        conn.execute(text(_INVOICE.format(extra=", idempotency_key", values=", 'k'")),
                     {"lago": "b", "type": "one_off"})
        conn.execute(text(
            "insert into invoice_fees (lago_id, invoice_id, position, item_type, code, name,"
            " units, events_count, amount_cents, precise_amount_cents, taxes_rate,"
            " taxes_precise_amount_cents, taxes_amount_cents, total_amount_cents,"
            " from_datetime, to_datetime, add_on_id) select 'f', id, 0, 'add_on', 'setup',"
            " 'Setup', 1, 0, 100, 100, 0, 0, 0, 100, now(), now(), 1 from invoices"
            " where lago_id = 'b'"))
    with pytest.raises(IntegrityError), engine.begin() as conn:  # one invoice per key
        conn.execute(text(_INVOICE.format(extra=", idempotency_key", values=", 'k'")),
                     {"lago": "c", "type": "one_off"})
    with pytest.raises(DBAPIError, match="one-off invoices exist"):
        _migrate_to(engine, "0020", down=True)
    with engine.begin() as conn:
        conn.execute(text("delete from invoice_fees"))
        conn.execute(text("delete from invoices where lago_id = 'b'"))
    _migrate_to(engine, "0020", down=True)
    with engine.connect() as conn:
        assert conn.execute(text("select lago_id from invoices")).scalars().all() == ["a"]
        assert conn.execute(text("select to_regclass('add_ons')")).scalar() is None
