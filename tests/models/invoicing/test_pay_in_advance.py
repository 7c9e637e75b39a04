"""Plans paid in advance, table-driven: the fee of the coming period, when it is issued, and
what the closing period still bills in arrears (Lago's ``Fees::SubscriptionService`` with
``plan.pay_in_advance``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tallyflow.models.invoicing import (
    ChargeUsage,
    PeriodInput,
    UsageLine,
    advance_fee,
    advance_fee_cents,
    advance_issued_at,
    invoice_amounts,
    period_fees,
    trial_end,
)
from tallyflow.models.rating.periods import period_containing

D = Decimal


def t(day: str, hour: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def advance_input(
    start: datetime, at: datetime, *, billing_time: str = "calendar", amount: str = "3100",
    trial_days: str | None = None, terminated_at: datetime | None = None,
    commitment: str | None = None, charges: tuple[ChargeUsage, ...] = (), tz: str = "UTC",
) -> PeriodInput:
    """The period holding ``at`` of a plan paid in advance, as the close builds it."""
    period = period_containing(at, "monthly", billing_time, start, tz, terminated_at)
    ends = trial_end(start, D(trial_days) if trial_days else None)
    zone = ZoneInfo(tz)
    return PeriodInput(
        external_subscription_id="sub", plan_code="pro", plan_name="Pro",
        plan_invoice_display_name=None, amount_cents=D(amount), trial_end=ends,
        trial_end_date=ends.astimezone(zone).date() if ends else None,
        minimum_commitment_cents=D(commitment) if commitment else None,
        plan_tax_codes=(), start_date=period.start_date, end_date=period.end_date,
        from_date=period.from_datetime.astimezone(zone).date(),
        to_date=period.to_datetime.astimezone(zone).date(),
        from_datetime=period.from_datetime, to_datetime=period.to_datetime, charges=charges,
        pay_in_advance=True, period_end=period.period_end,
    )


ADVANCE_FEES = [
    # (id, start, a moment in the period, billing_time, amount, trial days, expected cents,
    #  issued at)
    ("calendar-full-period", t("2026-01-01"), t("2026-03-10"), "calendar", "3100", None,
     "3100", t("2026-03-01")),
    # started 15 March 10:00: 17 of 31 days at Lago's single-day price 3100/31, issued at once
    ("calendar-first-partial", t("2026-03-15", 10), t("2026-03-20"), "calendar", "3100", None,
     "1700", t("2026-03-15", 10)),
    # February 2026: 9 of 28 days
    ("calendar-first-partial-february", t("2026-02-20"), t("2026-02-21"), "calendar", "2800",
     None, "900", t("2026-02-20")),
    # anniversary periods are whole from the first day: no proration
    ("anniversary-first", t("2026-03-15", 10), t("2026-03-20"), "anniversary", "3100", None,
     "3100", t("2026-03-15", 10)),
    ("anniversary-next", t("2026-03-15", 10), t("2026-04-20"), "anniversary", "3100", None,
     "3100", t("2026-04-15")),
    # a trial covering the whole period: nothing billed, no invoice for it
    ("trial-covers-period", t("2026-03-01"), t("2026-03-20"), "calendar", "3100", "40", "0",
     None),
    # a 10-day trial from 1 March: billed when it ends (11 March), days 11..31 only
    ("trial-ends-inside", t("2026-03-01"), t("2026-03-20"), "calendar", "3100", "10", "2100",
     t("2026-03-11")),
    ("trial-over", t("2026-01-01"), t("2026-03-20"), "calendar", "3100", "10", "3100",
     t("2026-03-01")),
    # the trial ends in the first partial period of a calendar plan: 21..31 March
    ("trial-in-first-partial", t("2026-03-15"), t("2026-03-20"), "calendar", "3100", "6",
     "1100", t("2026-03-21")),
    ("free-plan", t("2026-03-15"), t("2026-03-20"), "calendar", "0", None, "0",
     t("2026-03-15")),
]


@pytest.mark.parametrize(("start", "at", "billing_time", "amount", "trial", "cents", "issued"),
                         [c[1:] for c in ADVANCE_FEES], ids=[c[0] for c in ADVANCE_FEES])
def test_advance_fee(start: datetime, at: datetime, billing_time: str, amount: str,
                     trial: str | None, cents: str, issued: datetime | None) -> None:
    period = advance_input(start, at, billing_time=billing_time, amount=amount,
                           trial_days=trial)
    assert advance_fee_cents(period) == D(cents)
    if cents != "0":
        assert advance_issued_at(period) == issued
    fee = advance_fee(period, (), {})
    if cents == "0":
        assert fee is None  # Lago persists no zero fee
        return
    assert fee is not None
    assert (fee.item_type, fee.amount_cents, fee.units) == ("subscription", int(cents), 1)
    # the fee covers the coming period: from its start to its nominal end
    assert fee.from_datetime == period.from_datetime
    assert fee.to_datetime == period.period_end


def test_a_termination_does_not_change_the_fee_billed_at_the_start() -> None:
    """Billed for the whole period when it started; Tallyflow issues no credit note for the
    unused part (docs/invoices.md), so the cut-short period's fee is the full one."""
    cut = advance_input(t("2026-01-01"), t("2026-03-05"), terminated_at=t("2026-03-10"))
    assert cut.to_date < cut.end_date
    assert advance_fee_cents(cut) == D(3100)
    assert advance_issued_at(cut) == t("2026-03-01")


