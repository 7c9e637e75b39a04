"""Credit notes: Lago's amounts, taxes, checks, the rounding step and the consumption order.

Pure: no I/O. The writer is ``tallyflow.tasks.corrections`` (docs/architecture.md §14).

A credit note takes back part of a finalized invoice, fee by fee (its items), and sends the
total (items + their taxes) to three places, as the caller chooses (Lago's ``CreateService``):

- ``credit``: the customer's credit-note balance, which later invoices consume at their
  finalization after taxes and before prepaid credits (``Credits::CreditNoteService``:
  :func:`consume`);
- ``refund``: money owed back. Tallyflow: the part the wallets paid goes back to them as a
  ledger correction (:func:`wallet_refunds`); the rest is a refund due, tracked by its status;
- ``offset``: taken off what is still due on the invoice itself.

The taxes follow the credited fees as Lago's ``CreditNotes::ApplyTaxesService`` computes them
(per tax code over the items that carry it, coupons prorated first), in exact decimals where
Lago uses floats; the last note of an invoice takes back the rounding of the earlier ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Final

from tallyflow.models.rating.money import WIDE, round_minor

ZERO: Final = Decimal(0)
HUNDRED: Final = Decimal(100)

# Lago's CreditNote::REASON
REASONS: Final = ("duplicated_charge", "product_unsatisfactory", "order_change",
                  "order_cancellation", "fraudulent_charge", "other")
# Lago's CreditNote::DB_PRECISION_SCALE: precise item amounts are kept to 5 decimals
DB_PRECISION_SCALE: Final = 5


def _round(value: Decimal) -> int:
    return int(round_minor(value))


def _div(a: Decimal, b: Decimal) -> Decimal:
    return WIDE.divide(a, b)


@dataclass(frozen=True)
class FeeTax:
    code: str
    name: str
    rate: Decimal


@dataclass(frozen=True)
class CreditableFee:
    """A fee of the invoice: what it billed, its taxes, and what earlier notes credited."""

    fee_id: int
    lago_id: str
    amount_cents: int
    taxes: tuple[FeeTax, ...]
    credited_cents: int = 0
    precise_coupons_amount_cents: Decimal = ZERO

    @property
    def taxes_rate(self) -> Decimal:
        return sum((t.rate for t in self.taxes), ZERO)

    @property
    def creditable_amount_cents(self) -> int:
        """Lago's ``Fee#creditable_amount_cents``: the amount less every earlier item."""
        return self.amount_cents - self.credited_cents


@dataclass(frozen=True)
class InvoiceTax:
    """One of the invoice's applied taxes; ``taxable_amount_cents`` is its base after coupons."""

    code: str
    name: str
    rate: Decimal
    fees_amount_cents: int
    taxable_amount_cents: int

    @property
    def base_rate(self) -> Decimal:
        """Lago's ``taxes_base_rate``: the share of the fees the tax was computed on."""
        if self.fees_amount_cents == 0:
            return Decimal(1)
        return _div(Decimal(self.taxable_amount_cents), Decimal(self.fees_amount_cents))


@dataclass(frozen=True)
class EarlierNote:
    """A note already issued on the invoice (voided ones too: Lago counts every finalized)."""

    credit_amount_cents: int
    refund_amount_cents: int
    offset_amount_cents: int
    taxes_amount_cents: int
    precise_taxes_amount_cents: Decimal
    wallet_refund_amount_cents: int = 0

    @property
    def total_amount_cents(self) -> int:
        return self.credit_amount_cents + self.refund_amount_cents + self.offset_amount_cents


