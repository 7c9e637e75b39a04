"""Progressive billing's pure rules (models/progressive.py) against Lago's own specs: which
thresholds a lifetime usage passes (``check_service.rb``) at their edges, and the invoices of
``spec/scenarios/invoices/progressive_billing_spec.rb`` reproduced to the cent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tallyflow.models.invoicing import InvoiceFee, Tax, amounts_of
from tallyflow.models.progressive import (
    LifetimeUsage,
    Threshold,
    applicable_thresholds,
    fee_key,
    prepaid_shown,
    progressive_credit,
    progressive_invoice,
    thresholds_passed,
)

T0 = datetime(2022, 12, 1, tzinfo=UTC)
T1 = datetime(2022, 12, 31, 23, 59, 59, tzinfo=UTC)
SPEC = "spec/scenarios/invoices/progressive_billing_spec.rb"


def charge(cents: int, charge_id: int = 1, taxes: tuple[Tax, ...] = ()) -> InvoiceFee:
    return InvoiceFee("charge", "s1", "m", "m", None, None, {}, Decimal(cents), 1, cents,
                      Decimal(cents), T0, T1, taxes=taxes, charge_id=charge_id)


def plan_fee(cents: int) -> InvoiceFee:
    return InvoiceFee("subscription", "s1", "p", "p", None, None, {}, Decimal(1), 0, cents,
                      Decimal(cents), T0, T1)


def passed(thresholds: list[Threshold], current: int, billed: int = 0, invoiced: int = 0,
           historical: int = 0) -> list[int]:
    usage = LifetimeUsage(historical, invoiced, current)
    return [t.amount_cents for t in thresholds_passed(thresholds, usage, billed)]


FIXED = [Threshold(200), Threshold(500)]
WITH_RECURRING = [*FIXED, Threshold(1000, recurring=True)]

# (thresholds, current usage, billed by the period's last progressive invoice, invoiced usage,
#  historical, passed)
EDGES = [
    pytest.param(FIXED, 199, 0, 0, 0, [], id="below"),
    pytest.param(FIXED, 200, 0, 0, 0, [200], id="at"),
    pytest.param(FIXED, 201, 0, 0, 0, [200], id="above"),
    pytest.param(FIXED, 600, 0, 0, 0, [200, 500], id="two-at-once"),
    pytest.param(FIXED, 600, 220, 0, 0, [500], id="first-already-billed"),
    pytest.param(FIXED, 210, 220, 0, 0, [], id="usage-below-billed"),
    pytest.param(FIXED, 100, 0, 0, 150, [200], id="historical-counts"),
    pytest.param(FIXED, 100, 0, 600, 0, [], id="invoiced-beyond-all-fixed"),
    pytest.param(WITH_RECURRING, 1499, 0, 0, 0, [200, 500], id="recurring-below"),
    pytest.param(WITH_RECURRING, 1500, 0, 0, 0, [200, 500, 1000], id="recurring-at"),
    # past every fixed one: the usage not billed + the invoiced remainder over the step
    pytest.param(WITH_RECURRING, 2200, 880, 0, 0, [1000], id="recurring-again"),
    pytest.param(WITH_RECURRING, 719, 0, 5280, 0, [], id="recurring-new-period-below"),
    pytest.param(WITH_RECURRING, 720, 0, 5280, 0, [1000], id="recurring-new-period-at"),
    # several steps in one hour: one crossing, one invoice (Lago's)
    pytest.param([Threshold(100, recurring=True)], 550, 0, 0, 0, [100], id="recurring-many"),
    pytest.param([], 10**9, 0, 0, 0, [], id="none"),
]


@pytest.mark.parametrize(("thresholds", "current", "billed", "invoiced", "historical",
                          "expected"), EDGES)
def test_thresholds_passed_at_the_edges(thresholds: list[Threshold], current: int,
                                        billed: int, invoiced: int, historical: int,
                                        expected: list[int]) -> None:
    assert passed(thresholds, current, billed, invoiced, historical) == expected


def _invoice_steps(thresholds: list[Threshold], usages: list[int],
                   invoiced: int = 0) -> list[int | None]:
    """Lago's scenario: at each usage, the progressive invoice's total (None: no invoice)."""
    billed: dict[object, int] = {}
    last_fees = 0
    out: list[int | None] = []
    for usage in usages:
        if not thresholds_passed(thresholds, LifetimeUsage(0, invoiced, usage), last_fees):
            out.append(None)
            continue
        amounts = progressive_invoice("USD", [charge(usage)], billed, last_fees)
        out.append(amounts.sub_total_including_taxes_amount_cents)
        last_fees = amounts.fees_amount_cents
        billed = {fee_key(f): f.amount_cents for f in amounts.fees}
    return out


def test_lago_scenario_single_and_recurring_thresholds() -> None:
    """``SPEC`` "generates correct invoices when there is a combination of single thresholds
    and recurring": thresholds 200, 500, 700 and 1000 recurring; events of 220 and 2200."""
    thresholds = [Threshold(200), Threshold(500), Threshold(700),
                  Threshold(1000, recurring=True)]
    usages = [220, 440, 660, 880, 3080, 5280]
    assert _invoice_steps(thresholds, usages) == [220, None, 440, 220, 2200, 2200]
    # the period end: plan fee 3100 + the charge fee 5280, less the 5280 already billed
    final = progressive_credit(amounts_of("USD", [plan_fee(3100), charge(5280)]),
                               {fee_key(charge(5280)): 5280}, 5280)
    assert final.progressive_billing_credit_amount_cents == 5280
    assert final.sub_total_including_taxes_amount_cents == 3100
    # next period: 5280 invoiced, 2200 of usage passes the recurring step
    assert _invoice_steps(thresholds, [2200], invoiced=5280) == [2200]


