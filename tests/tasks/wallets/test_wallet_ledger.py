"""The wallet ledger cannot be deleted or rewritten: real SQL attempts against the migrated
schema (trigger ``wallet_transactions_guard`` and RESTRICT foreign keys, migration 0004)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from tallyflow.models.tables import metadata
from tallyflow.tasks.catalog import apply_catalog
from tests.migrations.test_schema_drift import schema_differences
from tests.tasks.wallets.test_wallets_support import WalletSpec, run_once, seed, set_usage

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def ledger(engine: Engine) -> Engine:
    """A customer with one settled top-up, one settled usage deduction, one pending purchase."""
    seed(engine, {"a": [WalletSpec("main", paid="10", granted="5")]})
    set_usage(engine, "a", 250)
    run_once(engine, settle_paid=False)
    with engine.connect() as conn:
        statuses = sorted(conn.execute(text(
            "select source || ':' || status from wallet_transactions")).scalars())
    assert statuses == ["initial:pending", "initial:settled", "usage:settled"]
    return engine


def _refused(engine: Engine, sql: str, match: str, **params: str) -> None:
    with pytest.raises(DBAPIError, match=match):
        with engine.begin() as conn:
            conn.execute(text(sql), params)


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("delete from wallet_transactions", "cannot be deleted"),
        ("delete from wallet_transactions where source = 'usage'", "cannot be deleted"),
        ("update wallet_transactions set credits = 0 where source = 'usage'",
         "can only change its status"),
        ("update wallet_transactions set amount_cents = amount_cents + 1",
         "only change its status"),
        ("update wallet_transactions set idempotency_key = 'x' || id", "only change its status"),
        ("update wallet_transactions set status = 'pending' where status = 'settled'",
         "settled -> pending is not an allowed transition"),
        ("update wallet_transactions set status = 'voided' where status = 'settled'",
         "settled -> voided is not an allowed transition"),
        ("update wallet_transactions set settled_at = now() where status = 'settled'",
         "settled_at is set only when it settles"),
    ],
)
def test_ledger_rows_cannot_be_deleted_or_rewritten(ledger: Engine, sql: str, match: str) -> None:
    _refused(ledger, sql, match)


@pytest.mark.parametrize("status", ["settled", "failed", "voided"])
def test_pending_rows_move_along_allowed_transitions_only(ledger: Engine, status: str) -> None:
    with ledger.begin() as conn:
        conn.execute(text(
            "update wallet_transactions set status = :s,"
            " settled_at = case when :s = 'settled' then now() end where status = 'pending'"
        ), {"s": status})
    _refused(ledger, "update wallet_transactions set status = 'pending' where status = :s"
             " and source = 'initial' and credits = 10", "is not an allowed transition",
             s=status)


@pytest.mark.parametrize(
    "sql",
    [
        "delete from wallets",
        "delete from subscriptions",
        "delete from customers",
    ],
)
def test_objects_with_ledger_rows_cannot_be_deleted(ledger: Engine, sql: str) -> None:
    """The foreign keys RESTRICT: the ledger no longer goes with its wallet (CASCADE) or loses
    its subscription (SET NULL)."""
    with pytest.raises(IntegrityError, match="foreign key"):
        with ledger.begin() as conn:
            conn.execute(text(sql))
    with ledger.connect() as conn:
        assert conn.execute(text("select count(*) from wallet_transactions")).scalar_one() == 3


def test_a_catalog_without_the_wallet_leaves_it_and_its_ledger(
    engine: Engine, tmp_path: Path
) -> None:
    """apply never deletes: a wallet missing from the files keeps its ledger; it ends through
    expiration_at (the wallet flow terminates it and voids what is left)."""
    assert apply_catalog(engine, [ROOT / "examples" / "mistral"]).ok
    run_once(engine)
    folder = tmp_path / "catalog"
    folder.mkdir()
    for name in ("billable_metric", "plan", "customer", "subscription"):
        (folder / f"{name}.json").write_text((ROOT / "examples" / "mistral" /
                                               f"{name}.json").read_text())
    result = apply_catalog(engine, [folder])
    assert result.ok and not result.changed
    with engine.connect() as conn:
        status = conn.execute(text("select status from wallets")).scalar_one()
        rows = conn.execute(text("select count(*) from wallet_transactions")).scalar_one()
    assert status == "active" and rows == 2


def test_tables_module_matches_the_migrated_schema(engine: Engine) -> None:
    # the drift test's comparison (its exclusions: partitions of usage_snapshots)
    assert schema_differences(engine, metadata) == []


def test_usage_amounts_hold_whole_minor_units(engine: Engine) -> None:
    """Rating rounds once (models.rating.money); the wallet SQL no longer rounds again with its
    own round(), and the table refuses a fractional amount instead."""
    seed(engine, {"a": []})
    set_usage(engine, "a", 1234)
    with pytest.raises(IntegrityError, match="whole_minor_units"):
        set_usage(engine, "a", "1234.5")