@dataclass(frozen=True)
class InvoiceState:
    """What a credit note reads of its invoice, under the customer's lock.

    ``externally_paid``: the invoice's payment succeeded, so its ``total_amount_cents`` (what
    was left after prepaid credits) was paid. Tallyflow counts what the wallets paid
    (``prepaid_credit_amount_cents``) as paid too: it can be refunded, back to the wallets.
    """

    currency: str
    invoice_type: str
    status: str
    fees: tuple[CreditableFee, ...]
    taxes: tuple[InvoiceTax, ...]
    fees_amount_cents: int
    total_amount_cents: int
    prepaid_credit_amount_cents: int
    externally_paid: bool
    earlier: tuple[EarlierNote, ...] = ()
    coupons_amount_cents: int = 0

    def fee(self, lago_id: str) -> CreditableFee | None:
        """A fee of this invoice by its ``lago_id`` (Lago's ``fee_id`` in a request)."""
        return next((f for f in self.fees if f.lago_id == lago_id), None)

    @property
    def fee_total_amount_cents(self) -> int:
        """Lago's ``Invoice#fee_total_amount_cents``: fees plus their taxes, rounded once."""
        taxes = sum((WIDE.multiply(Decimal(f.amount_cents), f.taxes_rate) for f in self.fees),
                    ZERO)
        return sum(f.amount_cents for f in self.fees) + _round(_div(taxes, HUNDRED))

    @property
    def total_paid_amount_cents(self) -> int:
        paid = self.total_amount_cents if self.externally_paid else 0
        return self.prepaid_credit_amount_cents + paid

    def earlier_sum(self, name: str) -> int:
        return sum(int(getattr(n, name)) for n in self.earlier)

    @property
    def creditable_amount_cents(self) -> int:
        """Lago's ``ValidateService#creditable_amount_cents``: what credit may still take."""
        return (self.fee_total_amount_cents - self.earlier_sum("credit_amount_cents")
                - self.earlier_sum("offset_amount_cents"))

    @property
    def due_amount_cents(self) -> int:
        """Lago's ``total_due_amount_cents``: not paid and not offset yet."""
        paid = self.total_amount_cents if self.externally_paid else 0
        return self.total_amount_cents - paid - self.earlier_sum("offset_amount_cents")

    @property
    def available_to_credit_amount_cents(self) -> int:
        """Lago's ``Invoice#available_to_credit_amount_cents`` (fees left, their taxes)."""
        creditable = sum(f.creditable_amount_cents for f in self.fees)
        if creditable == 0:
            return 0
        adjustment = (ZERO if self.fees_amount_cents == 0 else _div(
            WIDE.multiply(Decimal(self.coupons_amount_cents), Decimal(creditable)),
            Decimal(self.fees_amount_cents)))
        vat = ZERO
        for fee in self.fees:
            share = _div(WIDE.multiply(adjustment, Decimal(fee.creditable_amount_cents)),
                         Decimal(creditable))
            vat += WIDE.multiply(Decimal(fee.creditable_amount_cents) - share, fee.taxes_rate)
        return _round(Decimal(creditable) - adjustment + Decimal(_round(_div(vat, HUNDRED))))

    @property
    def refundable_amount_cents(self) -> int:
        """Lago's ``Invoice#refundable_amount_cents``: paid, not refunded, still creditable."""
        paid = self.total_paid_amount_cents - self.earlier_sum("refund_amount_cents")
        return max(0, min(paid, self.available_to_credit_amount_cents))


@dataclass(frozen=True)
class Item:
    """One credited fee: ``precise_amount_cents`` as asked, ``amount_cents`` rounded."""

    fee: CreditableFee
    precise_amount_cents: Decimal

    @property
    def amount_cents(self) -> int:
        return _round(self.precise_amount_cents)

    @property
    def fee_rate(self) -> Decimal:
        """The share of its fee the item takes back (0 for a zero fee)."""
        if self.fee.amount_cents == 0:
            return ZERO
        return _div(self.precise_amount_cents, Decimal(self.fee.amount_cents))

    @property
    def coupons_share(self) -> Decimal:
        return WIDE.multiply(self.fee.precise_coupons_amount_cents, self.fee_rate)


@dataclass(frozen=True)
class AppliedTax:
    code: str
    name: str
    rate: Decimal
    base_amount_cents: int
    amount_cents: int


@dataclass(frozen=True)
class Taxes:
    """``CreditNotes::ApplyTaxesService``'s result."""

    applied: tuple[AppliedTax, ...]
    coupons_adjustment_amount_cents: Decimal
    precise_taxes_amount_cents: Decimal
    taxes_amount_cents: int
    taxes_rate: Decimal