def test_lago_scenario_multiple_thresholds_in_a_period() -> None:
    """``SPEC`` "generates invoices for multiple usage thresholds within the same billing
    period": 20000 and 50000; usage 20000, 40000, 60000; the period end credits 60000."""
    assert _invoice_steps([Threshold(20000), Threshold(50000)],
                          [20000, 40000, 60000]) == [20000, None, 40000]
    final = progressive_credit(amounts_of("USD", [plan_fee(3100), charge(60000)]),
                               {fee_key(charge(60000)): 60000}, 60000)
    assert (final.fees_amount_cents, final.progressive_billing_credit_amount_cents,
            final.sub_total_including_taxes_amount_cents) == (63100, 60000, 3100)


def test_lago_scenario_middle_of_month_then_period_end() -> None:
    """``SPEC`` "generates an invoice in the middle of the month and a final invoice at the
    end of the month": 20000 billed, 40000 at the end: fees 3100 + 40000, total 3100 +
    20000, progressive_billing_credit_amount_cents 20000."""
    assert _invoice_steps([Threshold(20000)], [20000, 40000]) == [20000, None]
    final = progressive_credit(amounts_of("USD", [plan_fee(3100), charge(40000)]),
                               {fee_key(charge(20000)): 20000}, 20000)
    assert final.fees_amount_cents == 31_00 + 40_000
    assert final.progressive_billing_credit_amount_cents == 20_000
    assert final.sub_total_including_taxes_amount_cents == 31_00 + 20_000


def test_credit_comes_before_taxes() -> None:
    vat = Tax("vat", "VAT", Decimal(20), False)
    final = progressive_credit(amounts_of("USD", [charge(1000, taxes=(vat,))]),
                               {fee_key(charge(400)): 400}, 400)
    assert final.taxes_amount_cents == 120  # 20% of 600
    assert final.sub_total_including_taxes_amount_cents == 720


def test_credit_capped_at_the_charge_fees() -> None:
    # a void lowered the usage below what was billed: the credit stops at the fees
    final = progressive_credit(amounts_of("USD", [plan_fee(100), charge(300)]),
                               {fee_key(charge(500)): 500}, 500)
    assert final.progressive_billing_credit_amount_cents == 300
    assert final.sub_total_including_taxes_amount_cents == 100


def test_subscription_thresholds_override_the_plans() -> None:
    plan = {"usage_thresholds": [{"amount_cents": 100}]}
    own = {"usage_thresholds": [{"amount_cents": 5, "recurring": True,
                                 "threshold_display_name": "step"}]}
    assert applicable_thresholds({}, plan) == (Threshold(100),)
    assert applicable_thresholds(own, plan) == (Threshold(5, True, "step"),)


@pytest.mark.parametrize(("owed", "deducted", "shown", "expected"), [
    (500, 0, 0, 0), (500, 200, 0, 200), (500, 900, 0, 500), (500, 900, 600, 300),
    (500, 100, 300, 0),
])
def test_prepaid_shown(owed: int, deducted: int, shown: int, expected: int) -> None:
    assert prepaid_shown(owed, deducted, shown) == expected
