"""Migration 0023: the coupon tables and the fees' coupon shares come and go (the downgrade
gives back the schema before it)."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from tallyflow.infra import migrate
from tests.migrations.test_event_voids import _migrate_to

TABLES = {"coupons", "applied_coupons", "coupon_credits"}


def _schema(engine: Engine) -> tuple[set[str], set[str]]:
    found = inspect(engine)
    return (set(found.get_table_names()) & TABLES,
            {c["name"] for c in found.get_columns("invoice_fees")})


def test_downgrade_and_upgrade(engine: Engine) -> None:
    """On the (empty) test database, back to the revision before 0023 and up again (no
    scratch database to drop: that costs seconds)."""
    tables, columns = _schema(engine)
    assert tables == TABLES and "precise_coupons_amount_cents" in columns
    before = migrate.revisions()["0023"]
    assert isinstance(before, str)
    try:
        _migrate_to(engine, before, down=True)
        tables_before, columns_before = _schema(engine)
        # later revisions' columns go too; 0023's own are what this test is about
        assert tables_before == set() and columns_before <= columns
        assert "precise_coupons_amount_cents" not in columns_before
    finally:
        _migrate_to(engine, migrate.head_revision())
    assert _schema(engine) == (TABLES, columns)