def apply_taxes(items: Sequence[Item], invoice_taxes: Mapping[str, InvoiceTax]) -> Taxes:
    """Taxes of the items: per tax code, over the items whose fee carries it, the items less
    their share of the fee's coupons, times the invoice tax's base rate, times its rate."""
    by_code: dict[str, list[Item]] = {}
    for item in items:
        for tax in item.fee.taxes:
            by_code.setdefault(tax.code, []).append(item)
    coupons = sum((i.coupons_share for i in items), ZERO)
    items_amount = sum((i.precise_amount_cents for i in items), ZERO)
    applied: list[AppliedTax] = []
    precise_total, rounded_total, rate = ZERO, 0, ZERO
    for code, taxed in by_code.items():
        invoice_tax = invoice_taxes[code]
        base = sum((i.precise_amount_cents - i.coupons_share for i in taxed), ZERO)
        precise_base = WIDE.multiply(base, invoice_tax.base_rate)
        precise_tax = _div(WIDE.multiply(precise_base, invoice_tax.rate), HUNDRED)
        applied.append(AppliedTax(code, invoice_tax.name, invoice_tax.rate,
                                  _round(precise_base), _round(precise_tax)))
        precise_total += precise_tax
        rounded_total += _round(precise_tax)
        net = items_amount - coupons
        rate += ZERO if net == 0 else WIDE.multiply(_div(base, net), invoice_tax.rate)
    return Taxes(tuple(applied), coupons, precise_total, rounded_total,
                 rate.quantize(Decimal("0.00001")))


