"""The billing cycle under faults and on demand: database connections terminated mid-run, two
cycles of one hour at once, the same hour rerun, a late event, a price change.

Same data as the crash trials (test_billing_crash_points.py): the hour ``HOUR`` on top of a
billed ``PRIOR`` hour; results are compared with one clean run of ``HOUR`` and, for the late
event and the price change, with amounts computed here from the raw events and the prices.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.billing import billing_cycle
from tests.factories import jsonl
from tests.faults import damage_at, terminate_other_backends
from tests.survival.test_billing_crash_points import (
    _CHILD,
    BATCH,
    HOUR,
    LEDGER,
    PREPARED,
    ROOT,
    apply,
    assert_ledger_is_balances,
    assert_same,
    clean_run,
    events,
    ingest,
    prepared_bucket,
    restore,
    settle_paid,
    state,
    subscriptions,
)

__all__ = ["clean_run", "settle_paid"]  # module fixtures used here

pytestmark = pytest.mark.usefixtures("prefect_harness", "settle_paid")

NEXT = HOUR + timedelta(hours=1)
PLAN = ROOT / "examples" / "mistral" / "plan.json"


# --------------------------------------------------------------------------------------------
# What usage says is owed, computed here from the raw events and the plan (package model)
# --------------------------------------------------------------------------------------------


def plan_prices(plan: dict[str, Any]) -> dict[tuple[str, str], tuple[Decimal, int, int]]:
    """(model, type) -> (amount per package, package size, free units)."""
    out = {}
    for f in plan["plan"]["charges"][0]["filters"]:
        props = f["properties"]
        for model in f["values"]["model"]:
            for kind in f["values"]["type"]:
                out[(model, kind)] = (
                    Decimal(str(props["amount"])), int(props["package_size"]),
                    int(props.get("free_units") or 0),
                )
    return out


def owed_cents(
    records: list[dict[str, Any]], prices: dict[tuple[str, str], tuple[Decimal, int, int]]
) -> dict[str, Decimal]:
    """Per subscription: each (model, type) fee is ceil((tokens - free) / size) packages at
    the package amount, rounded half up to the cent once; the fees add up. Events are
    counted once per (subscription, transaction id)."""
    units: dict[tuple[str, str, str], int] = defaultdict(int)
    seen: set[tuple[str, str]] = set()
    for r in records:
        key = (r["external_subscription_id"], r["transaction_id"])
        if key in seen:
            continue
        seen.add(key)
        p = r["properties"]
        units[(r["external_subscription_id"], p["model"], p["type"])] += int(p["tokens"])
    out: dict[str, Decimal] = defaultdict(Decimal)
    for (sub, model, kind), tokens in units.items():
        amount, size, free = prices.get((model, kind), (Decimal(0), 1, 0))
        paid = max(tokens - free, 0)
        packages = -(-paid // size)
        out[sub] += (packages * amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return dict(out)


def amounts(engine: Engine, as_of: datetime) -> dict[str, Decimal]:
    with engine.connect() as conn:
        return {
            r[0]: Decimal(r[1])
            for r in conn.execute(text(
                "select external_subscription_id, amount_cents from usage_amounts"
                " where as_of = :a"), {"a": as_of})
        }


def usage_moves(engine: Engine, as_of: datetime) -> dict[str, Decimal]:
    """Net cents the usage rows posted as of ``as_of`` took from each subscription's wallets
    (outbound minus inbound corrections)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            """
            select s.external_id, t.direction, t.amount_cents from wallet_transactions t
            join subscriptions s on s.id = t.subscription_id
            where t.source = 'usage' and t.as_of = :a
            """), {"a": as_of}).all()
    out: dict[str, Decimal] = defaultdict(Decimal)
    for sub, direction, cents in rows:
        out[sub] += cents if direction == "outbound" else -cents
    return dict(out)


def directions(engine: Engine, as_of: datetime) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text(
            "select distinct direction from wallet_transactions"
            " where source = 'usage' and as_of = :a"), {"a": as_of}).scalars())


def test_independent_amounts_match_the_clean_run(clean_run: dict) -> None:
    """The yardstick of the tests below agrees with the clean run's usage amounts."""
    prices = plan_prices(json.loads(PLAN.read_text()))
    expected = owed_cents(events(1) + events(2), prices)
    got = {r[0]: Decimal(r[5]) for r in clean_run["usage_amounts"]}
    assert got == expected
    deducted = {r[0]: Decimal(r[2]) for r in clean_run["wallet_usage_positions"]}
    assert deducted == expected


# --------------------------------------------------------------------------------------------
# Connections terminated in the middle of the cycle
# --------------------------------------------------------------------------------------------

PAUSE_POINTS = [
    "usage.before_fold_commit=1",
    "usage.before_snapshot_commit=1",
    "wallets.before_batch_commit=1",
    "wallets.before_alerts_commit=1",
]


