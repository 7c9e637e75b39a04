"""Lago's own Python client on the correction endpoints (issue 27): a coupon and its
application, an add-on and a one-off invoice with it, a credit note issued, estimated, found and
voided, an invoice voided. Every answer goes through the SDK's own response models, so a shape
mismatch raises in the SDK (lago-api spec/requests/api/v1/coupons_controller_spec.rb,
applied_coupons_controller_spec.rb, add_ons_controller_spec.rb, invoices_controller_spec.rb
"POST /api/v1/invoices" and "POST /api/v1/invoices/:id/void",
credit_notes_controller_spec.rb)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from lago_python_client.client import Client
from lago_python_client.models import AddOn, AppliedCoupon, Coupon
from lago_python_client.models.credit_note import CreditNote, CreditNoteEstimate, Item, Items
from lago_python_client.models.invoice import InvoiceFee, InvoiceFeesList, OneOffInvoice
from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import close_periods
from tests.tallyflow.api.conftest import LiveApi, hold_watermark, release_watermark
from tests.tasks.rating_fixtures import apply_mistral

AT = datetime(2025, 5, 10, tzinfo=UTC)


def _one_off(client: Client, units: float) -> tuple[str, str, int]:
    """A one-off invoice of the ``setup`` add-on; its lago_id, fee lago_id and total."""
    fee = InvoiceFee(add_on_code="setup", units=units, unit_amount_cents=2500)
    invoice = client.invoices.create(OneOffInvoice(external_customer_id="acme", currency="USD",
                                                   fees=InvoiceFeesList(__root__=[fee])))
    assert invoice is not None and invoice.fees is not None
    (line,) = invoice.fees.__root__
    # Lago serializes a fee's units as a decimal string ("2.0"), as the SDK's model carries it
    assert line.amount_cents == int(2500 * units) and Decimal(str(line.units)) == Decimal(units)
    assert invoice.fees_amount_cents == int(2500 * units)
    return str(invoice.lago_id), str(line.lago_id), int(invoice.total_amount_cents or 0)


def test_corrections_with_lagos_client(
    live_api: Callable[..., LiveApi], engine: Engine, api_key: str, tmp_path: Path
) -> None:
    apply_mistral(engine, tmp_path)
    client = Client(api_key=api_key, api_url=f"{live_api().url}/")
    # coupons_controller_spec.rb "POST /api/v1/coupons"; applied_coupons_controller_spec.rb
    coupon = client.coupons.create(Coupon(
        name="Welcome", code="welcome", coupon_type="fixed_amount", amount_cents=1000,
        amount_currency="USD", frequency="once", expiration="no_expiration"))
    assert coupon is not None and coupon.code == "welcome" and coupon.amount_cents == 1000
    applied = client.applied_coupons.create(AppliedCoupon(
        external_customer_id="acme", coupon_code="welcome"))
    assert applied is not None and applied.coupon_code == "welcome"
    assert applied.external_customer_id == "acme" and applied.status == "active"
    # add_ons_controller_spec.rb "POST /api/v1/add_ons"
    add_on = client.add_ons.create(AddOn(name="Setup", code="setup", amount_cents=2500,
                                         amount_currency="USD"))
    assert add_on is not None and add_on.code == "setup" and add_on.amount_cents == 2500
    # invoices_controller_spec.rb "POST /api/v1/invoices" (one-off)
    invoice_id, fee_id, total = _one_off(client, 2)
    assert total == 5000
    # credit_notes_controller_spec.rb: POST estimate, POST, GET, PUT void
    estimate = client.credit_notes.estimate(CreditNoteEstimate(
        invoice_id=invoice_id, items=Items(__root__=[Item(fee_id=fee_id, amount_cents=1000)])))
    assert estimate.lago_invoice_id == invoice_id
    assert estimate.sub_total_excluding_taxes_amount_cents == 1000
    assert estimate.max_offsettable_amount_cents == 1000  # the invoice still owes 5000
    note = client.credit_notes.create(CreditNote(
        invoice_id=invoice_id, reason="other", credit_amount_cents=1000, refund_amount_cents=0,
        items=Items(__root__=[Item(fee_id=fee_id, amount_cents=1000)])))
    assert note is not None and note.lago_invoice_id == invoice_id
    assert note.credit_amount_cents == 1000 and note.credit_status == "available"
    found = client.credit_notes.find(str(note.lago_id))
    assert found is not None and found.lago_id == note.lago_id and found.number == note.number
    voided_note = client.credit_notes.void(str(note.lago_id))
    assert voided_note.credit_status == "voided" and voided_note.balance_amount_cents == 0
    # invoices_controller_spec.rb "POST /api/v1/invoices/:id/void"
    # (Tallyflow voids subscription invoices; a one-off is refused: invoice_type_not_supported)
    hold_watermark(engine, datetime(2025, 1, 1, tzinfo=UTC))  # the API's mark moves it else
    close_periods(engine, AT, customers=["acme"])
    release_watermark(engine)
    with engine.begin() as conn:  # the watermark passes the period end: finalizable
        conn.execute(text("insert into ingest_runs (source, status, started_at, finished_at)"
                          " values ('test', 'completed', :m, :m)"), {"m": AT})
        first = conn.execute(text("select lago_id from invoices where invoice_type ="
                                  " 'subscription' order by issuing_date limit 1")).scalar_one()
    finalized = client.invoices.finalize(str(first))
    assert finalized is not None and finalized.status == "finalized"
    voided = client.invoices.void(str(first))
    assert voided.lago_id == str(first) and voided.status == "voided"
