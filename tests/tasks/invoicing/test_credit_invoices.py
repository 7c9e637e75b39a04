"""Credit invoices (Lago's ``invoice_type: "credit"``) against real Postgres: one per paid
top-up, issued once however often the step runs, numbered in the customer's sequence; paying
it settles the purchased credits (the balance rises then, not before), a failed payment
leaves them pending; settling through ``wallets mark-paid`` marks the invoice paid."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.invoicing import (
    InvoiceError,
    issue_credit_invoices,
    list_invoices,
    record_payment,
)
from tallyflow.tasks.wallets import mark_paid, open_catalog_wallets, top_up
from tests.tasks.invoicing.test_invoicing import catalog as apply_example
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

runner = CliRunner()


def catalog(engine: Engine, folder: Path) -> None:
    """The example catalog applied, its wallet opened (as ``tallyflow apply`` does)."""
    apply_example(engine, folder)
    open_catalog_wallets(engine)


def credit_invoices(engine: Engine) -> list[dict]:
    return list_invoices(engine, invoice_type="credit")


def test_the_initial_purchase_is_invoiced_once_and_paying_settles_it(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path)  # wallet: 100 paid credits (pending) + 25 granted, 1 USD each
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 2500
    [issued] = issue_credit_invoices(engine)
    assert issue_credit_invoices(engine) == []  # again: nothing new
    [invoice] = credit_invoices(engine)
    assert issued["number"] == invoice["number"] == "TF-001-001"
    assert (invoice["invoice_type"], invoice["status"], invoice["payment_status"]) == (
        "credit", "finalized", "pending")
    assert (invoice["fees_amount_cents"], invoice["taxes_amount_cents"],
            invoice["total_amount_cents"], invoice["prepaid_credit_amount_cents"]) == (
        10000, 0, 10000, 0)
    assert invoice["subscriptions"] == []
    [fee] = invoice["fees"]
    assert fee["item"]["type"] == "credit" and fee["units"] == "100.00000"
    assert fee["external_subscription_id"] is None and fee["amount_cents"] == 10000
    # a failed payment leaves the credits pending
    record_payment(engine, invoice["number"], "failed")
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 2500
    # paid: the balance rises now, once
    paid = record_payment(engine, invoice["number"], "succeeded")
    assert paid["payment_status"] == "succeeded" and paid["total_due_amount_cents"] == 0
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500
    record_payment(engine, invoice["number"], "succeeded")
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500
    assert_balances_match_ledger(engine)
    assert {k: v for k, v in paid.items() if k not in ("payment_status", "updated_at",
                                                      "total_due_amount_cents",
                                                      "payment_overdue")} == {
        k: v for k, v in invoice.items() if k not in ("payment_status", "updated_at",
                                                       "total_due_amount_cents",
                                                       "payment_overdue")}


def test_each_paid_top_up_has_its_own_invoice_in_one_sequence(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path)
    top_up(engine, "acme", Decimal("10"), Decimal("0"), key="a")
    top_up(engine, "acme", Decimal("0"), Decimal("5"), key="granted-only")  # nothing to bill
    top_up(engine, "acme", Decimal("2.5"), Decimal("1"), key="b")
    top_up(engine, "acme", Decimal("10"), Decimal("0"), key="a")  # a retry: posts nothing
    issued = issue_credit_invoices(engine)
    assert [(i["number"], i["amount_cents"]) for i in issued] == [
        ("TF-001-001", 10000), ("TF-001-002", 1000), ("TF-001-003", 250)]
    assert [i["issuing_date"] for i in credit_invoices(engine)] == [
        credit_invoices(engine)[0]["issuing_date"]] * 3  # same day: one invoice each


def test_wallets_mark_paid_marks_the_credit_invoice_paid(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path)
    issue_credit_invoices(engine)
    assert mark_paid(engine, "acme") == 1
    [invoice] = credit_invoices(engine)
    assert invoice["payment_status"] == "succeeded"
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500
    # paying the invoice afterwards moves nothing more
    record_payment(engine, invoice["number"], "succeeded")
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500
    assert_balances_match_ledger(engine)


def test_a_credit_invoice_cannot_change_once_issued(engine: Engine, tmp_path: Path) -> None:
    from sqlalchemy.exc import DBAPIError

    catalog(engine, tmp_path)
    issue_credit_invoices(engine)
    with pytest.raises(DBAPIError, match="finalized"):
        with engine.begin() as conn:
            conn.execute(text("update invoice_fees set amount_cents = 1"))
    with pytest.raises(InvoiceError, match="no invoice"):
        record_payment(engine, "nope", "succeeded")


def test_cli_top_up_issues_and_invoices_mark_paid_settles(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path)
    issue_credit_invoices(engine)
    done = runner.invoke(app, ["wallets", "top-up", "acme", "--paid-credits", "20", "--json"])
    assert done.exit_code == 0, done.output
    import json

    assert json.loads(done.stdout)["credit_invoices"] == ["TF-001-002"]
    listed = runner.invoke(app, ["invoices", "list", "--type", "credit"])
    assert listed.exit_code == 0 and "TF-001-002" in listed.stdout and "credit" in listed.stdout
    before = balances(engine)["acme/prepaid_credits"]["cents"]
    failed = runner.invoke(app, ["invoices", "mark-failed", "TF-001-002"])
    assert failed.exit_code == 0 and balances(engine)["acme/prepaid_credits"]["cents"] == before
    paid = runner.invoke(app, ["invoices", "mark-paid", "TF-001-002"])
    assert paid.exit_code == 0, paid.output
    assert balances(engine)["acme/prepaid_credits"]["cents"] == before + 2000
    bad = runner.invoke(app, ["invoices", "list", "--type", "nope"])
    assert bad.exit_code == 2