@pytest.mark.parametrize("point", PAUSE_POINTS)
def test_backends_terminated_mid_cycle_are_retried_and_the_run_completes(
    clean_run: dict, engine: Engine, point: str
) -> None:
    restore(engine, PREPARED)
    with damage_at(point, lambda: terminate_other_backends(engine)) as done:
        summary = billing_cycle(hour=HOUR)
    assert done and done[0] >= 1, f"nothing was terminated at {point}"
    assert summary["usage"]["snapshots"] == len(subscriptions())
    assert_same(state(engine), clean_run)
    assert_ledger_is_balances(engine)
    with engine.connect() as conn:
        statuses = conn.execute(text("select status from wallet_runs")).scalars().all()
    assert statuses == ["completed", "completed"]


# --------------------------------------------------------------------------------------------
# Concurrency and reruns
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["flows", pytest.param("cycle", marks=pytest.mark.slow)])
def test_two_cycles_of_one_hour_at_once_give_the_ledger_of_one(
    clean_run: dict, engine: Engine, mode: str
) -> None:
    """Two processes run the hour at the same time (with batches of 5, or billing-cycle):
    usage and the wallet ledger are those of one run. (Alerts are not compared: one run may
    see a wallet low between the other's deduction and its threshold top-up, a true alert
    that the next evaluation resolves.)"""
    import os

    from prefect.settings import PREFECT_API_URL

    restore(engine, PREPARED)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    env.pop("TALLYFLOW_FAILPOINTS", None)
    runs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, mode, HOUR.isoformat(), str(BATCH)],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(2)
    ]
    for run in runs:
        _, err = run.communicate(timeout=240)
        assert run.returncode == 0, err[-3000:]
    assert_same(state(engine, LEDGER), {k: clean_run[k] for k in LEDGER})
    assert_ledger_is_balances(engine)


def test_same_hour_rerun_five_times_gives_the_ledger_of_one_run(
    clean_run: dict, engine: Engine
) -> None:
    restore(engine, PREPARED)
    first = billing_cycle(hour=HOUR)
    assert first["wallets"]["transactions"] > 0 and first["wallets"]["threshold_top_ups"] > 0
    for _ in range(5):
        again = billing_cycle(hour=HOUR)
        assert again["wallets"]["transactions"] == 0, again["wallets"]
        assert again["wallets"]["top_ups"] == 0 and again["wallets"]["alerts"] == 0
    assert_same(state(engine), clean_run)
    assert_ledger_is_balances(engine)
    # the case that used to double: a threshold top-up too small to lift the balance above
    # the threshold, so every rerun of the hour found the wallet still low and topped it up
    with engine.connect() as conn:
        low = conn.execute(text(
            """
            select count(*) from wallet_balances b
            join wallet_recurring_rules r on r.wallet_id = b.wallet_id
            where r.trigger = 'threshold' and b.credits_balance <= r.threshold_credits
              and exists (select 1 from wallet_transactions t where t.wallet_id = b.wallet_id
                          and t.source = 'threshold')
            """)).scalar_one()
    assert low >= 1


# --------------------------------------------------------------------------------------------
# On demand: a late event, a price change
# --------------------------------------------------------------------------------------------


def test_late_event_makes_the_next_hour_deduct_only_the_difference(
    clean_run: dict, engine: Engine
) -> None:
    restore(engine, PREPARED)
    bucket = prepared_bucket[PREPARED]  # the source of the prepared objects: one more object
    billing_cycle(hour=HOUR)
    assert_same(state(engine), clean_run)
    before = state(engine)
    late = [
        {"transaction_id": "late-1", "external_subscription_id": "sub_c07",
         "code": "mistral_tokens", "timestamp": "2025-11-24T10:15:00Z",
         "properties": {"tokens": 2_345_678, "model": "mistral-large", "type": "output"}},
        {"transaction_id": "late-2", "external_subscription_id": "sub_globex_001",
         "code": "mistral_tokens", "timestamp": "2025-11-22T03:00:00Z",
         "properties": {"tokens": 10, "model": "mistral-small", "type": "input"}},
    ]
    (bucket / "late.jsonl").write_text(jsonl(late))
    try:
        ingest(engine, bucket)
    finally:  # the bucket stays as prepared for the module's other trials
        (bucket / "late.jsonl").unlink()
    summary = billing_cycle(hour=NEXT)

    prices = plan_prices(json.loads(PLAN.read_text()))
    old = owed_cents(events(1) + events(2), prices)
    new = owed_cents(events(1) + events(2) + late, prices)
    assert amounts(engine, NEXT) == {s: new[s] for s in ("sub_c07", "sub_globex_001")}
    moved = usage_moves(engine, NEXT)
    changed = {s: new[s] - old[s] for s in new if new[s] != old[s]}
    assert changed and "sub_c07" in changed
    assert moved == changed  # exactly the difference, nothing for anyone else
    assert directions(engine, NEXT) == {"outbound"}
    assert summary["wallets"]["customers"] == len(changed)
    after = state(engine)
    for key in ("usage_amounts", "wallet_usage_positions"):
        untouched = [r for r in after[key] if r[0] not in ("sub_c07", "sub_globex_001")]
        assert untouched == [r for r in before[key] if r[0] not in ("sub_c07", "sub_globex_001")]
    deducted = {r[0]: Decimal(r[2]) for r in after["wallet_usage_positions"]}
    assert deducted == new
    assert_ledger_is_balances(engine)


