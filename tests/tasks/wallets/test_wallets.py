"""The usage ledger: deltas, priorities, overflow, corrections, and convergence under reruns,
concurrent runs and crashes (real Postgres, no Prefect)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Connection, Engine, text

from tallyflow.infra import failpoints
from tallyflow.tasks import wallets as w
from tests.tasks.wallets.test_wallets_support import (
    AS_OF,
    WalletSpec,
    assert_balances_match_ledger,
    balances,
    ledger,
    run_once,
    seed,
    set_usage,
    usage_deducted_cents,
)


def test_same_hour_three_times_is_one_run(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main", paid="10", granted="5")]})
    set_usage(engine, "a", 250)
    first = run_once(engine)
    assert first["transactions"] == 1
    once = ledger(engine)
    for _ in range(2):
        assert run_once(engine)["transactions"] == 0
    assert ledger(engine) == once
    b = balances(engine)["a/main"]
    # 15 credits - 2.5; granted credits are consumed first.
    assert b["credits"] == Decimal("12.5") and b["cents"] == Decimal(1250)
    assert b["granted"] == Decimal("2.5") and b["consumed"] == Decimal("2.5")
    assert b["consumed_cents"] == Decimal(250)
    assert_balances_match_ledger(engine)


def test_priority_then_oldest_and_overflow_goes_negative(engine: Engine) -> None:
    seed(engine, {"a": [
        WalletSpec("old", granted="10", priority=2),
        WalletSpec("first", granted="5", priority=1),
        WalletSpec("young", granted="3", priority=2),
    ]})
    set_usage(engine, "a", 2000)
    result = run_once(engine)
    b = balances(engine)
    assert b["a/first"]["credits"] == 0 and b["a/old"]["credits"] == 0
    assert b["a/young"]["credits"] == Decimal(-2) and b["a/young"]["cents"] == Decimal(-200)
    [negative] = result["batches"][0].negative
    assert (negative.wallet_code, negative.credits_balance, negative.overflow_cents) == (
        "young", "-2.00000", 200,
    )
    assert usage_deducted_cents(engine, "a") == 2000
    assert_balances_match_ledger(engine)


def test_late_usage_deducts_only_the_difference(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("main", granted="100")]})
    set_usage(engine, "a", 100)
    run_once(engine)
    set_usage(engine, "a", 175, as_of=AS_OF + timedelta(hours=1))  # a late event for 10:00
    later = run_once(engine, AS_OF + timedelta(hours=1))
    assert later["transactions"] == 1
    with engine.connect() as conn:
        amounts = conn.execute(text(
            "select amount_cents from wallet_transactions where source = 'usage' order by id"
        )).scalars().all()
    assert amounts == [100, 75]
    assert usage_deducted_cents(engine, "a") == 175
    assert balances(engine)["a/main"]["credits"] == Decimal("98.25")


def test_lowered_usage_is_an_inbound_correction_last_consumed_first(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("one", granted="3", priority=1),
                        WalletSpec("two", paid="10", priority=2)]})
    set_usage(engine, "a", 500)
    run_once(engine)
    assert balances(engine)["a/two"]["credits"] == Decimal(8)
    set_usage(engine, "a", 250)
    result = run_once(engine)
    assert result["batches"][0].corrections == 2
    with engine.connect() as conn:
        rows = conn.execute(text(
            "select w.code, t.direction, t.amount_cents from wallet_transactions t"
            " join wallets w on w.id = t.wallet_id where t.source = 'usage' order by t.id"
        )).all()
    assert [tuple(r) for r in rows[:2]] == [("one", "outbound", 300), ("two", "outbound", 200)]
    # Refunded in reverse consumption order: all of "two", then the rest from "one".
    assert sorted(tuple(r) for r in rows[2:]) == [("one", "inbound", 50), ("two", "inbound", 200)]
    b = balances(engine)
    assert b["a/one"]["credits"] == Decimal("0.5") and b["a/two"]["credits"] == Decimal(10)
    assert usage_deducted_cents(engine, "a") == 250
    # Back up again: a new revision of keys, not a collision with the first posting.
    set_usage(engine, "a", 500)
    run_once(engine)
    assert usage_deducted_cents(engine, "a") == 500
    assert_balances_match_ledger(engine)


def test_money_sums_match_usage_to_the_cent(engine: Engine) -> None:
    customers = {
        f"c{i}": [WalletSpec("x", granted="0.07", rate="3", priority=1),
                  WalletSpec("y", paid="7", rate="0.7", priority=2)]
        for i in range(12)
    }
    seed(engine, customers)
    amounts = {f"c{i}": 1 + i * 37 for i in range(12)}
    for customer, cents in amounts.items():
        set_usage(engine, customer, cents)
    run_once(engine)
    for customer, cents in amounts.items():
        assert usage_deducted_cents(engine, customer) == cents
    with engine.connect() as conn:
        scales = conn.execute(text(
            "select distinct scale(credits) <= 5 and scale(amount_cents) = 0"
            " from wallet_transactions"
        )).scalars().all()
    assert scales == [True]
    assert_balances_match_ledger(engine)


def _expected_after_one_run(engine: Engine, customers: int) -> None:
    for i in range(customers):
        assert usage_deducted_cents(engine, f"c{i}") == 100 + i
    with engine.connect() as conn:
        revisions = conn.execute(text(
            "select distinct revision from wallet_usage_positions")).scalars().all()
    assert revisions == [1]  # one posting per (subscription, period): nothing doubled
    assert_balances_match_ledger(engine)


def _many(engine: Engine, customers: int) -> None:
    seed(engine, {f"c{i}": [WalletSpec("a", granted="1", priority=1),
                            WalletSpec("b", granted="50", priority=2)]
                  for i in range(customers)})
    for i in range(customers):
        set_usage(engine, f"c{i}", 100 + i)


def test_two_concurrent_runs_give_the_ledger_of_one(engine: Engine) -> None:
    _many(engine, 40)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            run_once(engine, batch_size=7)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    _expected_after_one_run(engine, 40)
    snapshot = ledger(engine)
    assert run_once(engine)["transactions"] == 0
    assert ledger(engine) == snapshot


def test_run_killed_midway_converges(engine: Engine) -> None:
    _many(engine, 30)
    calls = {"n": 0}

    def crash_on_second_batch(conn: Connection) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed")

    with failpoints.hooked("wallets.deduct_posted", crash_on_second_batch):
        with pytest.raises(RuntimeError, match="worker killed"):
            run_once(engine, batch_size=10)
    with engine.connect() as conn:
        done = conn.execute(text("select count(*) from wallet_usage_positions")).scalar_one()
    assert done == 10  # the first batch committed, the second rolled back whole
    run_once(engine, batch_size=10)
    _expected_after_one_run(engine, 30)


def test_backend_terminated_mid_batch_rolls_back_and_rerun_converges(engine: Engine) -> None:
    _many(engine, 12)

    def terminate(conn: Connection) -> None:
        pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
        with engine.connect() as other:
            other.execute(text("select pg_terminate_backend(:p)"), {"p": pid})

    with failpoints.hooked("wallets.deduct_posted", terminate):
        with pytest.raises(Exception) as caught:
            run_once(engine, batch_size=5)
    from tallyflow.tasks.runs import is_transient

    assert is_transient(caught.value)
    assert ledger(engine) and all(key.startswith("initial:") for key, *_ in ledger(engine))
    run_once(engine, batch_size=5)
    _expected_after_one_run(engine, 12)


def test_customer_without_wallet_or_usage_is_left_alone(engine: Engine) -> None:
    seed(engine, {"a": [], "b": [WalletSpec("main", granted="5")]})
    set_usage(engine, "a", 100)
    result = run_once(engine)
    assert result["due"] == [] and result["transactions"] == 0
    assert balances(engine)["b/main"]["credits"] == Decimal(5)


def test_other_currency_wallet_does_not_pay(engine: Engine) -> None:
    seed(engine, {"a": [WalletSpec("eur", granted="5", currency="EUR")]})
    set_usage(engine, "a", 100)
    result = run_once(engine)
    assert result["transactions"] == 0
    assert result["batches"][0].uncovered_cents == 100


@pytest.mark.parametrize(
    ("currency", "rate", "usage_minor", "credits", "balance_minor"),
    [
        # 2,000 credits granted; usage 1,000 minor units; credits = major units / rate
        ("USD", "1", 1000, Decimal("10"), 2000 * 100 - 1000),
        ("JPY", "1", 1000, Decimal("1000"), 2000 - 1000),  # ¥1,000 is 1,000 credits, not 10
        ("KWD", "1", 1000, Decimal("1"), 2000 * 1000 - 1000),
        ("USD", "2.5", 1000, Decimal("4"), 5000 * 100 - 1000),
        ("JPY", "2.5", 1000, Decimal("400"), 5000 - 1000),
        ("KWD", "0.5", 1000, Decimal("2"), 1000 * 1000 - 1000),
    ],
)
def test_deductions_in_the_wallet_currency_with_any_rate(
    engine: Engine, currency: str, rate: str, usage_minor: int, credits: Decimal,
    balance_minor: int,
) -> None:
    seed(engine, {"a": [WalletSpec("main", granted="2000", rate=rate, currency=currency)]})
    set_usage(engine, "a", usage_minor, currency=currency)
    run_once(engine)
    with engine.connect() as conn:
        [(taken, minor)] = conn.execute(text(
            "select credits, amount_cents from wallet_transactions where source = 'usage'"
        )).all()
    assert (taken, minor) == (credits, usage_minor)
    b = balances(engine)["a/main"]
    assert b["credits"] == Decimal(2000) - credits
    assert b["cents"] == balance_minor
    overview = w.wallet_overview(engine, "a", as_of=AS_OF)
    [wallet] = overview["wallets"]
    assert Decimal(wallet["credits_ongoing_usage_balance"]) == credits
    assert_balances_match_ledger(engine)
