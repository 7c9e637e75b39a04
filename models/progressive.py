"""Progressive billing and lifetime usage, as Lago computes them. Pure: no I/O.

Lago's sources (lago-api): ``app/models/lifetime_usage.rb`` (the total),
``app/services/lifetime_usages/usage_thresholds/check_service.rb`` (which thresholds a
lifetime usage passes), ``app/services/subscriptions/progressive_billed_amount.rb`` and
``app/services/credits/progressive_billing_service.rb`` (what the period-end invoice deducts),
``app/services/invoices/progressive_billing_service.rb`` (the invoice: the period's charge
fees so far, less what the period's last progressive invoice billed). Reproduced to the cent
from ``spec/scenarios/invoices/progressive_billing_spec.rb`` in
``tests/models/test_progressive.py``. docs/architecture.md §20.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from tallyflow.models.invoicing import InvoiceAmounts, InvoiceFee, amounts_of


@dataclass(frozen=True)
class Threshold:
    """One usage threshold (plan's or subscription's), ``amount_cents`` > 0."""

    amount_cents: int
    recurring: bool = False
    threshold_display_name: str | None = None

    def as_lago(self) -> dict[str, Any]:
        return {"amount_cents": self.amount_cents, "recurring": self.recurring,
                "threshold_display_name": self.threshold_display_name}


def thresholds_of(document: Mapping[str, Any] | None) -> tuple[Threshold, ...]:
    """The thresholds of a stored plan or subscription document (``usage_thresholds``)."""
    usage_thresholds = (document or {}).get("usage_thresholds") or ()
    return tuple(Threshold(int(t["amount_cents"]), bool(t.get("recurring", False)),
                           t.get("threshold_display_name")) for t in usage_thresholds)


def applicable_thresholds(subscription_document: Mapping[str, Any] | None,
                          plan_document: Mapping[str, Any] | None) -> tuple[Threshold, ...]:
    """The subscription's own thresholds when it has any (Lago's override), else the plan's
    (``Subscription#applicable_usage_thresholds``)."""
    return thresholds_of(subscription_document) or thresholds_of(plan_document)


@dataclass(frozen=True)
class LifetimeUsage:
    """Lago's ``LifetimeUsage``: usage before Tallyflow (``historical``, set by a person),
    usage on the subscription's period invoices (``invoiced``: their charge fees), and the
    current period's usage so far (``current``: charges, before taxes)."""

    historical_usage_amount_cents: int
    invoiced_usage_amount_cents: int
    current_usage_amount_cents: int

    @property
    def total_amount_cents(self) -> int:
        return (self.historical_usage_amount_cents + self.invoiced_usage_amount_cents
                + self.current_usage_amount_cents)


def thresholds_passed(thresholds: Sequence[Threshold], lifetime: LifetimeUsage,
                      progressive_billed_cents: int) -> list[Threshold]:
    """The thresholds the lifetime usage has passed since the last invoice
    (``LifetimeUsages::UsageThresholds::CheckService``): ``progressive_billed_cents`` is what
    the period's last progressive invoice billed (its fees), already counted as invoiced.

    Fixed thresholds above what was invoiced and at or below the total pass; the recurring
    one passes when the total exceeds the largest fixed one by its amount, or, past every
    fixed one, when the usage not yet billed plus the remainder of the invoiced usage over
    the step reaches a step. At most one crossing of the recurring threshold per invoice
    (Lago's), however many steps it spans."""
    passed: list[Threshold] = []
    if not thresholds:
        return passed
    fixed = sorted((t for t in thresholds if not t.recurring), key=lambda t: t.amount_cents)
    recurring = next((t for t in thresholds if t.recurring), None)
    actual_current = lifetime.current_usage_amount_cents - progressive_billed_cents
    if actual_current < 0:
        return passed
    invoiced = (lifetime.historical_usage_amount_cents + lifetime.invoiced_usage_amount_cents
                + progressive_billed_cents)
    largest = fixed[-1].amount_cents if fixed else 0
    total = invoiced + actual_current
    if invoiced < largest:
        passed += [t for t in fixed if invoiced < t.amount_cents <= total]
        if recurring is not None and total - largest >= recurring.amount_cents:
            passed.append(recurring)
    elif recurring is not None:
        if actual_current + invoiced % recurring.amount_cents >= recurring.amount_cents:
            passed.append(recurring)
    return passed


def charge_fees(fees: Sequence[InvoiceFee]) -> list[InvoiceFee]:
    """A progressive invoice's fees: the charge fees of the period so far, without true-ups
    (Lago's ``ProgressiveBillingService`` skips ``init_true_up_fee``) or the plan's fee."""
    return [f for f in fees if f.item_type == "charge" and not f.true_up]


FeeKey = tuple[str, int | None, str | None, tuple[tuple[str, str | None], ...]]


def fee_key(fee: InvoiceFee) -> FeeKey:
    """How a period-end fee finds the progressive fee of the same bucket (Lago matches
    ``charge_id``, ``charge_filter_id``, ``grouped_by``; here within the subscription, as
    one invoice may close several)."""
    return (fee.external_subscription_id, fee.charge_id, fee.filter_invoice_display_name,
            tuple(sorted(fee.grouped_by.items())))


def progressive_invoice(currency: str, fees: Sequence[InvoiceFee],
                        billed: Mapping[FeeKey, int], to_credit: int) -> InvoiceAmounts:
    """A progressive invoice's amounts: its charge fees (the period's usage so far) less
    what the period's last progressive invoice billed, credited as the period-end invoice
    credits it (:func:`progressive_credit`)."""
    return progressive_credit(amounts_of(currency, charge_fees(fees)), billed, to_credit)


def progressive_credit(amounts: InvoiceAmounts, billed: Mapping[FeeKey, int],
                       to_credit: int) -> InvoiceAmounts:
    """Deduct what progressive invoices of the period already billed
    (``Credits::ProgressiveBillingService``): ``to_credit`` is the last progressive invoice's
    fees (each progressive invoice carries the period's whole usage so far), capped at this
    invoice's charge fees of the same charges; each fee takes the billed amount of its
    bucket into ``precise_coupons_amount_cents`` (capped at its amount) so the taxes apply
    to the rest. ``progressive_billing_credit_amount_cents`` is set (before taxes)."""
    if to_credit <= 0 or not billed:
        return amounts
    charges = {(key[0], key[1]) for key in billed}
    total = sum(f.amount_cents for f in amounts.fees
                if f.item_type == "charge" and (f.external_subscription_id, f.charge_id)
                in charges)
    credit = min(to_credit, total)
    if credit <= 0:
        return amounts
    fees: list[InvoiceFee] = []
    for fee in amounts.fees:
        taken = billed.get(fee_key(fee)) if fee.item_type == "charge" and not fee.true_up \
            else None
        if taken:
            share = min(fee.precise_coupons_amount_cents + taken, Decimal(fee.amount_cents))
            fee = replace(fee, precise_coupons_amount_cents=share)
        fees.append(fee)
    taxed = amounts_of(amounts.currency, fees)
    return replace(amounts, fees=taxed.fees, applied_taxes=taxed.applied_taxes,
                   taxes_amount_cents=taxed.taxes_amount_cents,
                   progressive_billing_credit_amount_cents=credit)


def prepaid_shown(owed_cents: int, usage_deducted_cents: int, shown_before_cents: int) -> int:
    """What a progressive invoice shows as prepaid: the hourly wallet deductions for the
    period's usage not yet shown on an earlier progressive invoice of the period, up to what
    the invoice owes. No money moves for it: the wallets paid it hourly (Tallyflow's decision,
    docs/architecture.md §20)."""
    return max(0, min(owed_cents, usage_deducted_cents - shown_before_cents))


def completion(thresholds: Sequence[Threshold], total_cents: int) -> list[dict[str, Any]]:
    """Lago's ``UsageThresholdsCompletionService`` (``amount_cents``, ``completion_ratio``,
    whether reached): the fixed thresholds passed (1.0), the next one's ratio from the last
    passed, the others 0.0; past every fixed one, each recurring step reached and the next
    one's ratio. ``reached`` stands for Lago's ``reached_at`` (filled in by the caller)."""
    fixed = sorted((t for t in thresholds if not t.recurring), key=lambda t: t.amount_cents)
    recurring = next((t for t in thresholds if t.recurring), None)
    passed = [t for t in fixed if t.amount_cents <= total_cents]
    waiting = [t for t in fixed if t.amount_cents > total_cents]
    out = [{"amount_cents": t.amount_cents, "completion_ratio": 1.0, "reached": True}
           for t in passed]
    last = passed[-1].amount_cents if passed else 0
    if waiting:
        first = waiting[0]
        out.append({"amount_cents": first.amount_cents, "reached": False,
                    "completion_ratio": (total_cents - last) / (first.amount_cents - last)})
        out += [{"amount_cents": t.amount_cents, "completion_ratio": 0.0, "reached": False}
                for t in waiting[1:]]
        if recurring is not None:
            out.append({"amount_cents": fixed[-1].amount_cents + recurring.amount_cents,
                        "completion_ratio": 0.0, "reached": False})
    elif recurring is not None:
        step = recurring.amount_cents
        times = (total_cents - last) // step
        out += [{"amount_cents": last + (i + 1) * step, "completion_ratio": 1.0,
                 "reached": True} for i in range(times)]
        rest = (total_cents - last) % step
        out.append({"amount_cents": last + (times + 1) * step, "reached": False,
                    "completion_ratio": rest / step})
    return out