def test_the_closing_period_bills_charges_only() -> None:
    usage = ChargeUsage(7, "tokens", "Tokens", None, D(0), (),
                        (UsageLine(D(10), 3, 500, D(500)),))
    period = advance_input(t("2026-01-01"), t("2026-02-10"), charges=(usage,))
    fees = period_fees(period, (), {})
    assert [(f.item_type, f.amount_cents) for f in fees] == [("charge", 500)]
    arrears = replace(period, pay_in_advance=False)
    assert [(f.item_type, f.amount_cents) for f in period_fees(arrears, (), {})] == [
        ("subscription", 3100), ("charge", 500)]


COMMITMENTS = [
    # (id, amount, usage cents, commitment, expected commitment fee): the fee paid in advance
    # for the period counts toward its minimum commitment
    ("below", "3100", 0, "5000", 1900),
    ("usage-fills-it", "3100", 2000, "5000", 0),
    ("fee-alone-above", "6000", 0, "5000", None),
]


@pytest.mark.parametrize(("amount", "usage", "commitment", "expected"),
                         [c[1:] for c in COMMITMENTS], ids=[c[0] for c in COMMITMENTS])
def test_commitment_counts_the_fee_paid_in_advance(
    amount: str, usage: int, commitment: str, expected: int | None,
) -> None:
    lines = (UsageLine(D(1), 1, usage, D(usage)),) if usage else ()
    charge = ChargeUsage(7, "tokens", "Tokens", None, D(0), (), lines)
    period = advance_input(t("2026-01-01"), t("2026-02-10"), amount=amount,
                           commitment=commitment, charges=(charge,))
    got = [f.amount_cents for f in period_fees(period, (), {}) if f.item_type == "commitment"]
    assert got == ([] if expected in (None, 0) else [expected])


def test_billing_day_invoice_has_previous_charges_and_next_fee() -> None:
    """On 1 March: February's charges in arrears and March's fee in advance, one invoice."""
    usage = ChargeUsage(7, "tokens", "Tokens", None, D(0), (),
                        (UsageLine(D(10), 3, 500, D(500)),))
    february = advance_input(t("2026-01-01"), t("2026-02-10"), charges=(usage,))
    march = advance_input(t("2026-01-01"), t("2026-03-01"))
    amounts = invoice_amounts("USD", [february], (), {}, advance=[march])
    assert [(f.item_type, f.amount_cents, f.from_datetime) for f in amounts.fees] == [
        ("charge", 500, t("2026-02-01")), ("subscription", 3100, t("2026-03-01"))]
    assert amounts.fees_amount_cents == 3600
    # the first invoice of a subscription started mid-month: its prorated fee only
    first = advance_input(t("2026-03-15", 10), t("2026-03-15", 10))
    start = invoice_amounts("USD", [], (), {}, advance=[first])
    assert [(f.item_type, f.amount_cents) for f in start.fees] == [("subscription", 1700)]
