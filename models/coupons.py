"""Coupons on an invoice, as Lago applies them. Pure: no I/O.

A coupon (``fixed_amount`` or ``percentage``) applied to a customer (an *applied coupon*)
is credited on the customer's subscription invoices when they are finalized, after the fees
and before the taxes (docs/architecture.md §15; lago-api
``app/services/invoices/calculate_fees_service.rb``):

- the invoice's coupons are taken in Lago's order: those limited to billable metrics first,
  then those limited to plans, then the others, each group oldest first
  (``Credits::AppliedCouponsService``); none when the invoice's fees sum to 0, and the walk
  stops once the invoice's sub-total excluding taxes is no longer positive;
- each coupon's credit (``AppliedCoupons::AmountService``): a percentage of its base, rounded
  half up to a whole minor unit, or its fixed amount (what remains of it for ``once``), never
  more than the base; the base is the invoice's sub-total excluding taxes, or for a limited
  coupon the part of its fees not yet covered by earlier coupons;
- the credit is spread over the coupon's fees pro rata (``Fee#compute_precise_credit_amount_cents``)
  into each fee's ``precise_coupons_amount_cents``, kept, as Lago's ``numeric(30,5)`` column
  keeps it, to five decimals, never above the fee's amount (``Credits::AppliedCouponService``);
- the taxes are then computed on ``amount_cents - precise_coupons_amount_cents`` of each fee
  (``Fees::ApplyTaxesService``, ``Invoices::ApplyTaxesService``);
- the applied coupon moves on: ``once`` ends after a percentage coupon's credit or when the
  fixed amount is used up, ``recurring`` counts ``frequency_duration_remaining`` down and ends
  at 0, ``forever`` never ends.

Tallyflow: Lago computes a percentage credit and the pro-rata shares through floats
(``fdiv``); here they are exact decimals, rounded where Lago's columns round them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Final, Literal

from tallyflow.models.invoicing import HUNDRED, ZERO, InvoiceAmounts, InvoiceFee, amounts_of
from tallyflow.models.rating.money import WIDE

CouponType = Literal["fixed_amount", "percentage"]
Frequency = Literal["once", "recurring", "forever"]

COUPON_TYPES: Final = ("fixed_amount", "percentage")
FREQUENCIES: Final = ("once", "recurring", "forever")
EXPIRATIONS: Final = ("no_expiration", "time_limit")

# Lago keeps a fee's precise_coupons_amount_cents in a numeric(30, 5) column.
COUPON_SHARE_EXPONENT: Final = Decimal("0.00001")


@dataclass(frozen=True)
class AppliedCoupon:
    """An active applied coupon as the close reads it (before this invoice).

    ``credited_cents``: what its earlier credits took (``once`` fixed: the amount left is
    ``amount_cents - credited_cents``). ``plan_codes``/``metric_codes``: the coupon's
    limitation (at most one of them is non-empty)."""

    id: int
    coupon_code: str
    coupon_type: CouponType
    frequency: Frequency
    amount_cents: int | None = None
    amount_currency: str | None = None
    percentage_rate: Decimal | None = None
    frequency_duration_remaining: int | None = None
    credited_cents: int = 0
    plan_codes: frozenset[str] = frozenset()
    metric_codes: frozenset[str] = frozenset()

    @property
    def remaining_amount(self) -> int:
        return (self.amount_cents or 0) - self.credited_cents


@dataclass(frozen=True)
class CouponCredit:
    """One coupon's credit on one invoice (Lago's ``credits`` row with an applied coupon),
    and what it leaves of the applied coupon."""

    applied_coupon_id: int
    coupon_code: str
    amount_cents: int
    precise_amount_cents: Decimal
    frequency_duration_remaining: int | None
    terminated: bool


@dataclass(frozen=True)
class CouponsResult:
    """The invoice after its coupons (fees with their shares, taxes recomputed), the credits
    written with it, and the applied coupons as the next invoice sees them."""

    amounts: InvoiceAmounts
    credits: tuple[CouponCredit, ...]
    coupons: tuple[AppliedCoupon, ...]


def coupon_order(coupons: Sequence[AppliedCoupon]) -> list[AppliedCoupon]:
    """Limited to metrics first, then to plans, then the rest; each oldest first (the
    caller passes them in creation order)."""
    return sorted(coupons, key=lambda c: (not c.metric_codes, not c.plan_codes))


def _targets(coupon: AppliedCoupon, fees: Sequence[InvoiceFee],
             plan_of: Mapping[str, str]) -> list[int]:
    """Positions of the fees a coupon covers: a metric limitation covers the charge fees
    of those metrics, a plan limitation every fee of those plans' subscriptions."""
    if coupon.metric_codes:
        return [i for i, f in enumerate(fees)
                if f.charge_id is not None and f.code in coupon.metric_codes]
    if coupon.plan_codes:
        return [i for i, f in enumerate(fees)
                if plan_of.get(f.external_subscription_id) in coupon.plan_codes]
    return list(range(len(fees)))


