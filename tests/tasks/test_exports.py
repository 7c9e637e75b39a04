"""History exports (pandas): exact money in CSV and Parquet, filters, and one-line errors."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text

from tallyflow.errors import UserError
from tallyflow.tasks.exports import Filters, export, frame
from tests.tasks.test_invoicing import CLOSE, MARCH_END, catalog, hour, ingested_until, usage_events


@pytest.fixture
def billed(engine: Engine, tmp_path: Path) -> Engine:
    """A month of Mistral usage for acme, its hourly snapshots and wallet deductions, and its
    finalized invoice (the invoicing tests' scenario)."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    hour(engine, CLOSE)
    return engine


def test_frames_hold_exact_decimals_that_match_the_ledger(billed: Engine) -> None:
    usage = frame(billed, "usage")
    assert list(usage["external_subscription_id"].unique()) == ["sub_acme_001"]
    assert all(isinstance(v, Decimal) for v in usage["precise_amount_cents"])
    assert usage["amount_cents"].iloc[0] == Decimal(800)
    ledger = frame(billed, "wallet-transactions")
    with billed.connect() as conn:
        balance = conn.execute(text("select sum(balance_cents) from wallet_balances")).scalar_one()
    signed = sum(
        (a if d == "inbound" else -a)
        for a, d, s in zip(ledger["amount_cents"], ledger["direction"], ledger["status"],
                           strict=True)
        if s == "settled"
    )
    assert signed == balance == Decimal(12500 - 4680)
    invoices = frame(billed, "invoices")
    assert list(invoices["total_amount_cents"]) == [Decimal(0)]
    assert list(invoices["prepaid_credit_amount_cents"]) == [Decimal(4680)]


@pytest.mark.parametrize("what", ["usage", "wallet-transactions", "invoices"])
def test_csv_and_parquet_round_trip_every_digit(billed: Engine, tmp_path: Path,
                                               what: str) -> None:
    df = frame(billed, what)
    assert len(df) > 0
    rows = export(billed, what, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open() as handle:
        read = list(csv.DictReader(handle))
    assert rows == len(read) == len(df)
    table = pq.read_table(export(billed, what, tmp_path / "out.parquet") and
                          tmp_path / "out.parquet")
    assert table.num_rows == len(df)
    for name in ("amount_cents", "total_amount_cents"):
        if name in df.columns:
            assert pa.types.is_decimal(table.schema.field(name).type)
            assert table.column(name).to_pylist() == list(df[name])
            assert [Decimal(r[name]) for r in read] == list(df[name])


def test_filters_are_values(billed: Engine) -> None:
    assert len(frame(billed, "usage", Filters(customer="nobody"))) == 0
    assert len(frame(billed, "usage", Filters(customer="acme' or '1'='1"))) == 0
    assert len(frame(billed, "usage", Filters(subscription="sub_acme_001"))) > 0
    late = datetime(2026, 1, 1, tzinfo=UTC)
    assert len(frame(billed, "wallet-transactions", Filters(since=late))) == 0
    assert len(frame(billed, "invoices", Filters(until=datetime(2025, 4, 1, tzinfo=UTC)))) == 0
    assert len(frame(billed, "invoices", Filters(since=datetime(2025, 4, 1, tzinfo=UTC)))) == 1


@pytest.mark.parametrize(
    ("what", "name", "message"),
    [
        ("ledger", "out.csv", "unknown export 'ledger'"),
        ("usage", "out.xlsx", "unknown file type '.xlsx'"),
        ("usage", "missing/out.csv", "does not exist"),
    ],
)
def test_mistakes_are_one_line_errors(engine: Engine, tmp_path: Path, what: str, name: str,
                                      message: str) -> None:
    with pytest.raises(UserError, match=message):
        export(engine, what, tmp_path / name)
