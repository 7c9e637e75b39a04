"""Progressive billing against real Postgres (tasks/invoicing/progressive.py, §20): a crossing
issues one ``progressive_billing`` invoice however often evaluation reruns, a later crossing
bills the usage since, the period-end invoice deducts what they billed
(``progressive_billing_credit_amount_cents``, lago-api spec/scenarios/invoices/
progressive_billing_spec.rb), the period stays open, and the wallets pay nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.infra import failpoints
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import LagoLifetimeUsage
from tallyflow.tasks.invoicing import (
    bill_all_thresholds,
    bill_thresholds,
    lifetime_usage,
    set_historical_usage,
)
from tallyflow.tasks.webhooks import add_endpoint
from tests.tasks.invoicing.test_invoicing import (
    CLOSE,
    MARCH_END,
    catalog,
    hour,
    ingested_until,
    invoices,
    usage_events,
)
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger, balances

SUB = "sub_acme_001"
WHEN = datetime(2025, 3, 10, 12, tzinfo=UTC)
AT = datetime(2025, 3, 11, tzinfo=UTC)
# each usage_events call: 2M input tokens at $1/M + 2M output at $3/M = 800 cents; the
# organization's 10 % tax applies (tests/tasks/invoicing/test_invoicing.py TAXES)
THRESHOLDS = [{"amount_cents": 500, "threshold_display_name": "first"},
              {"amount_cents": 1000}]


def _by_type(engine: Engine, kind: str) -> list[dict[str, Any]]:
    return sorted((i for i in invoices(engine) if i["invoice_type"] == kind),
                  key=lambda i: i["sequential_id"] or 0)


def test_crossings_bill_once_and_the_period_end_deducts(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "usage_thresholds": THRESHOLDS},
            wallet=False)
    add_endpoint(engine, {"webhook_url": "http://127.0.0.1:9/hooks"})
    assert bill_thresholds(engine, SUB, AT) is None  # no usage yet: below
    usage_events(engine, tmp_path, WHEN)
    first = bill_thresholds(engine, SUB, AT)
    assert first is not None and [t.amount_cents for t in first.thresholds] == [500]
    # a rerun, a second evaluator, a late one: the crossing is billed already
    assert bill_thresholds(engine, SUB, AT) is None
    assert bill_all_thresholds(engine, AT + timedelta(minutes=1)).issued == []
    [progressive] = _by_type(engine, "progressive_billing")
    assert (progressive["fees_amount_cents"], progressive["taxes_amount_cents"],
            progressive["total_amount_cents"]) == (800, 80, 880)
    assert progressive["status"] == "finalized" and progressive["number"] == "TF-001-001"
    assert progressive["progressive_billing_credit_amount_cents"] == 0
    # more usage: 1600 crosses 1000; the invoice bills the usage since (Lago: fees of the
    # whole period so far, less what the last progressive invoice billed)
    usage_events(engine, tmp_path, WHEN, prefix="f")
    second = bill_all_thresholds(engine, AT + timedelta(hours=1)).issued
    assert [[t.amount_cents for t in r.thresholds] for r in second] == [[1000]]
    latest = _by_type(engine, "progressive_billing")[-1]
    with engine.connect() as conn:  # invoice.created, once per progressive invoice
        created = conn.execute(text(
            "select count(*) from webhooks where webhook_type = 'invoice.created'")).scalar()
    assert created == 2
    assert (latest["fees_amount_cents"], latest["progressive_billing_credit_amount_cents"],
            latest["sub_total_excluding_taxes_amount_cents"],
            latest["total_amount_cents"]) == (1600, 800, 800, 880)
    # the period is still open: the close bills it at its end, deducting the 1600 billed
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    assert _by_type(engine, "subscription") == []
    # the draft shows the deduction too (Lago's "with grace period enabled" scenario)
    hour(engine, CLOSE)
    [draft] = _by_type(engine, "subscription")
    assert (draft["status"], draft["progressive_billing_credit_amount_cents"],
            draft["total_amount_cents"]) == ("draft", 1600, 3410)
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, CLOSE)
    [final] = _by_type(engine, "subscription")
    assert final["status"] == "finalized"
    assert (final["fees_amount_cents"], final["progressive_billing_credit_amount_cents"],
            final["taxes_amount_cents"], final["total_amount_cents"]) == (4700, 1600, 310, 3410)
    life = lifetime_usage(engine, SUB, CLOSE)
    assert mismatches(life, LagoLifetimeUsage) == []
    assert life["invoiced_usage_amount_cents"] == 1600
    assert life["current_usage_amount_cents"] == 0
    assert [s["completion_ratio"] for s in life["usage_thresholds"]] == [1.0, 1.0]


def test_wallet_paid_usage_is_not_billed_twice(engine: Engine, tmp_path: Path) -> None:
    """The hourly deduction paid the usage (800): the progressive invoice shows it as prepaid
    and leaves its tax due; the close pays the rest and the wallets end where one invoice
    without progressive billing leaves them."""
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "usage_thresholds": THRESHOLDS[:1]})
    usage_events(engine, tmp_path, WHEN)
    hour(engine, datetime(2025, 3, 10, 13, tzinfo=UTC))  # the hourly deduction takes 800
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500 - 800
    assert bill_thresholds(engine, SUB, AT) is not None
    [progressive] = _by_type(engine, "progressive_billing")
    assert (progressive["prepaid_credit_amount_cents"], progressive["total_amount_cents"],
            progressive["payment_status"]) == (800, 80, "pending")
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500 - 800  # nothing moved
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    hour(engine, CLOSE)
    [final] = _by_type(engine, "subscription")
    # 3100 + 800 of fees, 800 credited, 10 % tax on 3100: 3410, all paid at finalization
    assert (final["progressive_billing_credit_amount_cents"], final["total_amount_cents"],
            final["prepaid_credit_amount_cents"]) == (800, 0, 3410)
    # the wallet paid 800 + 3410, the invoice 80: 4290 = 3900 + 390 of tax, once
    assert balances(engine)["acme/prepaid_credits"]["cents"] == 12500 - 800 - 3410
    assert_balances_match_ledger(engine)


def test_a_crash_before_the_seal_leaves_nothing(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "usage_thresholds": THRESHOLDS},
            wallet=False)
    usage_events(engine, tmp_path, WHEN)

    def boom(*_: Any) -> None:
        raise RuntimeError("killed")

    with failpoints.hooked("progressive.before_seal", boom), pytest.raises(RuntimeError):
        bill_thresholds(engine, SUB, AT)
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from progressive_invoices")).scalar() == 0
    assert bill_thresholds(engine, SUB, AT) is not None  # the retry issues it, once
    assert bill_thresholds(engine, SUB, AT) is None
    assert len(_by_type(engine, "progressive_billing")) == 1


def test_historical_usage_counts_and_subscription_thresholds_override(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "usage_thresholds": THRESHOLDS},
            subscription={"usage_thresholds": [{"amount_cents": 2000}]}, wallet=False)
    usage_events(engine, tmp_path, WHEN)
    assert bill_thresholds(engine, SUB, AT) is None  # 800 < 2000: the plan's 500 is replaced
    life = set_historical_usage(engine, SUB, 1500, AT)
    assert (life["external_historical_usage_amount_cents"],
            life["current_usage_amount_cents"]) == (1500, 800)
    assert life["usage_thresholds"] == [
        {"amount_cents": 2000, "completion_ratio": 1.0, "reached_at": "2025-03-11T00:00:00Z"}]
    issued = bill_thresholds(engine, SUB, AT)
    assert issued is not None and [t.amount_cents for t in issued.thresholds] == [2000]
    with pytest.raises(ValueError):
        set_historical_usage(engine, SUB, -1, AT)
    with pytest.raises(LookupError):
        lifetime_usage(engine, "nobody", AT)


def test_lifetime_usage_alert_counts_across_periods(engine: Engine, tmp_path: Path) -> None:
    """Lago's ``lifetime_usage_amount`` alert: historical + invoiced + current usage; a new
    period does not start it from 0 (unlike current usage)."""
    from tallyflow.tasks.alerts import create_alert, evaluate_alerts

    catalog(engine, tmp_path, plan={"amount_cents": 3100}, wallet=False)
    usage_events(engine, tmp_path, WHEN)
    create_alert(engine, SUB, {"alert_type": "lifetime_usage_amount", "code": "life",
                               "thresholds": [{"code": "a", "value": 800},
                                              {"code": "b", "value": 1500}]})
    assert len(evaluate_alerts(engine, AT).triggered) == 1  # 800: "a"
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, CLOSE)  # March invoiced: 800 of charges
    april = datetime(2025, 4, 10, 12, tzinfo=UTC)
    assert evaluate_alerts(engine, april).triggered == []  # 800 invoiced + 0: nothing new
    set_historical_usage(engine, SUB, 700, april)
    assert len(evaluate_alerts(engine, april + timedelta(minutes=1)).triggered) == 1  # "b"


def test_termination_invoice_deducts_the_progressive_invoice(engine: Engine,
                                                             tmp_path: Path) -> None:
    """Lago's "generates an invoice in the middle of the month and terminates the subscription
    before the end of the month": the termination invoice's fees are the partial plan fee and
    the usage, less what the progressive invoice billed."""
    from tallyflow.tasks.subscriptions import terminate_subscription
    from tests.tasks.subscriptions.test_lifecycle import NOW, T, cycle

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "usage_thresholds": THRESHOLDS},
            wallet=False)
    usage_events(engine, tmp_path, WHEN)
    assert bill_thresholds(engine, SUB, AT) is not None
    terminate_subscription(engine, SUB, T, now=NOW)
    ingested_until(engine, T + timedelta(hours=3))
    cycle(engine, NOW + timedelta(hours=1))
    [final] = _by_type(engine, "subscription")
    # 20 of 31 days of $31 = 2000, usage 800 credited; 10 % tax on 2000
    assert (final["status"], final["fees_amount_cents"],
            final["progressive_billing_credit_amount_cents"],
            final["total_amount_cents"]) == ("finalized", 2800, 800, 2200)
    assert bill_all_thresholds(engine, CLOSE).issued == []


def test_upgrade_invoice_deducts_the_progressive_invoice(engine: Engine,
                                                         tmp_path: Path) -> None:
    """Lago's "generates an invoice in the middle of the month and upgrades the subscription
    before the end of the month": the old plan's invoice deducts what was billed; the new
    plan's row starts with nothing billed progressively."""
    from tallyflow.tasks.subscriptions import change_plan
    from tests.tasks.subscriptions.test_lifecycle import NOW, T, _second_plan, cycle

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "usage_thresholds": THRESHOLDS},
            wallet=False)
    usage_events(engine, tmp_path, WHEN)
    assert bill_thresholds(engine, SUB, AT) is not None
    _second_plan(engine, tmp_path, "pro", 6200)
    change_plan(engine, SUB, "pro", T, now=NOW)
    ingested_until(engine, CLOSE)
    cycle(engine, CLOSE)
    [old] = [i for i in _by_type(engine, "subscription") if i["issuing_date"] == "2025-03-20"]
    # 1..19 March of $31 = 1900, usage 800 credited; 10 % tax on 1900
    assert (old["status"], old["fees_amount_cents"],
            old["progressive_billing_credit_amount_cents"],
            old["total_amount_cents"]) == ("finalized", 2700, 800, 2090)
    assert bill_all_thresholds(engine, CLOSE).issued == []
