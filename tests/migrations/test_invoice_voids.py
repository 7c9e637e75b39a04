"""Migration 0021 on a filled database: finalized invoices and their periods are kept (their
periods become generation 0), the reshaped keys let a voided invoice and its regenerated
successor share a day and a period, and the downgrade refuses while voided invoices exist
(0020's schema cannot hold them) and otherwise gives back 0020's keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text

from tallyflow.infra import db, migrate
from tallyflow.tasks.corrections import regenerate_invoice, void_invoice
from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MARCH_END,
    catalog,
    hour,
    ingested_until,
    usage_events,
)


def _migrate_to(engine: Engine, revision: str, down: bool = False) -> None:
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _keys(engine: Engine) -> tuple[list[str], str]:
    with engine.connect() as conn:
        pk = inspect(conn).get_pk_constraint("invoice_subscriptions")["constrained_columns"]
        day = conn.execute(text("select indexdef from pg_indexes"
                                " where indexname = 'uq_invoices_customer_day'")).scalar_one()
    return pk, day


def _invoices(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "select v.id, v.number, v.status, v.total_amount_cents, i.subscription_id,"
            " i.period_start from invoices v join invoice_subscriptions i on i.invoice_id = v.id"
            " order by v.id"))]


def test_upgrade_keeps_invoices_and_downgrade_refuses_voided_ones(
    scratch_database: Callable[[], str], tmp_path: Path
) -> None:
    engine = db.get_engine(scratch_database())
    migrate.upgrade(engine)
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    assert hour(engine, CLOSE)["finalized"] == 1
    before = _invoices(engine)
    _migrate_to(engine, "0020", down=True)  # nothing voided: allowed
    assert _keys(engine)[0] == ["subscription_id", "period_start"]
    assert "voided_invoice_id" not in _keys(engine)[1]
    assert _invoices(engine) == before
    _migrate_to(engine, "0021")
    pk, day = _keys(engine)
    assert pk == ["subscription_id", "period_start", "regeneration"]
    assert "voided_invoice_id IS NULL" in day
    assert _invoices(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("select distinct regeneration from invoice_subscriptions")
                            ).scalars().all() == [0]
    number = str(before[0][1])
    _migrate_to(engine, "head")  # today's void and regenerate write today's columns
    void_invoice(engine, number, CLOSE)
    regenerate_invoice(engine, number, CLOSE)
    after = _invoices(engine)
    assert [r[2] for r in after] == ["voided", "finalized"]
    assert after[0][4:] == after[1][4:]  # one period, on both
    with pytest.raises(RuntimeError, match="voided or regenerated"):
        _migrate_to(engine, "0020", down=True)
    assert migrate.current_revision(engine) == migrate.head_revision()  # all rolled back
