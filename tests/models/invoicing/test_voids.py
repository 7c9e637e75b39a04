"""The pure rules of invoice voids (models/invoicing/voids.py, docs/architecture.md §13):
which invoices may be voided or regenerated, the corrections that give the wallets back what
they paid, the regenerated invoice's totals. Lago's specs are cited per case:
``spec/services/invoices/void_service_spec.rb`` and
``spec/services/invoices/regenerate_from_voided_service_spec.rb``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tallyflow.models.invoicing.voids import (
    InvoiceState,
    Paid,
    VoidRefusal,
    regenerate_refusal,
    regenerated_totals,
    restorations,
    void_refusal,
)

VOID_SPEC = "void_service_spec.rb"
REGEN_SPEC = "regenerate_from_voided_service_spec.rb"


@pytest.mark.parametrize(("state", "refusal"), [
    pytest.param(InvoiceState("draft", "subscription"), VoidRefusal.NOT_VOIDABLE,
                 id=f"{VOID_SPEC}: when invoice is draft"),
    pytest.param(InvoiceState("voided", "subscription"), VoidRefusal.NOT_VOIDABLE,
                 id=f"{VOID_SPEC}: when the invoice is voided"),
    pytest.param(InvoiceState("finalized", "subscription"), None,
                 id=f"{VOID_SPEC}: when the invoice is finalized (any payment status)"),
    pytest.param(InvoiceState("finalized", "credit"), VoidRefusal.TYPE_NOT_SUPPORTED,
                 id="tallyflow: a credit invoice is not voided yet"),
    pytest.param(InvoiceState("finalized", "subscription", coupons_amount_cents=Decimal(5)),
                 VoidRefusal.HAS_COUPONS, id="tallyflow: coupons are not given back yet"),
    pytest.param(InvoiceState("finalized", "subscription",
                              credit_notes_amount_cents=Decimal(5)),
                 VoidRefusal.HAS_CREDIT_NOTES, id="tallyflow: credit notes on it"),
    pytest.param(InvoiceState("finalized", "subscription", credit_notes_issued=1),
                 VoidRefusal.HAS_CREDIT_NOTES,
                 id="tallyflow: a credit note issued on it (its credit would outlive the void)"),
    pytest.param(InvoiceState("finalized", "progressive_billing"),
                 VoidRefusal.TYPE_NOT_SUPPORTED, id="tallyflow: a progressive invoice"),
    pytest.param(InvoiceState("finalized", "subscription",
                              progressive_billing_credit_amount_cents=Decimal(5)),
                 VoidRefusal.HAS_PROGRESSIVE_CREDIT,
                 id="tallyflow: it deducted progressive invoices (§20)"),
])
def test_which_invoices_may_be_voided(state: InvoiceState, refusal: VoidRefusal | None) -> None:
    assert void_refusal(state) == refusal


@pytest.mark.parametrize(("state", "refusal"), [
    pytest.param(InvoiceState("voided", "subscription"), None, id=f"{REGEN_SPEC}: #call"),
    pytest.param(InvoiceState("finalized", "subscription"), VoidRefusal.NOT_VOIDED,
                 id="only a voided invoice"),
    pytest.param(InvoiceState("voided", "subscription", successor_id=7),
                 VoidRefusal.ALREADY_REGENERATED, id="once"),
])
def test_which_invoices_may_be_regenerated(
    state: InvoiceState, refusal: VoidRefusal | None
) -> None:
    assert regenerate_refusal(state) == refusal


def test_restorations_reverse_each_payment_exactly() -> None:
    start = datetime(2025, 3, 1, 5, tzinfo=UTC)
    paid = [Paid(1, Decimal("800"), Decimal("8.00"), Decimal("8.00"), 3, start),
            Paid(1, Decimal("3880"), Decimal("38.80"), Decimal("0")),
            Paid(2, Decimal("-15"), Decimal("-0.15"), Decimal("0")),  # an excess refunded
            Paid(2, Decimal("0"), Decimal("0"), Decimal("0"), 3, start)]
    got = restorations(9, paid)
    assert [(r.wallet_id, r.direction, r.source, r.amount_cents, r.credits, r.granted_credits)
            for r in got] == [
        (1, "inbound", "usage", Decimal("800"), Decimal("8.00"), Decimal("8.00")),
        (1, "inbound", "invoice", Decimal("3880"), Decimal("38.80"), Decimal("0")),
        (2, "outbound", "invoice", Decimal("15"), Decimal("0.15"), Decimal("0"))]
    assert got[0].key == "void:9:usage:3:2025-03-01T05:00:00.000000Z:1"
    assert got[0].period_start == start and got[0].subscription_id == 3
    assert {r.key for r in got} == {r.key for r in restorations(9, paid)}  # a rerun's keys


@pytest.mark.parametrize(("fees", "taxes", "prepaid", "expected"), [
    ("3900", "780", "4680", ("4680", "0")),
    ("3900", "780", "5000", ("4680", "0")),  # never more than is owed
    ("3900", "780", "1000", ("1000", "3680")),
    ("0", "0", "0", ("0", "0")),
])
def test_regenerated_totals(fees: str, taxes: str, prepaid: str,
                            expected: tuple[str, str]) -> None:
    assert regenerated_totals(Decimal(fees), Decimal(taxes), Decimal(prepaid)) == (
        Decimal(expected[0]), Decimal(expected[1]))