@pytest.mark.parametrize("price", ["15.125", "9.995"], ids=["up", "down"])
def test_price_change_reprices_the_open_period_and_moves_the_exact_delta(
    clean_run: dict, engine: Engine, tmp_path: Path, price: str
) -> None:
    restore(engine, PREPARED)
    billing_cycle(hour=HOUR)
    assert_same(state(engine), clean_run)
    plan = json.loads(PLAN.read_text())
    old_prices = plan_prices(plan)
    for f in plan["plan"]["charges"][0]["filters"]:
        if f["values"] == {"model": ["mistral-large"], "type": ["output"]}:
            f["properties"]["amount"] = price
    apply(engine, tmp_path, "plan.json", json.dumps(plan))
    billing_cycle(hour=NEXT)

    every = events(1) + events(2)
    old, new = owed_cents(every, old_prices), owed_cents(every, plan_prices(plan))
    changed = {s: new[s] - old[s] for s in new if new[s] != old[s]}
    assert len(changed) >= 5, "several subscriptions bill mistral-large output"
    assert amounts(engine, NEXT) == new  # every subscription of the plan re-priced
    assert usage_moves(engine, NEXT) == changed
    assert directions(engine, NEXT) == {"outbound" if Decimal(price) > 12 else "inbound"}
    with engine.connect() as conn:
        deducted = dict(conn.execute(text(
            "select s.external_id, p.deducted_cents from wallet_usage_positions p"
            " join subscriptions s on s.id = p.subscription_id")).all())
        revisions = dict(conn.execute(text(
            "select s.external_id, p.revision from wallet_usage_positions p"
            " join subscriptions s on s.id = p.subscription_id")).all())
    assert {s: Decimal(v) for s, v in deducted.items()} == new
    before = {r[0]: r[3] for r in clean_run["wallet_usage_positions"]}
    assert {s: revisions[s] - before[s] for s in revisions} == {
        s: int(s in changed) for s in revisions
    }
    assert_ledger_is_balances(engine)


def test_threshold_top_up_too_small_to_lift_fires_once_per_crossing(engine: Engine) -> None:
    """Regression: a threshold top-up that leaves the balance at or below the threshold used to
    be posted again by every rerun, retry or concurrent run of the hour (its key counted the
    rule's earlier rows), so reruns added granted credits each time."""
    from concurrent.futures import ThreadPoolExecutor

    from tallyflow.tasks import wallets as w
    from tests.tasks.wallets.test_wallets_support import (
        AS_OF,
        WalletSpec,
        assert_balances_match_ledger,
        balances,
        run_once,
        seed,
        set_usage,
    )
    from tests.tasks.wallets.test_wallets_topups import _rule

    seed(engine, {"a": [WalletSpec("main", granted="10")]})
    _rule(engine, "main", trigger="threshold", threshold_credits=Decimal(5),
          granted_credits=Decimal(2))
    set_usage(engine, "a", 900)  # 10 - 9 = 1 credit: the top-up of 2 leaves 3, still <= 5
    assert run_once(engine)["threshold"] == 1
    for _ in range(3):
        assert run_once(engine)["threshold"] == 0
    with ThreadPoolExecutor(2) as pool:
        fired = list(pool.map(lambda _: w.threshold_top_ups(engine, AS_OF, True), range(2)))
    assert fired == [0, 0]
    assert balances(engine)["a/main"]["credits"] == Decimal(3)
    # lifted above the threshold and spent again: a new crossing, a new top-up
    w.top_up(engine, "a", Decimal(0), Decimal(4), key="lift", settle_paid=True, as_of=AS_OF)
    set_usage(engine, "a", 1_000)  # 7 - 1 = 6 > 5: not yet
    assert run_once(engine)["threshold"] == 0
    set_usage(engine, "a", 1_200)  # 6 - 2 = 4 <= 5: the second crossing
    assert run_once(engine)["threshold"] == 1
    assert run_once(engine)["threshold"] == 0
    assert balances(engine)["a/main"]["credits"] == Decimal(6)
    assert_balances_match_ledger(engine)
