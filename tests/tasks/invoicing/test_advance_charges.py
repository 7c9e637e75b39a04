"""Charges paid in advance against real Postgres: each event's fee once, its pay_in_advance
invoice paid from the wallet at once, the hourly deductions and the period-end invoice
leaving the charge out, fees kept off invoices and regrouped at period end, and late events.
Crashes: tests/survival/test_advance_crash_points.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.invoicing import close_periods
from tallyflow.tasks.invoicing.advance.charges import bill_advance_charges
from tallyflow.tasks.usage import current_usage, due_subscriptions, snapshot_subscriptions
from tallyflow.tasks.wallets import wallet_overview
from tests.tasks.invoicing.test_invoicing import MARCH_END, catalog, ingested_until, invoices
from tests.tasks.rating_fixtures import MISTRAL, SUB, ingest_events, token_event
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, run_once

CLOSE = datetime(2025, 4, 1, 8, tzinfo=UTC)
runner = CliRunner()
DAY = datetime(2025, 3, 10, 12, tzinfo=UTC)


def cycle(engine: Engine, at: datetime) -> dict[str, Any]:
    """One billing hour without Prefect, in the flow's order."""
    fold_pending(engine)
    due = due_subscriptions(engine, at)
    if due:
        snapshot_subscriptions(engine, due, at)
    run_once(engine, at)
    advance = bill_advance_charges(engine, at).as_dict()
    return {"advance": advance, "close": close_periods(engine, at, now=at).as_dict()}


def fees(engine: Engine) -> list[tuple[str, int, int]]:
    """(transaction id, amount cents, wallet-paid cents) in billing order."""
    with engine.connect() as conn:
        return [(r.transaction_id, int(r.amount_cents), int(r.prepaid_cents))
                for r in conn.execute(text("select transaction_id, amount_cents, prepaid_cents"
                                           " from advance_fees order by id"))]