class CreditNoteRefused(ValueError):
    """Lago's refusals: ``errors`` is ``{field: [code]}`` (a 422), ``status`` 404/405 else."""

    def __init__(self, errors: Mapping[str, Sequence[str]], status: int = 422) -> None:
        super().__init__("; ".join(f"{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = {k: list(v) for k, v in errors.items()}
        self.status = status


@dataclass(frozen=True)
class Request:
    """What the caller asks: items as ``(fee lago_id, amount_cents)``, and where the total
    goes."""

    items: tuple[tuple[str, Decimal], ...]
    credit_amount_cents: int = 0
    refund_amount_cents: int = 0
    offset_amount_cents: int = 0
    reason: str = "other"


@dataclass(frozen=True)
class Amounts:
    """A credit note's amounts, as Lago stores them after ``AdjustAmountsWithRoundingService``."""

    items: tuple[Item, ...]
    taxes: Taxes
    precise_taxes_amount_cents: Decimal
    taxes_amount_cents: int
    sub_total_excluding_taxes_amount_cents: int
    credit_amount_cents: int
    refund_amount_cents: int
    offset_amount_cents: int

    @property
    def total_amount_cents(self) -> int:
        return self.credit_amount_cents + self.refund_amount_cents + self.offset_amount_cents

    @property
    def balance_amount_cents(self) -> int:
        return self.credit_amount_cents

    @property
    def coupons_adjustment_amount_cents(self) -> int:
        return _round(self.taxes.coupons_adjustment_amount_cents)

    @property
    def precise_total_amount_cents(self) -> Decimal:
        items = sum((i.precise_amount_cents for i in self.items), ZERO)
        return items - self.taxes.coupons_adjustment_amount_cents + self.precise_taxes_amount_cents


def invoice_refusal(invoice: InvoiceState) -> CreditNoteRefused | None:
    """Which invoices take no credit note. Lago's ``valid_type_or_status?`` (405
    ``invalid_type_or_status``): a draft. Tallyflow: a credit invoice (a wallet top-up) too,
    whose refund would void the wallet's credits (Lago's ``void_prepaid_credit``), not done."""
    if invoice.status != "finalized" or invoice.invoice_type == "credit":
        return CreditNoteRefused({"invoice": ["invalid_type_or_status"]}, status=405)
    return None


def _items(request: Request, invoice: InvoiceState, *, check: bool) -> tuple[Item, ...]:
    """The items, refused like Lago's ``ValidateItemService``: an unknown fee is a 404, a
    negative amount ``invalid_value``, more than the fee has left
    ``higher_than_remaining_fee_amount``."""
    if not request.items:
        raise CreditNoteRefused({"items": ["must_be_an_array"]})
    items: list[Item] = []
    for fee_id, amount in request.items:
        fee = invoice.fee(fee_id)
        if fee is None:
            raise CreditNoteRefused({"fee": ["not_found"]}, status=404)
        item = Item(fee, Decimal(amount))
        if check and item.amount_cents < 0:
            raise CreditNoteRefused({"amount_cents": ["invalid_value"]})
        if check and item.amount_cents > fee.creditable_amount_cents:
            raise CreditNoteRefused({"amount_cents": ["higher_than_remaining_fee_amount"]})
        items.append(item)
    return tuple(items)


def _taxes(items: Sequence[Item], invoice: InvoiceState) -> tuple[Taxes, Decimal]:
    """The taxes, and their precise sum; the note that credits everything left takes back the
    rounding of the earlier ones (Lago's ``adjust_credit_note_tax_rounding``)."""
    taxes = apply_taxes(items, {t.code: t for t in invoice.taxes})
    precise = taxes.precise_taxes_amount_cents
    left = sum(Decimal(f.creditable_amount_cents) for f in invoice.fees)
    if sum((i.precise_amount_cents for i in items), ZERO) == left:
        precise -= sum((Decimal(n.taxes_amount_cents) - n.precise_taxes_amount_cents
                        for n in invoice.earlier), ZERO)
    return taxes, precise


def _check(request: Request, invoice: InvoiceState, items_total: int) -> dict[str, list[str]]:
    """Lago's ``CreditNotes::ValidateService``, check by check (a one-cent rounding is let
    through where Lago lets it through)."""
    errors: dict[str, list[str]] = {}

    def add(field: str, code: str) -> None:
        errors.setdefault(field, []).append(code)

    credit, refund, offset = (request.credit_amount_cents, request.refund_amount_cents,
                              request.offset_amount_cents)
    total = credit + refund + offset
    if request.reason not in REASONS:
        add("reason", "value_is_invalid")
    if min(credit, refund, offset) < 0:
        add("base", "invalid_value")
    if abs(total - items_total) > 1:
        add("base", "does_not_match_item_amounts")
    if refund > 0:
        if invoice.total_paid_amount_cents <= 0:
            add("refund_amount_cents", "cannot_refund_unpaid_invoice")
        elif refund > (invoice.total_paid_amount_cents
                       - invoice.earlier_sum("refund_amount_cents")):
            add("refund_amount_cents", "higher_than_remaining_invoice_amount")
    creditable = invoice.creditable_amount_cents
    if credit > creditable and credit - creditable > 1:
        add("credit_amount_cents", "higher_than_remaining_invoice_amount")
    if offset > 0 and offset > min(invoice.due_amount_cents, creditable):
        add("offset_amount_cents", "higher_than_remaining_invoice_amount")
    earlier = sum(n.total_amount_cents for n in invoice.earlier)
    remaining = invoice.fee_total_amount_cents - earlier
    if total > remaining and total - remaining > 1:
        add("base", "higher_than_remaining_invoice_amount")
    if total <= 0:
        add("base", "total_amount_must_be_positive")
    return errors


def compute(request: Request, invoice: InvoiceState) -> Amounts:
    """A credit note's amounts (Lago's ``CreateService``): items checked, taxes applied, the
    request checked against the invoice, then the one-cent rounding step
    (``AdjustAmountsWithRoundingService``). Raises :class:`CreditNoteRefused`."""
    refusal = invoice_refusal(invoice)
    if refusal is not None:
        raise refusal
    items = _items(request, invoice, check=True)
    taxes, precise_taxes = _taxes(items, invoice)
    items_precise = sum((i.precise_amount_cents for i in items), ZERO)
    items_total = _round(items_precise - taxes.coupons_adjustment_amount_cents + precise_taxes)
    errors = _check(request, invoice, items_total)
    if errors:
        raise CreditNoteRefused(errors)
    taxes_cents = _round(precise_taxes)
    sub_total = _round(items_precise - taxes.coupons_adjustment_amount_cents)
    credit, refund, offset = (request.credit_amount_cents, request.refund_amount_cents,
                              request.offset_amount_cents)
    total = credit + refund + offset
    if total - taxes_cents != sub_total:
        total += -1 if total - taxes_cents > sub_total else 1
        # Lago moves the cent on the credit, else the refund; Tallyflow: else the offset
        # (Lago's refund = total would overstate an offset-only note)
        if credit > 0:
            credit = total - refund - offset
        elif refund > 0:
            refund = total - offset
        else:
            offset = total
    return Amounts(items, taxes, precise_taxes, taxes_cents, sub_total, credit, refund, offset)


@dataclass(frozen=True)
class Estimate:
    """Lago's ``credit_notes/estimate``: the most that may be credited and refunded."""

    amounts: Amounts
    max_creditable_amount_cents: int
    max_refundable_amount_cents: int
    # the SDK's CreditNoteEstimatedResponse requires it (Lago's later serializer): the part of
    # the credit that may be taken off what is still due on the invoice
    max_offsettable_amount_cents: int


def estimate(items: Sequence[tuple[str, Decimal]], invoice: InvoiceState) -> Estimate:
    """Lago's ``EstimateService``: items as whole cents, taxes as at issue, the credit their
    total, the refund the part of it still refundable; then the rounding step (a cent off the
    total, else off the taxes)."""
    refusal = invoice_refusal(invoice)
    if refusal is not None:
        raise refusal
    request = Request(tuple((f, Decimal(int(a))) for f, a in items))
    chosen = _items(request, invoice, check=True)
    taxes, precise_taxes = _taxes(chosen, invoice)
    taxes_cents = _round(precise_taxes)
    credit = _round(sum((Decimal(i.amount_cents) for i in chosen), ZERO)
                    - taxes.coupons_adjustment_amount_cents + precise_taxes)
    refund = min(credit, invoice.refundable_amount_cents)
    items_precise = sum((i.precise_amount_cents for i in chosen), ZERO)
    sub_total = _round(items_precise - taxes.coupons_adjustment_amount_cents)
    if credit - taxes_cents != sub_total:
        if credit - taxes_cents > sub_total:
            credit -= 1
        elif taxes_cents > 0:
            taxes_cents -= 1
    amounts = Amounts(chosen, taxes, precise_taxes, taxes_cents, sub_total, credit, 0, 0)
    return Estimate(amounts, credit, refund, min(credit, max(invoice.due_amount_cents, 0)))


def wallet_refunds(refund_cents: int, invoice: InvoiceState,
                   paid_by_wallet: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Tallyflow: the part of a refund the wallets paid goes back to them, as a ledger
    correction, before anything is refunded otherwise: up to what each wallet paid toward the
    invoice (``paid_by_wallet``: ``(wallet_id, cents)`` net of earlier corrections), in that
    order. Returns ``(wallet_id, cents)`` with positive cents."""
    left = min(refund_cents, invoice.prepaid_credit_amount_cents
               - invoice.earlier_sum("wallet_refund_amount_cents"))
    out: list[tuple[int, int]] = []
    for wallet_id, paid in paid_by_wallet:
        take = min(left, paid)
        if take > 0:
            out.append((wallet_id, take))
            left -= take
    return tuple(out)


@dataclass(frozen=True)
class Available:
    """A credit note with credit left, in issue order (Lago: ``created_at`` ascending)."""

    credit_note_id: int
    balance_amount_cents: int


def consume(owed_cents: int, notes: Sequence[Available]) -> tuple[tuple[int, int], ...]:
    """What an invoice takes from the customer's credit notes at finalization (Lago's
    ``Credits::CreditNoteService``): after taxes, before prepaid credits, oldest note first,
    each up to its balance, until the invoice is covered. Returns ``(credit_note_id, cents)``."""
    left = owed_cents
    out: list[tuple[int, int]] = []
    for note in notes:
        if left <= 0:
            break
        take = min(note.balance_amount_cents, left)
        if take > 0:
            out.append((note.credit_note_id, take))
            left -= take
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Termination and upgrade of a plan paid in advance (Lago's CreditNotes::CreateFromTermination)
# --------------------------------------------------------------------------------------------

TERMINATION_CHOICES: Final = ("credit", "refund", "offset", "skip")
"""Lago's ``on_termination_credit_note``; none given (nor stored) means ``credit``
(``DEFAULT_TERMINATION_CHOICE``), as Lago's ``TerminateService`` defaults a blank one."""

DEFAULT_TERMINATION_CHOICE: Final = "credit"


def termination_days(from_date: date, end_date: date, terminated_on: date, *,
                     upgrade: bool = False, trial_end: date | None = None) -> tuple[int, int]:
    """``(unused, used)`` days of the period a fee paid in advance covered (local dates):
    Lago's ``remaining_duration`` (the days after the termination day; an upgrade credits
    the termination day too, the new plan bills it; days of a trial are not credited) and
    ``used_duration`` (from the period's first billed day, or the trial's end, to the
    termination day)."""
    billed_from = terminated_on - timedelta(days=1) if upgrade else terminated_on
    if trial_end is not None and trial_end >= billed_from:
        billed_from = end_date if trial_end > end_date else trial_end - timedelta(days=1)
    unused = max(0, (end_date - billed_from).days)
    used_from = max(from_date, trial_end) if trial_end is not None else from_date
    used = max(0, (min(terminated_on, end_date) - used_from).days + 1)
    return unused, used


@dataclass(frozen=True)
class FeePaid:
    """The fee paid in advance and what its invoice was paid (for a refund's share)."""

    fee: CreditableFee
    precise_total_amount_cents: Decimal  # the fee's precise amount plus its precise taxes
    invoice_sub_total_including_taxes_amount_cents: int


def termination_request(paid: FeePaid, invoice: InvoiceState, *, plan_amount_cents: Decimal,
                        period_days: int, days: tuple[int, int], choice: str,
                        upgrade: bool = False) -> Request | None:
    """The credit note for the unused days of a fee paid in advance, or None when nothing is
    left to credit (Lago's ``CreateFromTermination``): the single-day price times the unused
    days, capped at the fee and less what notes already credited on it, to 5 decimals; with
    its taxes, all as credit, or (``refund``) refunded up to the fee's share of what was paid
    less the used days' value, the rest as credit, or (``offset``) that refund and the rest
    offset against the invoice's amount due. An upgrade with a refund or an offset is refused,
    as Lago refuses it."""
    if choice == "skip":
        return None
    if upgrade and choice in ("refund", "offset"):
        raise CreditNoteRefused({"on_termination_credit_note": [f"{choice}_with_upgrade"]})
    fee = paid.fee
    day_price = _div(Decimal(plan_amount_cents), Decimal(period_days))
    amount = min(WIDE.multiply(day_price, Decimal(days[0])), Decimal(fee.amount_cents))
    amount = (amount - fee.credited_cents).quantize(Decimal(10) ** -DB_PRECISION_SCALE,
                                                    rounding=ROUND_DOWN)
    if amount <= 0:
        return None
    total = _with_taxes(fee, invoice, amount)
    refund = 0
    if choice in ("refund", "offset") and paid.invoice_sub_total_including_taxes_amount_cents > 0:
        share = WIDE.multiply(_div(paid.precise_total_amount_cents,
                                   Decimal(paid.invoice_sub_total_including_taxes_amount_cents)),
                              Decimal(invoice.total_paid_amount_cents))
        used = Decimal(_with_taxes(fee, invoice, WIDE.multiply(day_price, Decimal(days[1]))))
        if share - used > 0:
            refund = _round(min(share - used, Decimal(total)))
    # Lago's TerminateService names the reason (an upgrade terminates the old row too)
    if choice == "offset":  # Lago's calculate_amounts: [0, refund, creditable]
        return Request(((fee.lago_id, amount),), 0, refund, total - refund, "order_cancellation")
    return Request(((fee.lago_id, amount),), total - refund, refund, 0, "order_cancellation")


def _with_taxes(fee: CreditableFee, invoice: InvoiceState, amount: Decimal) -> int:
    """Lago's ``adjust_for_coupon_and_taxes``: the amount less its coupons, plus its taxes."""
    taxes = apply_taxes([Item(fee, amount)], {t.code: t for t in invoice.taxes})
    return _round(amount - taxes.coupons_adjustment_amount_cents
                  + taxes.precise_taxes_amount_cents)
