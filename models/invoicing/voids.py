"""Voiding and regenerating invoices: which may be, and what the wallets get back (pure).

Lago's rules (``app/services/invoices/void_service.rb``, ``app/models/invoice.rb``: the
``void`` event goes from ``finalized`` to ``voided`` only, whatever the payment status;
``regenerate_from_voided_service.rb``) and Tallyflow's choices around them are in
docs/architecture.md §13. The I/O is ``tallyflow.tasks.corrections.invoice_voids``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from tallyflow.models.lago.times import iso_key

ZERO = Decimal(0)


class VoidRefusal(StrEnum):
    """Why an invoice is not voided or regenerated (Lago's codes where Lago has one)."""

    NOT_FOUND = "invoice_not_found"
    # Lago: a draft or an already voided invoice (MethodNotAllowedFailure, ``not_voidable``)
    NOT_VOIDABLE = "not_voidable"
    # Tallyflow: voids only subscription invoices so far (credit and pay-in-advance invoices
    # move wallet credits in ways a void would have to undo too)
    TYPE_NOT_SUPPORTED = "invoice_type_not_supported"
    # Tallyflow: coupons and credit notes on the invoice would have to be given back (Lago
    # re-credits coupons); refused until that is carried out
    HAS_COUPONS = "invoice_has_coupons"
    HAS_CREDIT_NOTES = "invoice_has_credit_notes"
    # Tallyflow: a period invoice that deducted progressive invoices (§20): its regeneration
    # would have to deduct them again; refused until that is carried out
    HAS_PROGRESSIVE_CREDIT = "invoice_has_progressive_billing_credit"
    # regenerate: only a voided invoice, and only once (``invoices.voided_invoice_id``)
    NOT_VOIDED = "not_voided"
    ALREADY_REGENERATED = "already_regenerated"


@dataclass(frozen=True)
class InvoiceState:
    """What the rules read of an invoice."""

    status: str
    invoice_type: str
    coupons_amount_cents: Decimal = ZERO
    credit_notes_amount_cents: Decimal = ZERO
    successor_id: int | None = None
    # credit notes issued on it and not voided (their credit would survive the void)
    credit_notes_issued: int = 0
    progressive_billing_credit_amount_cents: Decimal = ZERO


def void_refusal(invoice: InvoiceState) -> VoidRefusal | None:
    """None when the invoice may be voided. Lago voids a finalized invoice whatever its
    payment status (pending, failed or succeeded: ``void_service_spec.rb``)."""
    if invoice.status != "finalized":
        return VoidRefusal.NOT_VOIDABLE
    if invoice.invoice_type != "subscription":
        return VoidRefusal.TYPE_NOT_SUPPORTED
    if invoice.coupons_amount_cents:
        return VoidRefusal.HAS_COUPONS
    if invoice.credit_notes_amount_cents or invoice.credit_notes_issued:
        return VoidRefusal.HAS_CREDIT_NOTES
    if invoice.progressive_billing_credit_amount_cents:
        return VoidRefusal.HAS_PROGRESSIVE_CREDIT
    return None


def regenerate_refusal(invoice: InvoiceState) -> VoidRefusal | None:
    """None when a successor may be made: the invoice is voided and has none yet."""
    if invoice.status != "voided":
        return VoidRefusal.NOT_VOIDED
    if invoice.successor_id is not None:
        return VoidRefusal.ALREADY_REGENERATED
    return None


@dataclass(frozen=True)
class Paid:
    """What one wallet paid toward a voided invoice, net, through one kind of posting: the
    hourly usage deductions of one period (``subscription_id``, ``period_start``) or the
    invoice's own posting at finalization (both None). Positive: taken from the wallet."""

    wallet_id: int
    amount_cents: Decimal
    credits: Decimal
    granted_credits: Decimal
    subscription_id: int | None = None
    period_start: datetime | None = None


@dataclass(frozen=True)
class Restore:
    """One correction posting: the reverse of a ``Paid``, with its idempotency key."""

    wallet_id: int
    direction: str
    source: str
    amount_cents: Decimal
    credits: Decimal
    granted_credits: Decimal
    key: str
    subscription_id: int | None = None
    period_start: datetime | None = None


def restorations(invoice_id: int, paid: Iterable[Paid]) -> list[Restore]:
    """The ledger corrections that give the wallets back what they paid toward a voided
    invoice: each net payment reversed, exactly (same cents, credits and granted part), under a
    key naming the invoice and what it reverses, so a rerun posts nothing twice (§3, invariant
    4). Usage deductions are reversed as ``usage`` postings of the same period, so the period's
    ledger nets to what is left (a regenerated invoice pays it anew); the finalization posting
    as an ``invoice`` one. A net of zero needs nothing."""
    out: list[Restore] = []
    for p in paid:
        if p.amount_cents == 0 and p.credits == 0:
            continue
        back = p.amount_cents > 0 or (p.amount_cents == 0 and p.credits > 0)
        sign = 1 if back else -1
        if p.subscription_id is not None and p.period_start is not None:
            what = f"usage:{p.subscription_id}:{iso_key(p.period_start)}"
            source = "usage"
        else:
            what, source = "invoice", "invoice"
        out.append(Restore(
            p.wallet_id, "inbound" if back else "outbound", source, sign * p.amount_cents,
            sign * p.credits, sign * p.granted_credits,
            f"void:{invoice_id}:{what}:{p.wallet_id}", p.subscription_id, p.period_start,
        ))
    return out


def regenerated_totals(
    fees_cents: Decimal, taxes_cents: Decimal, prepaid_cents: Decimal
) -> tuple[Decimal, Decimal]:
    """(prepaid credits, total) of a regenerated invoice: its fees and taxes are the voided
    one's, the wallets pay what they can as at finalization, never more than is owed."""
    owed = fees_cents + taxes_cents
    prepaid = max(ZERO, min(prepaid_cents, owed))
    return prepaid, owed - prepaid
