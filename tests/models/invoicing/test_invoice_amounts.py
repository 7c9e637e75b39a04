"""Lago's invoice rules, table-driven: proration, trials, minimums, commitments, taxes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from tallyflow.models.invoicing import (
    ChargeUsage,
    PeriodInput,
    Tax,
    TaxError,
    UsageLine,
    applicable_taxes,
    invoice_amounts,
    period_fees,
    subscription_fee_cents,
    trial_end,
)
from tallyflow.models.rating.periods import period_containing

D = Decimal
VAT = Tax("vat", "VAT", D("20"))
LOW = Tax("low", "Reduced", D("5.5"))
ORG = Tax("org", "Org default", D("10"), applied_to_organization=True)
TAXES = {t.code: t for t in (VAT, LOW, ORG)}


def period_input(
    start: datetime, at: datetime, *, billing_time: str = "calendar", amount: str = "3100",
    trial_days: str | None = None, commitment: str | None = None, plan_taxes: tuple[str, ...] = (),
    charges: tuple[ChargeUsage, ...] = (), tz: str = "UTC", interval: str = "monthly",
) -> PeriodInput:
    period = period_containing(at, interval, billing_time, start, tz)
    ends = trial_end(start, D(trial_days) if trial_days else None)
    from zoneinfo import ZoneInfo
    zone = ZoneInfo(tz)
    return PeriodInput(
        external_subscription_id="sub", plan_code="pro", plan_name="Pro",
        plan_invoice_display_name=None, amount_cents=D(amount), trial_end=ends,
        trial_end_date=ends.astimezone(zone).date() if ends else None,
        minimum_commitment_cents=D(commitment) if commitment else None,
        plan_tax_codes=plan_taxes, start_date=period.start_date, end_date=period.end_date,
        from_date=period.from_datetime.astimezone(zone).date(),
        to_date=period.to_datetime.astimezone(zone).date(),
        from_datetime=period.from_datetime, to_datetime=period.to_datetime, charges=charges,
    )


def t(day: str, hour: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


SUBSCRIPTION_FEES = [
    # (id, subscription start, a moment in the period, billing_time, amount, trial, expected)
    ("full-month", t("2026-01-01"), t("2026-03-10"), "calendar", "3100", None, "3100"),
    # started 15 March (mid-day): 17 of 31 days at 3100/31 = 100 a day
    ("calendar-first-partial", t("2026-03-15", 10), t("2026-03-20"), "calendar", "3100", None,
     "1700"),
    # February 2026 has 28 days: started on the 20th, 9 days x 2800/28
    ("calendar-february", t("2026-02-20"), t("2026-02-21"), "calendar", "2800", None, "900"),
    # anniversary periods are whole from the first day on
    ("anniversary-first", t("2026-03-15", 10), t("2026-03-20"), "anniversary", "3100", None,
     "3100"),
    ("trial-covers-period", t("2026-03-01"), t("2026-03-20"), "calendar", "3100", "40", "0"),
    # 10-day trial from 1 March ends 11 March: 21 days (11..31) x 100
    ("trial-ends-inside", t("2026-03-01"), t("2026-03-20"), "calendar", "3100", "10", "2100"),
    # trial over before this period: full amount
    ("trial-over", t("2026-01-01"), t("2026-03-20"), "calendar", "3100", "10", "3100"),
    ("free-plan", t("2026-03-15"), t("2026-03-20"), "calendar", "0", None, "0"),
    ("jpy-like-whole-units", t("2026-03-15"), t("2026-03-20"), "calendar", "31000", None,
     "17000"),
]


@pytest.mark.parametrize(("start", "at", "billing_time", "amount", "trial", "expected"),
                         [c[1:] for c in SUBSCRIPTION_FEES], ids=[c[0] for c in SUBSCRIPTION_FEES])
def test_subscription_fee(start: datetime, at: datetime, billing_time: str, amount: str,
                          trial: str | None, expected: str) -> None:
    period = period_input(start, at, billing_time=billing_time, amount=amount, trial_days=trial)
    assert subscription_fee_cents(period) == D(expected)


def test_subscription_fee_is_rounded_half_up() -> None:
    period = period_input(t("2026-03-15"), t("2026-03-20"), amount="1000")
    fees = period_fees(period, (), {})
    assert [f.amount_cents for f in fees] == [548]


def line(amount: int, units: str = "1", events: int = 1, name: str | None = None,
         group: dict[str, str | None] | None = None) -> UsageLine:
    return UsageLine(D(units), events, amount, D(amount), name, group or {})


def charge(*lines: UsageLine, minimum: str = "0", taxes: tuple[str, ...] = ()) -> ChargeUsage:
    return ChargeUsage(1, "tokens", "Tokens", None, D(minimum), taxes, tuple(lines))


CHARGE_CASES = [
    # (id, charge, subscription start, expected fee amounts in order)
    ("zero-fees-left-out", charge(line(500, name="small"), line(0, "0", 0, name="large")),
     t("2026-01-01"), [3100, 500]),
    ("zero-amount-with-units-kept", charge(line(0, "5", 5)), t("2026-01-01"), [3100, 0]),
    ("groups-each-a-fee", charge(line(100, group={"model": "a"}), line(200, group={"model": "b"})),
     t("2026-01-01"), [3100, 100, 200]),
    ("minimum-true-up", charge(line(300), minimum="1000"), t("2026-01-01"), [3100, 300, 700]),
    ("minimum-reached", charge(line(1300), minimum="1000"), t("2026-01-01"), [3100, 1300]),
    # 17 of 31 days: minimum 3100 prorated to 1700, usage 200 -> true-up 1500
    ("minimum-prorated", charge(line(200), minimum="3100"), t("2026-03-15"), [1700, 200, 1500]),
    ("minimum-without-usage", charge(line(0, "0", 0), minimum="1000"), t("2026-01-01"),
     [3100, 1000]),
]


@pytest.mark.parametrize(("usage", "start", "expected"), [c[1:] for c in CHARGE_CASES],
                         ids=[c[0] for c in CHARGE_CASES])
def test_charge_fees(usage: ChargeUsage, start: datetime, expected: list[int]) -> None:
    period = period_input(start, t("2026-03-20"), charges=(usage,))
    assert [f.amount_cents for f in period_fees(period, (), {})] == expected


COMMITMENTS = [
    # (id, plan amount, usage, commitment, subscription start, expected commitment fee)
    ("below", "1000", 500, "5000", t("2026-01-01"), 3500),
    ("above", "1000", 5000, "5000", t("2026-01-01"), None),
    ("exactly", "1000", 4000, "5000", t("2026-01-01"), None),
    # 17 of 31 days: 6200 prorated to 3400; subscription fee 17 x 100 = 1700 + usage 500
    ("prorated", "3100", 500, "6200", t("2026-03-15"), 1200),
]


@pytest.mark.parametrize(("amount", "usage", "commitment", "start", "expected"),
                         [c[1:] for c in COMMITMENTS], ids=[c[0] for c in COMMITMENTS])
def test_minimum_commitment(amount: str, usage: int, commitment: str, start: datetime,
                            expected: int | None) -> None:
    period = period_input(start, t("2026-03-20"), amount=amount, commitment=commitment,
                          charges=(charge(line(usage)),))
    fees = [f for f in period_fees(period, (), {}) if f.item_type == "commitment"]
    assert [f.amount_cents for f in fees] == ([] if expected is None else [expected])


PRECEDENCE = [
    # (id, charge codes, plan codes, customer codes, expected)
    ("charge-wins", ("low",), ("vat",), ("vat",), ["low"]),
    ("plan-next", (), ("vat",), ("low",), ["vat"]),
    ("customer-next", (), (), ("low",), ["low"]),
    ("organization-default", (), (), (), ["org"]),
    ("several", ("vat", "low"), (), (), ["vat", "low"]),
]


@pytest.mark.parametrize(("charge_codes", "plan_codes", "customer_codes", "expected"),
                         [c[1:] for c in PRECEDENCE], ids=[c[0] for c in PRECEDENCE])
def test_tax_precedence(charge_codes: tuple[str, ...], plan_codes: tuple[str, ...],
                        customer_codes: tuple[str, ...], expected: list[str]) -> None:
    taxes = applicable_taxes([charge_codes, plan_codes, customer_codes], TAXES)
    assert [x.code for x in taxes] == expected


def test_no_default_tax_means_no_tax() -> None:
    assert applicable_taxes([(), (), ()], {"vat": VAT}) == ()


def test_unknown_tax_code_is_refused() -> None:
    with pytest.raises(TaxError, match="nope"):
        applicable_taxes([("nope",)], TAXES)


TAX_ROUNDING = [
    # (id, fee amounts, tax codes, expected fee taxes, expected invoice taxes)
    # 5.5 % of 333 = 18.315 -> fee 18; three fees: 54.945 -> invoice 55 (not 3 x 18 = 54)
    ("precise-sum-rounded-once", [333, 333, 333], ("low",), [18, 18, 18], 55),
    ("half-up", [10], ("low",), [1], 1),  # 0.55 -> 1
    ("vat", [1000, 2345], ("vat",), [200, 469], 669),
    ("two-taxes", [1000], ("vat", "low"), [255], 255),
]


@pytest.mark.parametrize(("amounts", "codes", "fee_taxes", "invoice_taxes"),
                         [c[1:] for c in TAX_ROUNDING], ids=[c[0] for c in TAX_ROUNDING])
def test_tax_rounding(amounts: list[int], codes: tuple[str, ...], fee_taxes: list[int],
                      invoice_taxes: int) -> None:
    usage = charge(*(line(a, group={"g": str(i)}) for i, a in enumerate(amounts)), taxes=codes)
    period = period_input(t("2026-01-01"), t("2026-03-20"), amount="0", charges=(usage,))
    invoice = invoice_amounts("USD", [period], (), TAXES)
    assert [f.taxes_amount_cents for f in invoice.fees] == fee_taxes
    assert invoice.taxes_amount_cents == invoice_taxes
    assert invoice.sub_total_including_taxes_amount_cents == sum(amounts) + invoice_taxes


def test_totals_and_prepaid_credits_up_to_the_total() -> None:
    period = period_input(t("2026-01-01"), t("2026-03-20"), plan_taxes=("vat",),
                          charges=(charge(line(900)),))
    invoice = invoice_amounts("USD", [period], (), TAXES)
    assert invoice.fees_amount_cents == 4000
    assert invoice.taxes_amount_cents == 800
    assert invoice.sub_total_excluding_taxes_amount_cents == 4000
    assert invoice.total_amount_cents == 4800
    assert invoice.with_prepaid(1000).total_amount_cents == 3800
    assert invoice.with_prepaid(99999).prepaid_credit_amount_cents == 4800
    assert invoice.with_prepaid(99999).total_amount_cents == 0
    assert [a.amount_cents for a in invoice.applied_taxes] == [800]


def test_jpy_amounts_are_whole_yen() -> None:
    # JPY has no minor unit: 1000 yen a month, first period from 15 March = 17/31 -> 548.39 -> 548
    period = period_input(t("2026-03-15"), t("2026-03-20"), amount="1000", plan_taxes=("vat",))
    invoice = invoice_amounts("JPY", [period], (), TAXES)
    assert [f.amount_cents for f in invoice.fees] == [548]
    assert invoice.taxes_amount_cents == 110  # 109.6 -> 110
    assert invoice.total_amount_cents == 658


def test_customer_timezone_sets_the_days() -> None:
    # 15 March 02:00 UTC is 14 March in New York: 18 days of the New York March
    start = t("2026-03-15", 2)
    period = period_input(start, t("2026-03-20"), tz="America/New_York")
    assert (period.from_date, period.to_date) == (date(2026, 3, 14), date(2026, 3, 31))
    assert subscription_fee_cents(period) == D(1800)


def test_trial_end_keeps_fractional_days_exact() -> None:
    assert trial_end(t("2026-03-01"), D("1.5")) == t("2026-03-02") + timedelta(hours=12)
    assert trial_end(t("2026-03-01"), D("0")) is None


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(
    amount=st.integers(0, 10**9), usage=st.lists(st.integers(0, 10**7), max_size=5),
    minimum=st.integers(0, 10**6), commitment=st.integers(0, 10**8),
    start_day=st.integers(1, 28), rate=st.decimals("0", "50", places=3),
    prepaid=st.integers(0, 10**9),
)
def test_invoice_invariants(amount: int, usage: list[int], minimum: int, commitment: int,
                            start_day: int, rate: Decimal, prepaid: int) -> None:
    """Whatever the plan: fees are whole and non-negative; the charge reaches its prorated
    minimum and the subscription its prorated commitment (within the rounding of a minor
    unit); totals add up; prepaid credits never exceed what is owed."""
    usage_charge = charge(*(line(a, group={"g": str(i)}) for i, a in enumerate(usage)),
                          minimum=str(minimum), taxes=("t",))
    period = period_input(t(f"2026-03-{start_day:02d}"), t("2026-03-28"), amount=str(amount),
                          commitment=str(commitment) if commitment else None,
                          charges=(usage_charge,))
    invoice = invoice_amounts("USD", [period], (), {"t": Tax("t", "T", rate)})
    assert all(f.amount_cents >= 0 for f in invoice.fees)
    days, full = period.billed_days, period.period_days
    charge_total = sum(f.amount_cents for f in invoice.fees if f.item_type == "charge")
    assert charge_total >= D(minimum * days) / full - D("0.5")
    assert invoice.fees_amount_cents >= D(commitment * days) / full - D("1")
    assert invoice.sub_total_including_taxes_amount_cents == (
        invoice.fees_amount_cents + invoice.taxes_amount_cents)
    settled = invoice.with_prepaid(prepaid)
    assert 0 <= settled.total_amount_cents <= invoice.sub_total_including_taxes_amount_cents
    assert settled.prepaid_credit_amount_cents + settled.total_amount_cents == (
        invoice.sub_total_including_taxes_amount_cents)