def ledger(engine: Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [(r.source, r.key, int(r.amount_cents)) for r in conn.execute(text(
            "select source, split_part(idempotency_key, ':', 1) as key, amount_cents"
            " from wallet_transactions where direction = 'outbound' order by id"))]


def events(engine: Engine, folder: Path, *items: tuple[str, datetime, int, str]) -> None:
    ingest_events(engine, folder, [token_event(txn, when.isoformat(), tokens, kind=kind)
                                   for txn, when, tokens, kind in items])


def test_each_event_is_billed_once_on_an_hourly_invoice_paid_from_the_wallet(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, charge={"pay_in_advance": True})
    events(engine, tmp_path, ("e1", DAY, 2_000_000, "input"), ("e2", DAY, 2_000_000, "output"))
    cycle(engine, DAY + timedelta(hours=1))
    # package of 1M: small input $1, output $3 per package (the organization's 10 % tax)
    assert fees(engine) == [("e1", 200, 220), ("e2", 600, 660)]
    [invoice] = invoices(engine)
    assert invoice["invoice_type"] == "pay_in_advance" and invoice["status"] == "finalized"
    assert [(f["event_transaction_id"], f["amount_cents"], f["pay_in_advance"])
            for f in invoice["fees"]] == [("e1", 200, True), ("e2", 600, True)]
    assert invoice["prepaid_credit_amount_cents"] == 880 and invoice["total_amount_cents"] == 0
    # the wallet's 25 granted credits are consumed first (Lago's prepaid credit breakdown)
    assert (invoice["prepaid_granted_credit_amount_cents"],
            invoice["prepaid_purchased_credit_amount_cents"]) == (880, None)
    assert invoice["payment_status"] == "succeeded"
    # paid once, at once; the hourly usage deduction leaves the charge out (not twice)
    assert ledger(engine) == [("invoice", "invoice", 880)]
    # and the wallet's ongoing balance owes nothing more for it
    [wallet] = wallet_overview(engine, "acme", DAY + timedelta(hours=1))["wallets"]
    assert wallet["balance_cents"] == wallet["ongoing_balance_cents"] == 12500 - 880
    # a rerun of the hour and the next hours bill nothing again
    for moment in (DAY + timedelta(hours=1), DAY + timedelta(hours=2)):
        assert cycle(engine, moment)["advance"]["fees"] == 0
    assert len(invoices(engine)) == 1 and ledger(engine) == [("invoice", "invoice", 880)]
    # a third event: the package price after it minus before it (3.5M -> 4 packages: +$2)
    events(engine, tmp_path, ("e3", DAY + timedelta(days=1), 1_500_000, "input"))
    cycle(engine, DAY + timedelta(days=1, hours=1))
    assert fees(engine)[-1] == ("e3", 200, 220)
    # current usage still shows the charge, as Lago's customer_usage does
    usage = current_usage(engine, SUB, DAY + timedelta(days=2))
    assert usage["amount_cents"] == 1000
    # the period-end invoice does not bill the charge again (no charge fees at all)
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    cycle(engine, CLOSE)
    closing = [i for i in invoices(engine) if i["invoice_type"] == "subscription"]
    assert [f["item"]["type"] for i in closing for f in i["fees"]] == []
    assert sum(amount for _, _, amount in ledger(engine)) == 880 + 220
    assert_balances_match_ledger(engine)


def test_fees_kept_off_invoices_are_paid_then_regrouped_at_period_end(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, charge={"pay_in_advance": True, "invoiceable": False,
                                      "regroup_paid_fees": "invoice"})
    events(engine, tmp_path, ("e1", DAY, 2_000_000, "input"), ("e2", DAY, 2_000_000, "output"))
    cycle(engine, DAY + timedelta(hours=1))
    assert fees(engine) == [("e1", 200, 220), ("e2", 600, 660)]
    assert invoices(engine) == []  # no invoice: fees only, paid from the wallet at once
    assert ledger(engine) == [("invoice", "advance", 880)]
    # visible as Lago's fees (GET /fees) on the command line
    shown = runner.invoke(app, ["invoices", "advance-fees", "--subscription", SUB, "--json"])
    assert shown.exit_code == 0, shown.output
    assert [(f["event_transaction_id"], f["total_amount_cents"], f["payment_status"],
             f["invoiceable"], f["lago_invoice_id"]) for f in json.loads(shown.output)["fees"]
            ] == [("e1", 220, "succeeded", False, None), ("e2", 660, "succeeded", False, None)]
    cycle(engine, DAY + timedelta(hours=1))
    assert ledger(engine) == [("invoice", "advance", 880)]
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    cycle(engine, CLOSE)
    [regrouped] = [i for i in invoices(engine) if i["invoice_type"] == "advance_charges"]
    assert regrouped["status"] == "finalized" and regrouped["payment_status"] == "succeeded"
    assert [(f["amount_cents"], f["invoiceable"]) for f in regrouped["fees"]] == [
        (200, False), (600, False)]
    assert regrouped["fees_amount_cents"] == 800 and regrouped["taxes_amount_cents"] == 80
    assert regrouped["prepaid_credit_amount_cents"] == 880
    assert regrouped["total_amount_cents"] == 0
    listed = runner.invoke(app, ["invoices", "list", "--type", "advance_charges", "--json"])
    assert [i["number"] for i in json.loads(listed.output)["invoices"]] == [regrouped["number"]]
    cycle(engine, CLOSE + timedelta(hours=1))  # regrouped once
    assert len([i for i in invoices(engine) if i["invoice_type"] == "advance_charges"]) == 1
    assert ledger(engine) == [("invoice", "advance", 880)]
    assert_balances_match_ledger(engine)


def test_a_late_event_pays_its_own_delta_and_issued_fees_never_change(
    engine: Engine, tmp_path: Path
) -> None:
    """e1 (1.5M, 2 packages: $2) is billed; e0, timestamped a day earlier, arrives after it:
    it pays its own delta on top (3M: 3 packages, +$1), e1's fee stays. In time order Lago
    would have billed e0 $2 and e1 $1: the same total, split by arrival instead."""
    catalog(engine, tmp_path, charge={"pay_in_advance": True})
    events(engine, tmp_path, ("e1", DAY, 1_500_000, "input"))
    cycle(engine, DAY + timedelta(hours=1))
    events(engine, tmp_path, ("e0", DAY - timedelta(days=1), 1_500_000, "input"))
    cycle(engine, DAY + timedelta(hours=2))
    assert [f[:2] for f in fees(engine)] == [("e1", 200), ("e0", 100)]
    assert [len(i["fees"]) for i in invoices(engine)] == [1, 1]


def seat(txn: str, when: datetime, user: str, operation: str = "add") -> dict[str, Any]:
    return {"transaction_id": txn, "external_subscription_id": SUB, "code": "seats",
            "timestamp": when.isoformat(),
            "properties": {"user": user, "operation_type": operation}}


def _apply_with_seats(engine: Engine, tmp_path: Path, plan: dict[str, Any]) -> None:
    """Apply ``plan`` next to a "seats" unique count metric (field ``user``)."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "plan.json").write_text(json.dumps(plan))
    (extra / "seats.json").write_text(json.dumps({"billable_metric": {
        "code": "seats", "name": "Seats", "aggregation_type": "unique_count_agg",
        "field_name": "user"}}))
    assert apply_catalog(engine, [extra]).ok


def test_unique_count_with_removals_bills_only_new_highs(engine: Engine, tmp_path: Path) -> None:
    """Seats at $3 (unique_count, paid in advance) over three cycles: a removal and a re-add
    pay nothing, a third seat pays; a late removal older than the add changes nothing."""
    catalog(engine, tmp_path)
    plan = json.loads((MISTRAL / "plan.json").read_text())
    plan["plan"]["charges"].append({"billable_metric_code": "seats", "charge_model": "standard",
                                    "pay_in_advance": True, "properties": {"amount": "3"}})
    _apply_with_seats(engine, tmp_path, plan)
    ingest_events(engine, tmp_path, [seat("s1", DAY, "u1"), seat("s2", DAY, "u2")])
    cycle(engine, DAY + timedelta(hours=1))
    later = DAY + timedelta(hours=1, minutes=30)
    ingest_events(engine, tmp_path, [seat("s3", later, "u1", "remove"),
                                     seat("s4", later + timedelta(minutes=1), "u1"),
                                     seat("s5", DAY - timedelta(hours=1), "u2", "remove")])
    cycle(engine, DAY + timedelta(hours=2))
    ingest_events(engine, tmp_path, [seat("s6", DAY + timedelta(hours=2, minutes=5), "u3")])
    cycle(engine, DAY + timedelta(hours=3))
    assert [f[:2] for f in fees(engine)] == [
        ("s1", 300), ("s2", 300), ("s5", 0), ("s3", 0), ("s4", 0), ("s6", 300)]
    with engine.connect() as conn:
        assert [int(u) for u in conn.execute(text(
            "select units from advance_fees order by id")).scalars()] == [1, 1, 0, -1, 1, 1]
    # on one pay_in_advance invoice per cycle with something to pay
    assert [[f["event_transaction_id"] for f in i["fees"]] for i in invoices(engine)] == [
        ["s1", "s2"], ["s6"]]


def test_a_charge_added_before_it_does_not_bill_its_events_again(
    engine: Engine, tmp_path: Path
) -> None:
    """A plan version that puts a charge on another metric first moves the paid-in-advance
    charge to another position; what it billed stays billed (its slot: metric and rank)."""
    catalog(engine, tmp_path, charge={"pay_in_advance": True})
    events(engine, tmp_path, ("e1", DAY, 2_000_000, "input"))
    cycle(engine, DAY + timedelta(hours=1))
    plan = json.loads((tmp_path / "catalog" / "plan.json").read_text())
    plan["plan"]["charges"].insert(0, {"billable_metric_code": "seats",
                                       "charge_model": "standard", "properties": {"amount": "3"}})
    _apply_with_seats(engine, tmp_path, plan)
    events(engine, tmp_path, ("e2", DAY + timedelta(hours=1, minutes=5), 1_000_000, "input"))
    cycle(engine, DAY + timedelta(hours=2))
    assert [f[:2] for f in fees(engine)] == [("e1", 200), ("e2", 100)]  # e1 once
    with engine.connect() as conn:
        assert list(conn.execute(text(
            "select charge_position from advance_fees order by id")).scalars()) == [0, 1]
