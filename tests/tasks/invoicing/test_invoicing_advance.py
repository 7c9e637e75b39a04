"""Plans paid in advance against real Postgres: the start invoice with the first (prorated)
fee, the next billing day's invoice with the next fee plus the previous period's charges in
arrears, reruns converging, finalized invoices unchanged, and termination (the unused days
credited, Lago's default)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tallyflow.tasks.invoicing import list_invoices
from tests.tasks.invoicing.test_invoicing import (
    MARCH_END,
    catalog,
    hour,
    ingested_until,
    invoices,
    usage_events,
)
from tests.tasks.rating_fixtures import SUB
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger

# 15 March 2025, 12:00 in New York (EDT): March has 31 days, 17 of them from the 15th.
START = datetime(2025, 3, 15, 16, tzinfo=UTC)
APRIL_START = MARCH_END + timedelta(microseconds=1)  # 1 April 00:00 EDT
CLOSE = datetime(2025, 4, 1, 8, tzinfo=UTC)


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def fees(invoice: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(f["item"]["type"], f["amount_cents"], f["from_date"]) for f in invoice["fees"]]


def ledger(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(text("select count(*), sum(amount_cents)"
                                       " from wallet_transactions")).one())


def test_fee_in_advance_at_the_start_then_with_the_previous_charges(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True},
            start=START.isoformat())
    hour(engine, START - timedelta(hours=1))
    assert invoices(engine) == []  # not started: nothing billed yet
    # the start: an invoice at once, finalized (it waits for no usage), prorated 17 / 31 days
    summary = hour(engine, START + timedelta(hours=1))
    assert summary["finalized"] == 1
    [first] = invoices(engine)
    assert first["status"] == "finalized" and first["issuing_date"] == "2025-03-15"
    assert fees(first) == [("subscription", 1700, z(START))]
    # the wallet paid it (with the organization's 10 % tax)
    # the start invoice names the subscription and is found by it
    assert [x["external_id"] for x in first["subscriptions"]] == [SUB]
    assert [i["lago_id"] for i in list_invoices(engine, subscription=SUB)] == [first["lago_id"]]
    assert first["prepaid_credit_amount_cents"] == 1870 and first["total_amount_cents"] == 0
    # usage in March, then the billing day: March's charges in arrears and April's fee
    usage_events(engine, tmp_path, datetime(2025, 3, 20, 12, tzinfo=UTC))
    hour(engine, datetime(2025, 3, 31, 12, tzinfo=UTC))
    assert [i["issuing_date"] for i in invoices(engine)] == ["2025-03-15"]
    assert hour(engine, CLOSE)["drafts"] == 1  # the charges wait for the ingest watermark
    draft = invoices(engine)[1]
    assert draft["status"] == "draft" and draft["issuing_date"] == "2025-04-01"
    expected = [("charge", 200, z(START)), ("charge", 600, z(START)),
                ("subscription", 3100, z(APRIL_START))]
    assert fees(draft) == expected
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    assert hour(engine, CLOSE)["finalized"] == 1
    second = invoices(engine)[1]
    assert second["status"] == "finalized" and fees(second) == expected
    assert second["fees_amount_cents"] == 3900
    assert [i["number"] for i in invoices(engine)] == ["TF-001-001", "TF-001-002"]
    # reruns of the same hour and later hours converge: nothing new, nothing changed
    before, money = invoices(engine), ledger(engine)
    for moment in (CLOSE, CLOSE + timedelta(hours=1), datetime(2025, 4, 20, tzinfo=UTC)):
        summary = hour(engine, moment)
        assert summary["drafts"] == 0 and summary["finalized"] == 0
    assert invoices(engine) == before
    assert ledger(engine) == money
    assert_balances_match_ledger(engine)


def test_trial_covering_the_first_period_bills_nothing_at_the_start(
    engine: Engine, tmp_path: Path
) -> None:
    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True,
                                    "trial_period": 20}, start=START.isoformat())
    hour(engine, START + timedelta(hours=1))
    assert invoices(engine) == []  # the trial covers 15..31 March: no fee, no invoice
    ingested_until(engine, MARCH_END + timedelta(hours=3))
    hour(engine, CLOSE)
    [april] = invoices(engine)
    # the trial ends 4 April 12:00: April's fee waits for it
    assert april["issuing_date"] == "2025-04-01" and fees(april) == []
    trial_end = START + timedelta(days=20)
    hour(engine, trial_end + timedelta(hours=1))
    paid = invoices(engine)[1]
    # 4..30 April: 27 of 30 days x 3100 / 30
    assert paid["issuing_date"] == "2025-04-04" and paid["status"] == "finalized"
    assert fees(paid) == [("subscription", 2790, z(APRIL_START))]


def test_termination_bills_the_charges_and_credits_the_unused_days(
    engine: Engine, tmp_path: Path
) -> None:
    """Lago's default ``on_termination_credit_note`` is ``credit``
    (spec/services/subscriptions/terminate_service_spec.rb, "when subscription was paid in
    advance"): the unused days (26..31 March, 6 x 3100 / 31 = 600, plus 10% tax) are credited
    and the termination invoice consumes the note when it is finalized."""
    from tallyflow.tasks.subscriptions import terminate_subscription

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True},
            start=START.isoformat())
    hour(engine, START + timedelta(hours=1))
    usage_events(engine, tmp_path, datetime(2025, 3, 20, 12, tzinfo=UTC))
    end = datetime(2025, 3, 25, 16, tzinfo=UTC)
    now = end + timedelta(hours=1)
    ingested_until(engine, now)
    done = terminate_subscription(engine, SUB, end, now=now)
    assert not done.advance_fee_not_credited and done.credit_note is not None
    note = done.credit_note
    assert (note["credit_amount_cents"], note["taxes_amount_cents"], note["reason"]) == (
        660, 60, "order_cancellation")
    [first, last] = invoices(engine)
    assert fees(first) == [("subscription", 1700, z(START))]
    # charges to the end, no fee in arrears (paid at the start), no April fee
    assert [f[:2] for f in fees(last)] == [("charge", 200), ("charge", 600)]
    ingested_until(engine, CLOSE)
    hour(engine, CLOSE + timedelta(hours=3))
    [_, last] = invoices(engine)
    assert [f[:2] for f in fees(last)] == [("charge", 200), ("charge", 600)]
    # 880 with taxes: the note's 660 first, then the wallet (after taxes, before prepaid)
    assert (last["status"], last["credit_notes_amount_cents"],
            last["prepaid_credit_amount_cents"]) == ("finalized", 660, 220)


def test_upgrade_from_a_plan_paid_in_advance(engine: Engine, tmp_path: Path) -> None:
    """Upgrade on 20 March: the old row's charges and the new plan's first fee (20..31 March)
    on the invoice of the change's day; the old plan's unused days (20..31 March: 12 x 100
    + 10 % tax) are credited by default, as Lago (create_from_termination_spec.rb, upgrade),
    and that invoice consumes the note when it is finalized."""
    from tallyflow.tasks.subscriptions import change_plan
    from tests.tasks.subscriptions.test_lifecycle import _second_plan, cycle

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    change = datetime(2025, 3, 20, 12, tzinfo=UTC)
    now = datetime(2025, 3, 26, 10, tzinfo=UTC)
    cycle(engine, now)
    _second_plan(engine, tmp_path, "pro", 6200)  # also paid in advance
    done = change_plan(engine, SUB, "pro", change, now=now)
    assert done.kind == "upgrade" and not done.advance_fee_not_credited
    assert done.credit_note is not None and done.credit_note["credit_amount_cents"] == 1320
    by_day = {i["issuing_date"]: [f[:2] for f in fees(i)] for i in invoices(engine)}
    assert by_day == {
        "2025-03-01": [("subscription", 3100)],
        # 12 days of 31 at 6200: 2400
        "2025-03-20": [("charge", 200), ("charge", 600), ("subscription", 2400)],
    }
    ingested_until(engine, CLOSE)
    cycle(engine, CLOSE)
    by_day = {i["issuing_date"]: [f[:2] for f in fees(i)] for i in invoices(engine)}
    assert by_day["2025-04-01"] == [("subscription", 6200)]  # no usage after the change
    upgrade_day = next(i for i in invoices(engine) if i["issuing_date"] == "2025-03-20")
    assert (upgrade_day["status"], upgrade_day["credit_notes_amount_cents"]) == (
        "finalized", 1320)
    assert len(by_day) == 3
    assert_balances_match_ledger(engine)


def test_downgrade_between_plans_paid_in_advance(engine: Engine, tmp_path: Path) -> None:
    """A downgrade starts at the period end: 1 April's invoice has March's charges (old row)
    and April's fee of the new plan, not the old one's."""
    from tallyflow.tasks.subscriptions import change_plan
    from tests.tasks.subscriptions.test_lifecycle import _second_plan, cycle

    catalog(engine, tmp_path, plan={"amount_cents": 3100, "pay_in_advance": True})
    usage_events(engine, tmp_path, datetime(2025, 3, 10, 12, tzinfo=UTC), prefix="a")
    now = datetime(2025, 3, 26, 10, tzinfo=UTC)
    cycle(engine, now)
    _second_plan(engine, tmp_path, "basic", 1000)
    done = change_plan(engine, SUB, "basic", datetime(2025, 3, 20, 12, tzinfo=UTC), now=now)
    assert done.kind == "downgrade" and not done.advance_fee_not_credited
    usage_events(engine, tmp_path, datetime(2025, 4, 5, 12, tzinfo=UTC), prefix="c")
    ingested_until(engine, datetime(2025, 5, 1, 8, tzinfo=UTC))
    cycle(engine, CLOSE)
    cycle(engine, datetime(2025, 5, 1, 8, tzinfo=UTC))
    by_day = {i["issuing_date"]: [f[:2] for f in fees(i)] for i in invoices(engine)}
    assert by_day == {
        "2025-03-01": [("subscription", 3100)],
        "2025-04-01": [("charge", 200), ("charge", 600), ("subscription", 1000)],
        "2025-05-01": [("charge", 200), ("charge", 600), ("subscription", 1000)],
    }
    assert all(i["status"] == "finalized" for i in invoices(engine))
    assert_balances_match_ledger(engine)
