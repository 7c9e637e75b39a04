"""Coupons on an invoice (models/coupons.py), against Lago's own specs (lago-api, cited per
case): the credit, its spread over the fees, the order, the frequencies, and the taxes after."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tallyflow.models.coupons import AppliedCoupon, apply_coupons
from tallyflow.models.invoicing import InvoiceFee, Tax, amounts_of

T0 = datetime(2023, 1, 1, tzinfo=UTC)
T1 = datetime(2023, 1, 31, 23, 59, 59, tzinfo=UTC)
SPEC = "spec/services/credits/applied_coupon_service_spec.rb"
SPEC_ALL = "spec/services/credits/applied_coupons_service_spec.rb"


def fee(cents: int, code: str = "m", sub: str = "s1", taxes: tuple[Tax, ...] = (),
        charge_id: int | None = 1) -> InvoiceFee:
    return InvoiceFee("charge", sub, code, code, None, None, {}, Decimal(1), 1, cents,
                      Decimal(cents), T0, T1, taxes=taxes, charge_id=charge_id)


def fixed(cid: int, cents: int, frequency: str = "once", **kw: object) -> AppliedCoupon:
    kw.setdefault("amount_currency", "EUR")
    return AppliedCoupon(cid, f"c{cid}", "fixed_amount", frequency,  # type: ignore[arg-type]
                         amount_cents=cents, **kw)  # type: ignore[arg-type]


def percent(cid: int, rate: str, frequency: str = "once", **kw: object) -> AppliedCoupon:
    return AppliedCoupon(cid, f"c{cid}", "percentage", frequency,  # type: ignore[arg-type]
                         percentage_rate=Decimal(rate), **kw)  # type: ignore[arg-type]


# One coupon on fees of 200 and 100 cents (the spec's fee1, fee2): credit, the fees' shares,
# frequency_duration_remaining after, terminated.
ONE = [
    pytest.param((200, 100), fixed(1, 12), 12, ("8", "4"), None, True,
                 id=f"{SPEC}: creates a credit, terminates"),
    pytest.param((4, 2), fixed(1, 12), 6, ("4", "2"), None, False,
                 id=f"{SPEC}: amount higher than the invoice"),
    pytest.param((200, 100), fixed(1, 12, credited_cents=6), 6, ("4", "2"), None, True,
                 id=f"{SPEC}: partially used"),
    pytest.param((200, 100), percent(1, "20.00"), 60, ("40", "20"), None, True,
                 id=f"{SPEC}: percentage"),
    pytest.param((200, 100), fixed(1, 12, "recurring", frequency_duration_remaining=3), 12,
                 ("8", "4"), 2, False, id=f"{SPEC}: recurring fixed"),
    pytest.param((200, 100), fixed(1, 12, "forever"), 12, ("8", "4"), None, False,
                 id=f"{SPEC}: forever fixed"),
    pytest.param((200, 100), percent(1, "20.00", "recurring", frequency_duration_remaining=1),
                 60, ("40", "20"), 0, True, id=f"{SPEC}: recurring, duration becomes zero"),
    pytest.param((1, 1, 1), percent(1, "50"), 2, ("0.66667", "0.66667", "0.66667"), None, True,
                 id="rounding: 1.5 cents half up to 2; shares to five decimals (numeric(30,5))"),
]


@pytest.mark.parametrize(("cents", "coupon", "credit", "shares", "remaining", "ends"), ONE)
def test_one_coupon(cents: tuple[int, ...], coupon: AppliedCoupon, credit: int,
                    shares: tuple[str, ...], remaining: int | None, ends: bool) -> None:
    result = apply_coupons(amounts_of("EUR", [fee(c) for c in cents]), [coupon], {})
    [made] = result.credits
    assert made.amount_cents == credit
    assert result.amounts.coupons_amount_cents == credit
    assert [f.precise_coupons_amount_cents for f in result.amounts.fees] == [
        Decimal(s) for s in shares]
    assert made.frequency_duration_remaining == remaining
    assert made.terminated is ends
    assert (result.coupons == ()) is ends


# Two coupons on one fee of 100 cents: the older first (applied_coupons_service_spec).
TWO = [
    pytest.param(fixed(1, 10), percent(2, "20.00"), 28, id=f"{SPEC_ALL}: fixed then percentage"),
    pytest.param(fixed(1, 10), fixed(2, 20), 30, id=f"{SPEC_ALL}: both fixed"),
    pytest.param(percent(1, "15.00"), percent(2, "20.00"), 32, id=f"{SPEC_ALL}: both percentage"),
    pytest.param(fixed(1, 200), percent(2, "20.00"), 100,
                 id=f"{SPEC_ALL}: the first covers the invoice, the second is not applied"),
]


@pytest.mark.parametrize(("first", "second", "total"), TWO)
def test_two_coupons(first: AppliedCoupon, second: AppliedCoupon, total: int) -> None:
    result = apply_coupons(amounts_of("EUR", [fee(100)]), [first, second], {})
    assert result.amounts.coupons_amount_cents == total
    assert result.amounts.sub_total_excluding_taxes_amount_cents == 100 - total


@pytest.mark.parametrize(("coupon", "applied"), [
    pytest.param(fixed(1, 10, amount_currency="NOK"), False,
                 id=f"{SPEC}: currencies do not match"),
    pytest.param(percent(1, "10", amount_currency="NOK"), True,
                 id=f"{SPEC}: percentage regardless of currency"),
    pytest.param(fixed(1, 10, plan_codes=frozenset({"other"})), False,
                 id=f"{SPEC}: plan limitation does not apply"),
    pytest.param(fixed(1, 10, metric_codes=frozenset({"other"})), False,
                 id=f"{SPEC}: metric limitation does not apply"),
])
def test_when_a_coupon_is_not_applied(coupon: AppliedCoupon, applied: bool) -> None:
    result = apply_coupons(amounts_of("EUR", [fee(300)]), [coupon], {"s1": "p1"})
    assert bool(result.credits) is applied
    if not applied:
        assert result.coupons == (coupon,)  # nothing consumed


def test_no_fees_no_coupon() -> None:
    """applied_coupons_service.rb: ``return result if invoice.fees_amount_cents.zero?``"""
    result = apply_coupons(amounts_of("EUR", [fee(0)]), [fixed(1, 10)], {})
    assert result.credits == () and result.coupons == (fixed(1, 10),)


def test_coupons_breakdown_scenario() -> None:
    """spec/scenarios/coupons_breakdown_spec.rb: two plans, eight fees, three coupons (metric
    limited, plan limited, unlimited), two taxes; every fee's share and tax, the invoice's
    totals, to the cent."""
    t10, t20 = Tax("banking_rates1", "B1", Decimal("10.0")), Tax("banking_rates2", "B2",
                                                                  Decimal("20.0"))
    rates = (t10, t20, t10, t10)
    fees = [fee(cents, f"bm{4 * s + i + 1}", f"sub{s + 1}", (rates[i],), charge_id=4 * s + i)
            for s in range(2) for i, cents in enumerate((1000, 2000, 3000, 4000))]
    coupons = [fixed(1, 2000, metric_codes=frozenset({"bm1", "bm2"})),
               fixed(2, 1000, plan_codes=frozenset({"plan_code2"})), fixed(3, 500)]
    plans = {"sub1": "plan_code", "sub2": "plan_code2"}
    result = apply_coupons(amounts_of("EUR", fees), coupons, plans)
    got = [(f.precise_coupons_amount_cents, f.taxes_amount_cents) for f in result.amounts.fees]
    assert got == [(Decimal(s), tax) for s, tax in [
        ("676.47059", 32), ("1352.94117", 129), ("88.23529", 291), ("117.64706", 388),
        ("126.47059", 87), ("252.94118", 349), ("379.41176", 262), ("505.88235", 349)]]
    amounts = result.amounts
    assert (amounts.fees_amount_cents, amounts.coupons_amount_cents,
            amounts.sub_total_excluding_taxes_amount_cents, amounts.taxes_amount_cents,
            amounts.total_amount_cents) == (20_000, 3_500, 16_500, 1_889, 18_389)
    assert result.coupons == ()  # three `once` coupons, each used up


def test_a_coupon_across_invoices() -> None:
    """A ``once`` fixed coupon larger than the first invoice is carried, what is left, to the
    next one (applied_coupon.rb ``remaining_amount``); a recurring one counts down."""
    first = apply_coupons(amounts_of("EUR", [fee(300)]), [fixed(1, 500)], {})
    [carried] = first.coupons
    assert carried.remaining_amount == 200
    second = apply_coupons(amounts_of("EUR", [fee(300)]), [carried], {})
    assert second.credits[0].amount_cents == 200 and second.coupons == ()
    coupon = fixed(2, 50, "recurring", frequency_duration_remaining=2)
    for expected_remaining in (1, 0):
        step = apply_coupons(amounts_of("EUR", [fee(300)]), [coupon], {})
        assert step.credits[0].frequency_duration_remaining == expected_remaining
        coupon = step.coupons[0] if step.coupons else coupon
    assert step.coupons == ()
