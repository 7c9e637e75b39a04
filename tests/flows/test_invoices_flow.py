"""The billing cycle closes ended periods (real Prefect): the artifact lists the invoices it
finalized, each invoice is announced once (``tallyflow.invoice.finalized``; ``emitted_at``
marks it), and the CLI reads the invoice back in Lago's shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.flows.billing import billing_cycle
from tallyflow.flows.invoice_pdfs import invoice_pdfs
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import Invoice, InvoiceFee
from tallyflow.models.lago.summaries import BillingCycleSummary
from tallyflow.tasks.invoicing import pdf_available
from tests.flows.test_billing_artifact import _latest_billing_artifact
from tests.tasks.invoicing.test_invoicing import MARCH_END, catalog, ingested_until, usage_events

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()

INVOICE_FIELDS = {
    "lago_id", "sequential_id", "number", "issuing_date", "invoice_type", "status",
    "payment_status", "currency", "fees_amount_cents", "taxes_amount_cents",
    "coupons_amount_cents", "credit_notes_amount_cents",
    "sub_total_excluding_taxes_amount_cents", "sub_total_including_taxes_amount_cents",
    "prepaid_credit_amount_cents", "total_amount_cents", "total_due_amount_cents",
    "progressive_billing_credit_amount_cents", "net_payment_term", "payment_due_date",
    "payment_overdue", "version_number", "customer", "subscriptions", "applied_taxes", "fees",
}
FEE_FIELDS = {
    "lago_id", "external_subscription_id", "event_transaction_id", "amount_cents",
    "precise_amount_cents", "taxes_amount_cents", "total_amount_cents", "units",
    "events_count", "from_date", "to_date", "pay_in_advance", "item",
}
ITEM_FIELDS = {"type", "code", "name", "invoice_display_name", "filter_invoice_display_name",
               "grouped_by"}


def test_billing_cycle_finalizes_and_the_cli_reads_it(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "tax_codes": ["vat"]})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC))
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour = datetime(2025, 4, 1, 8, tzinfo=UTC)
    summary = billing_cycle(hour=hour)
    assert summary["invoices"]["finalized"] == 1
    assert mismatches(summary, BillingCycleSummary) == []  # the Prefect result's shape
    # $46.80 owed; the purchased credits are not paid yet (pending), the $25 granted pay
    artifact = _latest_billing_artifact()
    assert "## Invoices" in artifact and "| TF-001-002 | acme | 2025-04-01 | 2180 USD | 2500 |" \
        in artifact
    billing_cycle(hour=hour)  # rerun: nothing new, no second event
    with engine.connect() as conn:
        assert conn.execute(text("select bool_and(emitted_at is not null) from invoices"
                                 " where invoice_type = 'subscription'")).scalar_one()

    # TF-001-001 is the credit invoice of the wallet's purchased credits
    # (tests/tasks/invoicing/test_credit_invoices.py); the period's invoice comes next in the
    # sequence
    listed = runner.invoke(app, ["invoices", "list", "--status", "finalized", "--type",
                                 "subscription", "--json"])
    assert listed.exit_code == 0, listed.output
    [invoice] = json.loads(listed.stdout)["invoices"]
    assert INVOICE_FIELDS <= set(invoice)
    assert all(FEE_FIELDS <= set(f) and ITEM_FIELDS <= set(f["item"]) for f in invoice["fees"])
    assert [mismatches(f, InvoiceFee) for f in invoice["fees"]] == [[]] * len(invoice["fees"])
    assert mismatches(invoice, Invoice) == []
    assert [f["item"]["filter_invoice_display_name"] for f in invoice["fees"]] == [
        None, "mistral-small input tokens", "mistral-small output tokens"]

    shown = runner.invoke(app, ["invoices", "show", "TF-001-002", "--json"])
    assert json.loads(shown.stdout)["invoice"] == invoice
    table = runner.invoke(app, ["invoices", "show", "TF-001-002"])
    assert "Invoice TF-001-002" in table.stdout and "21.80 USD" in table.stdout
    missing = runner.invoke(app, ["invoices", "show", "nope"])
    assert missing.exit_code == 1 and "no invoice 'nope'" in missing.output

    html = tmp_path / "invoice.html"
    assert runner.invoke(app, ["invoices", "html", "TF-001-002", "-o", str(html)]).exit_code == 0
    assert "TF-001-002" in html.read_text() and "46.80 USD" in html.read_text()
    if pdf_available():
        pdf = tmp_path / "invoice.pdf"
        made = runner.invoke(app, ["invoices", "pdf", "TF-001-002", "-o", str(pdf)])
        assert made.exit_code == 0, made.output
        assert pdf.read_bytes().startswith(b"%PDF")
        # made by the invoice-pdfs flow, not the cycle: the PDF above was rendered on the fly
        assert summary["invoices"]["pdfs_pending"] == 2  # the period's and the credit invoice's


def test_pdfs_are_kept_as_made(engine: Engine, tmp_path: Path) -> None:
    if not pdf_available():
        pytest.skip("the pdf extra (WeasyPrint) is not installed")
    catalog(engine, tmp_path, plan={"amount_cents": 3100})
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    billing_cycle(hour=datetime(2025, 4, 1, 8, tzinfo=UTC))
    assert invoice_pdfs()["stored"] == 2  # the period's and the credit invoice's
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="kept as made"):
        with engine.begin() as conn:
            conn.execute(text("update invoice_pdfs set pdf = 'x'"))


def test_payment_status_and_terms(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100}, customer={"net_payment_term": 30},
            wallet=False)
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    unknown = runner.invoke(app, ["invoices", "mark-paid", "nope"])
    assert unknown.exit_code == 1 and "no invoice 'nope'" in unknown.output
    from tallyflow.tasks.invoicing import close_periods

    close_periods(engine, datetime(2025, 4, 1, 8, tzinfo=UTC))
    shown = json.loads(runner.invoke(app, ["invoices", "show", "TF-001-001", "--json"]).stdout)
    invoice = shown["invoice"]
    assert (invoice["net_payment_term"], invoice["payment_due_date"]) == (30, "2025-05-01")
    assert invoice["payment_overdue"] is True and invoice["total_due_amount_cents"] == 3410
    failed = runner.invoke(app, ["invoices", "mark-failed", "TF-001-001"])
    assert failed.exit_code == 0 and "payment failed" in failed.stdout
    paid = runner.invoke(app, ["invoices", "mark-paid", "TF-001-001"])
    assert paid.exit_code == 0 and "payment succeeded, due 0.00 USD" in paid.stdout
    again = json.loads(runner.invoke(app, ["invoices", "show", "TF-001-001", "--json"]).stdout)
    assert again["invoice"]["payment_overdue"] is False
    assert {k: v for k, v in again["invoice"].items()
            if k not in ("payment_status", "updated_at", "payment_overdue",
                         "total_due_amount_cents")} == {
        k: v for k, v in invoice.items()
        if k not in ("payment_status", "updated_at", "payment_overdue", "total_due_amount_cents")}
