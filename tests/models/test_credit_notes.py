"""The credit note amounts, table-driven from Lago's specs (lago-api, spec/services/credit_notes/
and spec/services/credits/credit_note_service_spec.rb): taxes, the rounding step, the checks,
the estimate and the consumption order. Pure: no database."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tallyflow.models.credit_notes import (
    Available,
    CreditableFee,
    CreditNoteRefused,
    EarlierNote,
    FeeTax,
    InvoiceState,
    InvoiceTax,
    Item,
    Request,
    apply_taxes,
    compute,
    consume,
    estimate,
    wallet_refunds,
)

D = Decimal


def _fee(key: str, cents: int, *rates: tuple[str, str], coupons: str = "0",
         credited: int = 0) -> CreditableFee:
    return CreditableFee(hash(key) % 1000, key, cents,
                         tuple(FeeTax(c, c.upper(), D(r)) for c, r in rates),
                         credited_cents=credited, precise_coupons_amount_cents=D(coupons))


def _invoice(fees: tuple[CreditableFee, ...], total: int, *, paid: int = 0,
             earlier: tuple[EarlierNote, ...] = (), coupons: int = 0,
             taxes: tuple[tuple[str, str], ...] = (("vat", "20"),)) -> InvoiceState:
    # ``paid``: what the wallets paid (Tallyflow counts it as paid, refundable to them)
    fees_amount = sum(f.amount_cents for f in fees)
    return InvoiceState(
        "EUR", "subscription", "finalized", fees,
        tuple(InvoiceTax(c, c.upper(), D(r), 0, 0) for c, r in taxes), fees_amount, total,
        paid, externally_paid=False, earlier=earlier, coupons_amount_cents=coupons)


# apply_taxes_service_spec.rb "when local taxes are applied": fee1 100 (tax1 12 %, 16.67 of
# coupons), fee2 20 (tax1 and tax2 8 %, 3.33 of coupons); items 20 and 50
def test_taxes_follow_the_credited_fees_with_their_coupons() -> None:
    fee1 = _fee("f1", 100, ("tax1", "12"), coupons=str(D(2000) / D(120)))
    fee2 = _fee("f2", 20, ("tax1", "12"), ("tax2", "8"), coupons=str(D(400) / D(120)))
    taxes = {c: InvoiceTax(c, c, D(r), 0, 0) for c, r in (("tax1", "12"), ("tax2", "8"))}
    result = apply_taxes([Item(fee1, D(20)), Item(fee2, D(50))], taxes)
    assert [(t.code, t.amount_cents) for t in result.applied] == [("tax1", 7), ("tax2", 3)]
    assert result.taxes_amount_cents == 10
    assert round(result.precise_taxes_amount_cents) == 10
    assert result.taxes_rate == D("17.71429")
    assert round(result.coupons_adjustment_amount_cents) == 12


CREATE = [
    # (spec, fees, items, credit, refund, wallet-paid, expected (taxes, total, credit, refund))
    pytest.param((10, 10), (10, 5), 12, 6, 6, (3, 18, 12, 6),
                 id="create_service_spec.rb creates a credit note"),
    pytest.param((20000,), (19333,), 24167, 0, 0, (4833, 24166, 24166, 0),
                 id="adjust_amounts_with_rounding_service_spec.rb a cent off the credit"),
    pytest.param((20000,), (19333,), 0, 24167, 25000, (4833, 24166, 0, 24166),
                 id="adjust_amounts_with_rounding_service_spec.rb a cent off the refund"),
]


@pytest.mark.parametrize(("fees", "items", "credit", "refund", "paid", "expected"), CREATE)
def test_create_amounts(fees: tuple[int, ...], items: tuple[int, ...], credit: int, refund: int,
                        paid: int, expected: tuple[int, int, int, int]) -> None:
    rate = "25" if fees == (20000,) else "20"
    chosen = tuple(_fee(f"f{i}", c, ("vat", rate)) for i, c in enumerate(fees))
    invoice = _invoice(chosen, sum(fees), paid=paid, taxes=(("vat", rate),))
    request = Request(tuple((f.lago_id, D(c)) for f, c in zip(chosen, items, strict=True)),
                      credit, refund)
    amounts = compute(request, invoice)
    assert (amounts.taxes_amount_cents, amounts.total_amount_cents, amounts.credit_amount_cents,
            amounts.refund_amount_cents) == expected
    assert amounts.balance_amount_cents == amounts.credit_amount_cents


REFUSED = [
    # (spec, items, credit, refund, offset, wallet-paid, earlier notes, errors)
    pytest.param((10, 15), 10, 15, 0, 6, (),
                 {"amount_cents": ["higher_than_remaining_fee_amount"]},
                 id="create_service_spec.rb with invalid items"),
    pytest.param((), 12, 0, 0, 6, (), {"items": ["must_be_an_array"]},
                 id="create_service_spec.rb when items are missing"),
    pytest.param((10, 5), 18, 6, 0, 6, (), {"base": ["does_not_match_item_amounts"]},
                 id="validate_service_spec.rb does_not_match_item_amounts"),
    pytest.param((10, 5), 0, 18, 0, 0, (),
                 {"refund_amount_cents": ["cannot_refund_unpaid_invoice"]},
                 id="validate_service_spec.rb cannot_refund_unpaid_invoice"),
    pytest.param((10, 5), 0, 18, 0, 10, (),
                 {"refund_amount_cents": ["higher_than_remaining_invoice_amount"]},
                 id="validate_service_spec.rb refund higher_than_remaining_invoice_amount"),
    pytest.param((10, 5), 18, 0, 0, 0, (EarlierNote(10, 0, 0, 2, D(2)),),
                 {"credit_amount_cents": ["higher_than_remaining_invoice_amount"],
                  "base": ["higher_than_remaining_invoice_amount"]},
                 id="validate_service_spec.rb credit higher_than_remaining_invoice_amount"),
    pytest.param((0,), 0, 0, 0, 0, (), {"base": ["total_amount_must_be_positive"]},
                 id="validate_service_spec.rb total_amount_must_be_positive"),
]


@pytest.mark.parametrize(("items", "credit", "refund", "offset", "paid", "earlier", "errors"),
                         REFUSED)
def test_refusals(items: tuple[int, ...], credit: int, refund: int, offset: int, paid: int,
                  earlier: tuple[EarlierNote, ...], errors: dict[str, list[str]]) -> None:
    fees = (_fee("f1", 10, ("vat", "20")), _fee("f2", 10, ("vat", "20")))
    invoice = _invoice(fees, 24, paid=paid, earlier=earlier)
    request = Request(tuple((f.lago_id, D(c)) for f, c in zip(fees, items, strict=False)),
                      credit, refund, offset)
    with pytest.raises(CreditNoteRefused) as refused:
        compute(request, invoice)
    assert refused.value.errors == errors


def test_refused_invoices_and_unknown_fees() -> None:
    fees = (_fee("f1", 10, ("vat", "20")),)
    draft = _invoice(fees, 12)
    for invoice in (InvoiceState(**{**draft.__dict__, "status": "draft"}),
                    InvoiceState(**{**draft.__dict__, "invoice_type": "credit"})):
        with pytest.raises(CreditNoteRefused) as refused:
            compute(Request((("f1", D(1)),), 1), invoice)
        assert refused.value.status == 405
    with pytest.raises(CreditNoteRefused) as refused:
        compute(Request((("nope", D(1)),), 1), draft)
    assert (refused.value.status, refused.value.errors) == (404, {"fee": ["not_found"]})


def test_estimate_as_lago_estimates() -> None:
    # estimate_service_spec.rb "estimates the credit and refund amount": fees 10 and 10 with 5
    # of coupons each, VAT 20 %, 9 paid; items 10 and 5
    fees = (_fee("f1", 10, ("vat", "20"), coupons="5"),
            _fee("f2", 10, ("vat", "20"), coupons="5"))
    invoice = _invoice(fees, 12, paid=9, coupons=10)
    result = estimate([("f1", D(10)), ("f2", D(5))], invoice)
    amounts = result.amounts
    assert (amounts.sub_total_excluding_taxes_amount_cents, amounts.taxes_amount_cents,
            amounts.coupons_adjustment_amount_cents) == (8, 1, 8)
    assert (result.max_creditable_amount_cents, result.max_refundable_amount_cents) == (9, 9)


def test_the_last_note_takes_back_the_earlier_rounding() -> None:
    # create_service.rb adjust_credit_note_tax_rounding: 1 cent at 20 % is 0.2 of tax, 0 rounded
    fees = (_fee("f1", 3, ("vat", "20")),)
    first = compute(Request((("f1", D(1)),), 1), _invoice(fees, 4))
    assert (first.taxes_amount_cents, first.precise_taxes_amount_cents) == (0, D("0.2"))
    earlier = (EarlierNote(1, 0, 0, 0, D("0.2")),)
    rest = _invoice((_fee("f1", 3, ("vat", "20"), credited=1),), 4, earlier=earlier)
    last = compute(Request((("f1", D(2)),), 3), rest)
    assert last.precise_taxes_amount_cents == D("0.6")  # 0.4 + the 0.2 kept back before
    assert last.taxes_amount_cents == 1 and last.total_amount_cents == 3


def test_consumption_oldest_first_up_to_the_invoice() -> None:
    # credit_note_service_spec.rb: notes of 20 and 50 on an invoice of 100 -> 20, 50
    assert consume(100, [Available(1, 20), Available(2, 50)]) == ((1, 20), (2, 50))
    # "when invoice amount is lower than credit notes": the second partly
    assert consume(60, [Available(1, 20), Available(2, 50)]) == ((1, 20), (2, 40))
    assert consume(0, [Available(1, 20)]) == ()


def test_refund_goes_back_to_the_wallets_that_paid_first() -> None:
    fees = (_fee("f1", 1000, ("vat", "20")),)
    invoice = _invoice(fees, 0, paid=1200, earlier=(EarlierNote(0, 100, 0, 0, D(0), 100),))
    # 1100 of the wallets' 1200 left: wallet 7 paid 800, wallet 9 paid 300 (net)
    assert wallet_refunds(1000, invoice, [(7, 800), (9, 300)]) == ((7, 800), (9, 200))
    assert wallet_refunds(5000, invoice, [(7, 800), (9, 300)]) == ((7, 800), (9, 300))


# create_from_termination_spec.rb: a €31 plan paid in advance for October (31 days), 20 % VAT,
# terminated on 15 October: 16 unused days, 15 used; the refund cases' invoice holds two such
# fees (7440 with taxes), paid 7440, 5580 or 930; expected (credit, refund, offset)
TERMINATION = [
    pytest.param("credit", 0, (1920, 0, 0), id="creates a credit note"),
    pytest.param("refund", 7440, (0, 1920, 0), id="when refund is requested, fully paid"),
    pytest.param("refund", 5580, (930, 990, 0), id="when refund is requested, partially paid"),
    pytest.param("refund", 0, (1920, 0, 0), id="refund of an unpaid invoice: all as credit"),
    pytest.param("offset", 7440, (0, 1920, 0),
                 id="when offset is requested, when invoice is fully paid"),
    pytest.param("offset", 5580, (0, 990, 930),
                 id="when offset is requested, when payment covers the subscription fee"),
    pytest.param("offset", 930, (0, 0, 1920),
                 id="when offset is requested, when payment does not cover the subscription fee"),
]


@pytest.mark.parametrize(("choice", "paid", "expected"), TERMINATION)
def test_termination_credit_note(choice: str, paid: int,
                                 expected: tuple[int, int, int]) -> None:
    from datetime import date

    from tallyflow.models.credit_notes import FeePaid, termination_days, termination_request

    days = termination_days(date(2022, 10, 1), date(2022, 10, 31), date(2022, 10, 15))
    assert days == (16, 15)
    fee = _fee("sub", 3100, ("vat", "20"))
    other = _fee("other", 3100, ("vat", "20"))
    invoice = _invoice((fee, other), 7440, paid=paid)
    request = termination_request(FeePaid(fee, D(3720), 7440), invoice,
                                  plan_amount_cents=D(3100), period_days=31, days=days,
                                  choice=choice)
    assert request is not None and request.items == (("sub", D(1600)),)
    assert (request.credit_amount_cents, request.refund_amount_cents,
            request.offset_amount_cents) == expected
    amounts = compute(request, invoice)
    assert (amounts.taxes_amount_cents, amounts.total_amount_cents) == (320, 1920)
    if choice != "credit":  # "Upgrade and refund/offset are not supported together"
        with pytest.raises(CreditNoteRefused, match=f"{choice}_with_upgrade"):
            termination_request(FeePaid(fee, D(3720), 7440), invoice,
                                plan_amount_cents=D(3100), period_days=31, days=days,
                                choice=choice, upgrade=True)


def test_termination_days_upgrade_and_trial() -> None:
    from datetime import date

    from tallyflow.models.credit_notes import termination_days

    # an upgrade credits the termination day too (the new plan bills it)
    assert termination_days(date(2022, 10, 1), date(2022, 10, 31), date(2022, 10, 15),
                            upgrade=True) == (17, 15)
    # a trial ending after the termination: its days are not credited
    assert termination_days(date(2022, 10, 1), date(2022, 10, 31), date(2022, 10, 15),
                            trial_end=date(2022, 10, 20)) == (12, 0)
