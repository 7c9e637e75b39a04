"""Period close: the fees and amounts of one invoice, as Lago computes them. Pure: no I/O.

A closed billing period becomes one invoice per customer and billing day. Its fees are:
- the subscription fee in arrears (``plan.amount_cents``), by Lago's single-day price for a
  partial first period and zero for the days of a trial (``Fees::SubscriptionService``); or,
  for a plan paid in advance (``plan.pay_in_advance``), the fee of the coming period, billed
  when that period starts (:func:`advance_fee`), while its charges stay in arrears;
- one charge fee per charge, per charge filter and per pricing group, taken from the rated
  usage of the period; fees whose units, amount and events count are all zero are left out;
- a true-up per charge whose fees stay below its prorated ``min_amount_cents``
  (``Fees::CreateTrueUpService``);
- a ``commitment`` fee when the subscription's fees stay below the plan's prorated
  ``minimum_commitment``;
- taxes: the charge's tax codes, else the plan's, else the customer's, else its billing
  entity's, else the organization's defaults; per fee kept precise, the invoice's total rounded once
  (``Invoices::ComputeAmountsFromFees``).

Every amount is in minor units (``*_amount_cents``) and rounded with the one rule of
:mod:`tallyflow.models.rating.money` (ROUND_HALF_UP to a whole minor unit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

from tallyflow.models.rating.money import WIDE, round_minor
from tallyflow.models.rating.periods import ONE_MICROSECOND

ZERO: Final = Decimal(0)
HUNDRED: Final = Decimal(100)

# "add_on": a fee of a one-off invoice (models/invoicing/one_off.py)
ItemType = Literal["subscription", "charge", "commitment", "add_on"]


@dataclass(frozen=True)
class Tax:
    """A Lago tax object: ``rate`` is a percentage (20 = 20 %)."""

    code: str
    name: str
    rate: Decimal
    applied_to_organization: bool = False


@dataclass(frozen=True)
class UsageLine:
    """One priced bucket of a charge (the charge itself, one filter, or one group)."""

    units: Decimal
    events_count: int
    amount_cents: int
    precise_amount_cents: Decimal
    filter_invoice_display_name: str | None = None
    grouped_by: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def is_zero(self) -> bool:
        return self.units == 0 and self.amount_cents == 0 and self.events_count == 0


@dataclass(frozen=True)
class ChargeUsage:
    """A charge of the plan and its rated usage over the closed period."""

    charge_id: int
    metric_code: str
    metric_name: str
    invoice_display_name: str | None
    min_amount_cents: Decimal
    tax_codes: tuple[str, ...]
    lines: tuple[UsageLine, ...]


@dataclass(frozen=True)
class PeriodInput:
    """One subscription's closed period.

    ``start_date``/``end_date`` are the nominal local days of the whole period; ``from_date``/
    ``to_date`` the local days the subscription covered (a first period starts later).
    ``trial_end`` is ``subscription_at + trial_period days`` (None without a trial) and
    ``trial_end_date`` its local day. ``pay_in_advance``: the plan's fee was billed when the
    period started (:func:`advance_fee`), so the close bills its charges only;
    ``period_end`` is the nominal end instant (None: ``to_datetime``), the end the advance fee
    was billed to even when a termination later cut the period short.
    """

    external_subscription_id: str
    plan_code: str
    plan_name: str
    plan_invoice_display_name: str | None
    amount_cents: Decimal
    trial_end: datetime | None
    minimum_commitment_cents: Decimal | None
    plan_tax_codes: tuple[str, ...]
    start_date: date
    end_date: date
    from_date: date
    to_date: date
    from_datetime: datetime
    to_datetime: datetime
    trial_end_date: date | None = None
    commitment_invoice_display_name: str | None = None
    charges: tuple[ChargeUsage, ...] = ()
    pay_in_advance: bool = False
    period_end: datetime | None = None
    subscription_name: str | None = None

    @property
    def subscription_invoice_name(self) -> str | None:
        """The subscription fee's display name: the subscription's ``name``, else the plan's
        (Lago's ``Subscription#invoice_name``: ``name.presence || plan.invoice_name``; the
        plan's ``name`` fills in when the document is written)."""
        return self.subscription_name or self.plan_invoice_display_name

    @property
    def period_days(self) -> int:
        return (self.end_date - self.start_date).days + 1

    @property
    def billed_days(self) -> int:
        return (self.to_date - self.from_date).days + 1


@dataclass(frozen=True)
class InvoiceFee:
    item_type: ItemType
    external_subscription_id: str
    code: str
    name: str
    invoice_display_name: str | None
    filter_invoice_display_name: str | None
    grouped_by: Mapping[str, str | None]
    units: Decimal
    events_count: int
    amount_cents: int
    precise_amount_cents: Decimal
    from_datetime: datetime
    to_datetime: datetime
    taxes: tuple[Tax, ...] = ()
    charge_id: int | None = None
    true_up: bool = False
    # an add-on fee's add-on, description and unit price (``Fees::OneOffService``)
    add_on_id: int | None = None
    description: str | None = None
    unit_amount_cents: Decimal | None = None
    # What coupons took of it (models/coupons.py), kept to five decimals as Lago keeps it.
    precise_coupons_amount_cents: Decimal = ZERO

    @property
    def taxes_rate(self) -> Decimal:
        return sum((t.rate for t in self.taxes), ZERO)

    @property
    def sub_total_excluding_taxes_amount_cents(self) -> Decimal:
        """What taxes apply to: the amount after coupons (Lago's ``Fee`` of that name)."""
        return WIDE.subtract(Decimal(self.amount_cents), self.precise_coupons_amount_cents)

    @property
    def taxes_precise_amount_cents(self) -> Decimal:
        return WIDE.divide(WIDE.multiply(self.sub_total_excluding_taxes_amount_cents,
                                         self.taxes_rate), HUNDRED)

    @property
    def taxes_amount_cents(self) -> int:
        return int(round_minor(self.taxes_precise_amount_cents))

    @property
    def total_amount_cents(self) -> int:
        return self.amount_cents + self.taxes_amount_cents


@dataclass(frozen=True)
class AppliedTax:
    code: str
    name: str
    rate: Decimal
    fees_amount_cents: int
    amount_cents: int


@dataclass(frozen=True)
class InvoiceAmounts:
    """Lago's invoice amounts; ``prepaid_credit_amount_cents`` is set by :meth:`with_prepaid`."""

    currency: str
    fees: tuple[InvoiceFee, ...]
    applied_taxes: tuple[AppliedTax, ...]
    fees_amount_cents: int
    taxes_amount_cents: int
    coupons_amount_cents: int = 0
    credit_notes_amount_cents: int = 0
    prepaid_credit_amount_cents: int = 0
    # what progressive invoices of its periods already billed (models/progressive.py, §20)
    progressive_billing_credit_amount_cents: int = 0

    @property
    def sub_total_excluding_taxes_amount_cents(self) -> int:
        return (self.fees_amount_cents - self.progressive_billing_credit_amount_cents
                - self.coupons_amount_cents)

    @property
    def sub_total_including_taxes_amount_cents(self) -> int:
        return self.sub_total_excluding_taxes_amount_cents + self.taxes_amount_cents

    @property
    def total_amount_cents(self) -> int:
        return (self.sub_total_including_taxes_amount_cents - self.credit_notes_amount_cents
                - self.prepaid_credit_amount_cents)

    def with_prepaid(self, cents: int) -> InvoiceAmounts:
        """Prepaid credits never exceed what is owed (Lago applies up to the total)."""
        owed = self.sub_total_including_taxes_amount_cents - self.credit_notes_amount_cents
        return replace(self, prepaid_credit_amount_cents=max(0, min(int(cents), owed)))


class TaxError(ValueError):
    """A tax code that names no tax object (the catalog checks references; this is the guard)."""


# --------------------------------------------------------------------------------------------
# Subscription fee
# --------------------------------------------------------------------------------------------


def subscription_fee_cents(period: PeriodInput) -> Decimal:
    """Unrounded subscription fee in arrears (minor units), as ``Fees::SubscriptionService``.

    A full period bills ``amount_cents``; a first partial period, or a last one a termination
    cut short (models/lifecycle.py), bills its days at the single-day price
    ``amount_cents / days of the whole period``. A trial that covers the
    period bills 0; one that ends inside it bills the days from its end date on.
    """
    amount = period.amount_cents
    if amount <= 0:
        return ZERO
    single_day = WIDE.divide(amount, Decimal(period.period_days))
    from_date = period.from_date
    # a termination cuts the last period short: its days are billed like a first period's
    full = from_date <= period.start_date and period.to_date >= period.end_date
    if period.trial_end is not None:
        if period.trial_end >= period.to_datetime:
            return ZERO
        if period.trial_end > period.from_datetime:
            trial_end_date = period.trial_end_date or period.trial_end.date()
            days = (period.to_date - trial_end_date).days + 1
            return WIDE.multiply(Decimal(days), single_day)
    if full:
        return amount
    return WIDE.multiply(Decimal(period.billed_days), single_day)


def advance_period(period: PeriodInput) -> PeriodInput:
    """The period as its advance fee sees it: from its first day to its nominal end.

    The fee is billed when the period starts, before anyone knows whether a termination will
    cut it short, and a finalized invoice never changes; so a later termination does not
    change it (Lago credits the unused part with a credit note, which Tallyflow does not
    issue: docs/invoices.md, "Plans paid in advance").
    """
    end = period.period_end or period.to_datetime
    return replace(period, to_date=period.end_date, to_datetime=end)


def advance_issued_at(period: PeriodInput) -> datetime | None:
    """When the advance fee of ``period`` is invoiced: when the period starts, or when a trial
    that ends inside it ends (nothing is owed before); None when the trial covers the whole
    period (no fee at all)."""
    whole = advance_period(period)
    if period.trial_end is not None and period.trial_end > whole.from_datetime:
        if period.trial_end >= whole.to_datetime:
            return None
        return period.trial_end
    return whole.from_datetime


def advance_fee_cents(period: PeriodInput) -> Decimal:
    """Unrounded fee of a period paid in advance: the whole period's ``amount_cents``, the
    first partial period by the single-day price, the days of a trial left out
    (:func:`subscription_fee_cents` over :func:`advance_period`)."""
    return subscription_fee_cents(advance_period(period))


def advance_fee(
    period: PeriodInput,
    customer_tax_codes: Sequence[str],
    taxes: Mapping[str, Tax],
    entity_tax_codes: Sequence[str] = (),
) -> InvoiceFee | None:
    """The subscription fee of a plan paid in advance, for the period starting: its dates are
    the coming period's (``from_datetime`` to the nominal end). None when nothing is owed
    (a zero-amount plan, a trial covering the period): Lago persists no zero fee."""
    whole = advance_period(period)
    precise = advance_fee_cents(period)
    cents = int(round_minor(precise))
    if cents == 0:
        return None
    plan_taxes = applicable_taxes(
        [period.plan_tax_codes, customer_tax_codes, entity_tax_codes], taxes)
    return InvoiceFee(
        "subscription", period.external_subscription_id, period.plan_code, period.plan_name,
        period.subscription_invoice_name, None, {}, Decimal(1), 0, cents, precise,
        taxes=plan_taxes, from_datetime=whole.from_datetime, to_datetime=whole.to_datetime,
    )


def prorated(amount_cents: Decimal, period: PeriodInput) -> Decimal:
    """``amount x billed days / days of the whole period`` (Lago's charge single-day price)."""
    if period.billed_days >= period.period_days:
        return amount_cents
    return WIDE.divide(WIDE.multiply(amount_cents, Decimal(period.billed_days)),
                       Decimal(period.period_days))


# --------------------------------------------------------------------------------------------
# Taxes
# --------------------------------------------------------------------------------------------


def applicable_taxes(
    codes_by_precedence: Sequence[Sequence[str]],
    taxes: Mapping[str, Tax],
) -> tuple[Tax, ...]:
    """The first non-empty list of tax codes wins (charge, plan, customer); else the
    organization's default taxes (``applied_to_organization``)."""
    for codes in codes_by_precedence:
        if codes:
            missing = [c for c in codes if c not in taxes]
            if missing:
                raise TaxError(f"unknown tax code(s): {', '.join(missing)}")
            return tuple(taxes[c] for c in dict.fromkeys(codes))
    return tuple(sorted((t for t in taxes.values() if t.applied_to_organization),
                        key=lambda t: t.code))


# --------------------------------------------------------------------------------------------
# The invoice
# --------------------------------------------------------------------------------------------


def _zero_fee(fee: InvoiceFee) -> bool:
    return fee.units == 0 and fee.amount_cents == 0 and fee.events_count == 0


def period_fees(
    period: PeriodInput,
    customer_tax_codes: Sequence[str],
    taxes: Mapping[str, Tax],
    entity_tax_codes: Sequence[str] = (),
) -> list[InvoiceFee]:
    """Every fee of one subscription's closed period, zero fees left out."""
    sub = period.external_subscription_id
    plan_taxes = applicable_taxes(
        [period.plan_tax_codes, customer_tax_codes, entity_tax_codes], taxes)
    fees: list[InvoiceFee] = []
    # in advance: the fee was on the invoice of the period's start (advance_fee)
    precise = ZERO if period.pay_in_advance else subscription_fee_cents(period)
    subscription_fee = InvoiceFee(
        "subscription", sub, period.plan_code, period.plan_name,
        period.subscription_invoice_name, None, {}, Decimal(1), 0,
        int(round_minor(precise)), precise, taxes=plan_taxes,
        from_datetime=period.from_datetime, to_datetime=period.to_datetime,
    )
    if subscription_fee.amount_cents != 0:
        fees.append(subscription_fee)
    for charge in period.charges:
        charge_taxes = applicable_taxes(
            [charge.tax_codes, period.plan_tax_codes, customer_tax_codes, entity_tax_codes],
            taxes)
        total = 0
        for line in charge.lines:
            total += line.amount_cents
            if line.is_zero:
                continue
            fees.append(InvoiceFee(
                "charge", sub, charge.metric_code, charge.metric_name,
                charge.invoice_display_name, line.filter_invoice_display_name,
                dict(line.grouped_by), line.units, line.events_count, line.amount_cents,
                line.precise_amount_cents, taxes=charge_taxes, charge_id=charge.charge_id,
                from_datetime=period.from_datetime, to_datetime=period.to_datetime,
            ))
        if charge.min_amount_cents > 0:
            minimum = prorated(charge.min_amount_cents, period)
            if total < minimum:
                rest = WIDE.subtract(minimum, Decimal(total))
                fees.append(InvoiceFee(
                    "charge", sub, charge.metric_code, charge.metric_name,
                    charge.invoice_display_name, None, {}, Decimal(1), 0,
                    int(round_minor(rest)), rest, taxes=charge_taxes,
                    charge_id=charge.charge_id, true_up=True,
                    from_datetime=period.from_datetime, to_datetime=period.to_datetime,
                ))
    commitment = period.minimum_commitment_cents
    if commitment is not None and commitment > 0:
        minimum = prorated(commitment, period)
        so_far = sum(f.amount_cents for f in fees)
        if period.pay_in_advance:
            # the period's fee counts toward its commitment although billed at its start
            so_far += int(round_minor(advance_fee_cents(period)))
        if so_far < minimum:
            rest = WIDE.subtract(minimum, Decimal(so_far))
            name = period.commitment_invoice_display_name or period.plan_invoice_display_name
            fees.append(InvoiceFee(
                "commitment", sub, period.plan_code, period.plan_name, name, None, {},
                Decimal(1), 0, int(round_minor(rest)), rest, taxes=plan_taxes,
                from_datetime=period.from_datetime, to_datetime=period.to_datetime,
            ))
    return [f for f in fees if not _zero_fee(f)]


def invoice_amounts(
    currency: str,
    periods: Sequence[PeriodInput],
    customer_tax_codes: Sequence[str],
    taxes: Mapping[str, Tax],
    entity_tax_codes: Sequence[str] = (),
    advance: Sequence[PeriodInput] = (),
) -> InvoiceAmounts:
    """One customer's invoice for one billing day: the periods closing on it (in arrears)
    and the ``advance`` fees of the periods paid in advance that start on it (Lago puts
    both on the same invoice)."""
    fees: list[InvoiceFee] = []
    for period in periods:
        fees += period_fees(period, customer_tax_codes, taxes, entity_tax_codes)
    for period in advance:
        fee = advance_fee(period, customer_tax_codes, taxes, entity_tax_codes)
        if fee is not None:
            fees.append(fee)
    return amounts_of(currency, fees)


def amounts_of(currency: str, fees: Sequence[InvoiceFee]) -> InvoiceAmounts:
    """Totals over fees: taxes summed precisely per fee and rounded once for the invoice."""
    bases: dict[str, tuple[Tax, Decimal, Decimal]] = {}
    for fee in fees:
        taxable = fee.sub_total_excluding_taxes_amount_cents  # after coupons
        for tax in fee.taxes:
            _, base, precise = bases.get(tax.code, (tax, ZERO, ZERO))
            share = WIDE.divide(WIDE.multiply(taxable, tax.rate), HUNDRED)
            bases[tax.code] = (tax, WIDE.add(base, taxable), WIDE.add(precise, share))
    # Lago's invoices_taxes.fees_amount_cents is a bigint: a base after coupons keeps its
    # whole part
    applied = tuple(
        AppliedTax(tax.code, tax.name, tax.rate, int(base), int(round_minor(precise)))
        for tax, base, precise in (bases[c] for c in sorted(bases))
    )
    taxes_precise = sum((f.taxes_precise_amount_cents for f in fees), ZERO)
    return InvoiceAmounts(
        currency=currency,
        fees=tuple(fees),
        applied_taxes=applied,
        fees_amount_cents=sum(f.amount_cents for f in fees),
        taxes_amount_cents=int(round_minor(taxes_precise)),
    )


def trial_end(subscription_at: datetime, trial_period_days: Decimal | None) -> datetime | None:
    """``started_at + trial_period days`` (days may be fractional in Lago's API)."""
    if trial_period_days is None or trial_period_days <= 0:
        return None
    micros = int(trial_period_days * 86_400 * 1_000_000)
    return subscription_at + timedelta(microseconds=micros)


def finalization(
    at: datetime,
    grace: timedelta,
    issued_at: datetime | None,
    period_end: datetime | None,
    watermark: datetime | None,
    settle: timedelta,
) -> tuple[datetime, bool]:
    """When an invoice may be finalized, and whether that moment has come at ``at``.

    Fees paid in advance (``issued_at``: the latest moment they were issued) need no usage:
    due once issued and the customer's grace period passed. Periods in arrears (``period_end``:
    the latest one ending on the billing day) wait for their end plus the grace period, and
    for the ingest watermark to pass their end plus the settle delay, so late objects are in.
    """
    finalize_after = issued_at + grace if issued_at is not None else datetime.min.replace(
        tzinfo=at.tzinfo
    )
    due = at >= finalize_after
    if period_end is not None:
        finalize_after = max(finalize_after, period_end + ONE_MICROSECOND + grace)
        due = at >= finalize_after and watermark is not None and watermark >= period_end + settle
    return finalize_after, due