def coupon_amount(coupon: AppliedCoupon, base: Decimal) -> Decimal:
    """``AppliedCoupons::AmountService``: the credit of one coupon on ``base`` minor units."""
    if coupon.coupon_type == "percentage":
        rate = coupon.percentage_rate or ZERO
        discounted = WIDE.divide(WIDE.multiply(base, rate), HUNDRED)
        if discounted >= base:
            return base
        return discounted.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if coupon.frequency == "once":
        limit = Decimal(coupon.remaining_amount)
    else:
        limit = Decimal(coupon.amount_cents or 0)
    return base if limit > base else limit


def _share(fee: InvoiceFee, credit: Decimal, base: Decimal) -> Decimal:
    """The fee's part of a credit, added to what earlier coupons took, capped at its amount."""
    taken = fee.precise_coupons_amount_cents
    if base != 0:
        part = WIDE.divide(WIDE.multiply(credit, WIDE.subtract(Decimal(fee.amount_cents), taken)),
                           base)
        taken = WIDE.add(taken, part).quantize(COUPON_SHARE_EXPONENT, rounding=ROUND_HALF_UP)
    return min(taken, Decimal(fee.amount_cents))


def _moved_on(coupon: AppliedCoupon, credit: Decimal, cents: int) -> tuple[AppliedCoupon, bool]:
    """The applied coupon after a credit, and whether it ends (``should_terminate``)."""
    remaining = coupon.frequency_duration_remaining
    if coupon.frequency == "recurring":
        remaining = max((remaining or 0) - 1, 0)
    if coupon.frequency == "forever":
        ends = False
    elif coupon.frequency == "once":
        ends = coupon.coupon_type == "percentage" or credit >= coupon.remaining_amount
    else:
        ends = (remaining or 0) <= 0
    after = replace(coupon, frequency_duration_remaining=remaining,
                    credited_cents=coupon.credited_cents + cents)
    return after, ends


def apply_coupons(
    amounts: InvoiceAmounts,
    coupons: Sequence[AppliedCoupon],
    plan_of: Mapping[str, str],
) -> CouponsResult:
    """The coupons' step of an invoice being finalized: between its fees and its taxes.

    ``coupons``: the customer's active applied coupons in creation order; ``plan_of``:
    external subscription id -> plan code (for plan limitations). Returns the invoice with
    ``coupons_amount_cents`` and each fee's share, taxes recomputed on the fees after their
    shares; the coupons not applied come back unchanged, the ended ones are left out."""
    fees = list(amounts.fees)
    if amounts.fees_amount_cents == 0 or not coupons:
        return CouponsResult(amounts, (), tuple(coupons))
    # after what progressive invoices billed (Lago credits them before the coupons, §20)
    sub_total = amounts.fees_amount_cents - amounts.progressive_billing_credit_amount_cents
    credits: list[CouponCredit] = []
    kept: dict[int, AppliedCoupon] = {c.id: c for c in coupons}
    for coupon in coupon_order(coupons):
        if sub_total <= 0:
            break
        if coupon.coupon_type == "fixed_amount" and coupon.amount_currency != amounts.currency:
            continue
        targets = _targets(coupon, fees, plan_of)
        if not targets:
            continue
        if coupon.metric_codes or coupon.plan_codes:
            base = sum((WIDE.subtract(Decimal(fees[i].amount_cents),
                                      fees[i].precise_coupons_amount_cents) for i in targets),
                       ZERO)
        else:
            base = Decimal(sub_total)
        credit = coupon_amount(coupon, base)
        for i in targets:
            fees[i] = replace(fees[i], precise_coupons_amount_cents=_share(fees[i], credit, base))
        # Lago's credits.amount_cents is a bigint: the credit is stored as its whole part
        cents = int(credit.to_integral_value(rounding=ROUND_DOWN))
        after, ends = _moved_on(coupon, credit, cents)
        credits.append(CouponCredit(coupon.id, coupon.coupon_code, cents, credit,
                                    after.frequency_duration_remaining, ends))
        if ends:
            del kept[coupon.id]
        else:
            kept[coupon.id] = after
        sub_total -= cents
    coupons_cents = sum(c.amount_cents for c in credits)
    taxed = amounts_of(amounts.currency, fees)
    discounted = replace(amounts, fees=taxed.fees, applied_taxes=taxed.applied_taxes,
                         taxes_amount_cents=taxed.taxes_amount_cents,
                         coupons_amount_cents=coupons_cents)
    return CouponsResult(discounted, tuple(credits), tuple(kept.values()))
