"""A state machine over the billing cycle: events arrive (new, duplicated under new object
names, late), prices change, wallets are topped up, hours are billed and rerun, in any order.

After every step, for every opened wallet: money in (initial credits + manual top-ups, each
idempotency key once) minus what usage says is owed as of the last billing run equals the
balance, to the cent, and credits x rate is that balance; the ledger's sums are the balances;
the stored usage amounts are what the raw events and the current prices say. The expected
amounts are computed here from the events and the plan (package model), independently of the
rating code. Hours advance from a fixed start; the clock is never read.

The steps call the same plain functions the flows' tasks wrap (fold, due subscriptions,
snapshot in batches, then the wallet steps in the flow's order), so an example takes
milliseconds, not a Prefect run's seconds; the flows themselves are exercised by
test_billing_crash_points.py and test_billing_faults.py.
"""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from tallyflow.tasks import wallets as w
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.folding import fold_pending
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects
from tallyflow.tasks.usage import due_subscriptions, snapshot_subscriptions
from tests.factories import jsonl

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / "mistral", ROOT / "examples" / "demo" / "customers.yaml"]
PLAN = json.loads((ROOT / "examples" / "mistral" / "plan.json").read_text())
START = datetime(2025, 11, 24, 17, tzinfo=UTC)
SUBS = {"sub_acme_001": "acme", "sub_globex_001": "globex", "sub_initech_001": "initech"}
RATES = {"acme": Decimal("1.0"), "globex": Decimal("1.0"), "initech": Decimal("0.5")}
INITIAL_CREDITS = {"acme": Decimal(125), "globex": Decimal(60), "initech": Decimal(200)}
MODELS = ("mistral-small", "mistral-medium", "mistral-large", "codestral")  # the last: unpriced
# every current period: acme from Nov 1 04:00Z, globex Oct 31 23:00Z, initech Nov 15 08:00Z
RECENT = (datetime(2025, 11, 20, tzinfo=UTC), datetime(2025, 11, 24, 16, tzinfo=UTC))
LATE = (datetime(2025, 11, 16, tzinfo=UTC), datetime(2025, 11, 20, tzinfo=UTC))
PRICES = ["0.01", "0.5", "1", "2.7", "3.333", "8.1", "12.345", "40"]

Prices = dict[tuple[str, str], tuple[Decimal, int]]
STEPS: Counter[str] = Counter()  # what the examples did, for the test's own check


def prices_of(plan: dict[str, Any]) -> Prices:
    out: Prices = {}
    for f in plan["plan"]["charges"][0]["filters"]:
        props = f["properties"]
        assert int(props.get("free_units") or 0) == 0
        for model in f["values"]["model"]:
            for kind in f["values"]["type"]:
                out[(model, kind)] = (Decimal(str(props["amount"])), int(props["package_size"]))
    return out


def owed(events: dict[tuple[str, str], dict[str, Any]], prices: Prices) -> dict[str, Decimal]:
    """Per subscription, in cents: per (model, type), ceil(tokens / package size) packages at
    the package amount, each fee rounded half up to the cent; unpriced buckets cost nothing."""
    tokens: dict[tuple[str, str, str], int] = defaultdict(int)
    for (sub, _), e in events.items():
        tokens[(sub, e["properties"]["model"], e["properties"]["type"])] += e["properties"][
            "tokens"
        ]
    out = {sub: Decimal(0) for sub in SUBS}
    for (sub, model, kind), units in tokens.items():
        amount, size = prices.get((model, kind), (Decimal(0), 1))
        fee = -(-units // size) * amount * 100
        out[sub] += fee.quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return out


def _stamp(low: datetime, high: datetime, fraction: float) -> str:
    moment = low + (high - low) * fraction
    return moment.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


event_specs = st.lists(
    st.tuples(
        st.sampled_from(sorted(SUBS)),
        st.sampled_from(MODELS),
        st.sampled_from(["input", "output"]),
        st.integers(min_value=1, max_value=3_000_000),
        st.floats(min_value=0, max_value=0.999),
    ),
    min_size=1,
    max_size=6,
)


def bill(engine: Engine, hour: datetime) -> None:
    """One billing cycle for ``hour``: usage-snapshot's steps, then wallet-deductions' steps
    in the flow's order (settling purchased credits, as a prepaid contract does)."""
    fold_pending(engine)
    due = due_subscriptions(engine, hour)
    for ids in w.chunks(due, 2):
        snapshot_subscriptions(engine, ids, hour)
    run_id = w.start_run(engine, hour)
    w.open_wallets(engine, hour, True, run_id)
    w.expire_wallets(engine, hour, run_id)
    w.interval_top_ups(engine, hour, True, run_id)
    for ids in w.chunks(w.due_customers(engine, hour), 2):
        w.deduct_customers(engine, ids, hour, run_id)
    w.threshold_top_ups(engine, hour, True, run_id)
    w.evaluate_alerts(engine, hour, run_id)
    w.finish_run(engine, run_id, {})


class BillingMachine(RuleBasedStateMachine):
    engine: Engine  # set by the test

    def __init__(self) -> None:
        super().__init__()
        STEPS["examples"] += 1
        from tallyflow.models.tables import metadata

        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        with self.engine.begin() as conn:
            conn.execute(text(f"truncate {names} restart identity cascade"))
        result = apply_catalog(self.engine, EXAMPLES)
        assert not result.errors, result.errors
        self.folder = Path(tempfile.mkdtemp(prefix="tf-stateful-"))
        (self.folder / "bucket").mkdir()
        (self.folder / "catalog").mkdir()
        self.source = build_source(SourceSpec(url=(self.folder / "bucket").as_uri()))
        self.plan = copy.deepcopy(PLAN)
        self.prices = prices_of(self.plan)
        self.events: dict[tuple[str, str], dict[str, Any]] = {}  # counted once per (sub, tx)
        self.batches: list[str] = []
        self.ids = itertools.count()
        self.hour: datetime | None = None  # the last hour billed
        self.owed_last = {sub: Decimal(0) for sub in SUBS}  # as of the last billing run
        self.money_in: dict[str, Decimal] = {}  # cents, per opened wallet (by customer)
        self.keys: set[str] = set()

    # ---------------------------------------------------------------------------- helpers

    def _drop(self, body: str) -> None:
        name = f"batch-{next(self.ids):04d}.jsonl"
        (self.folder / "bucket" / name).write_text(body)
        for object_id in register_objects(self.engine, self.source.key, self.source.list()):
            assert ingest_object(self.engine, self.source, object_id).status == "ingested"
        self.batches.append(body)

    def _ingest(self, specs: list[tuple], window: tuple[datetime, datetime]) -> None:
        records = []
        for sub, model, kind, tokens, fraction in specs:
            records.append({
                "transaction_id": f"tx-{next(self.ids)}",
                "external_subscription_id": sub,
                "code": "mistral_tokens",
                "timestamp": _stamp(*window, fraction),
                "properties": {"tokens": tokens, "model": model, "type": kind},
            })
        self._drop(jsonl(records))
        for r in records:
            self.events.setdefault((r["external_subscription_id"], r["transaction_id"]), r)

    def _open(self, customer: str) -> None:
        if customer not in self.money_in:
            self.money_in[customer] = INITIAL_CREDITS[customer] * RATES[customer] * 100

    # ---------------------------------------------------------------------------- rules

    @rule(specs=event_specs)
    def ingest_events(self, specs: list[tuple]) -> None:
        STEPS["ingest_events"] += 1
        self._ingest(specs, RECENT)

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def drop_a_batch_again(self, data: st.DataObject) -> None:
        """The same events again under a new object name: counted once."""
        STEPS["drop_a_batch_again"] += 1
        self._drop(data.draw(st.sampled_from(self.batches)))

    @rule(specs=event_specs)
    def ingest_late_events(self, specs: list[tuple]) -> None:
        STEPS["ingest_late_events"] += 1
        self._ingest(specs, LATE)

    @rule(position=st.integers(min_value=0, max_value=5), amount=st.sampled_from(PRICES))
    def change_price(self, position: int, amount: str) -> None:
        STEPS["change_price"] += 1
        self.plan["plan"]["charges"][0]["filters"][position]["properties"]["amount"] = amount
        path = self.folder / "catalog" / "plan.json"
        path.write_text(json.dumps(self.plan))
        result = apply_catalog(self.engine, [path])
        assert not result.errors, result.errors
        self.prices = prices_of(self.plan)

    @rule(customer=st.sampled_from(sorted(RATES)), credits=st.sampled_from(["0.5", "3", "20"]),
          key=st.sampled_from(["k1", "k2", "k3"]))
    def top_up(self, customer: str, credits: str, key: str) -> None:
        """Granted credits with an idempotency key; a repeated key (a retried request) posts
        nothing, whatever it asks for."""
        STEPS["top_up"] += 1
        at = self.hour or START
        w.top_up(self.engine, customer, Decimal(0), Decimal(credits), key=f"{customer}-{key}",
                 settle_paid=True, as_of=at)
        self._open(customer)
        if f"{customer}-{key}" not in self.keys:
            self.keys.add(f"{customer}-{key}")
            self.money_in[customer] += Decimal(credits) * RATES[customer] * 100

    @rule()
    def bill_next_hour(self) -> None:
        STEPS["bill_next_hour"] += 1
        self.hour = START if self.hour is None else self.hour + timedelta(hours=1)
        bill(self.engine, self.hour)
        for customer in RATES:
            self._open(customer)
        self.owed_last = owed(self.events, self.prices)

    @precondition(lambda self: self.hour is not None)
    @rule()
    def rerun_last_hour(self) -> None:
        """A rerun of the last hour brings it up to what is known now, and adds nothing else."""
        STEPS["rerun_last_hour"] += 1
        assert self.hour is not None
        bill(self.engine, self.hour)
        self.owed_last = owed(self.events, self.prices)

    @precondition(lambda self: self.hour is not None)
    @rule(data=st.data())
    def rerun_an_earlier_hour(self, data: st.DataObject) -> None:
        """A rerun or backfill of any hour billed so far, in any order: the hour stores its own
        snapshots and the per-period amounts never move backwards, so each subscription's
        ledger stays at what the last billing run said, or catches up with what is known now
        (a subscription whose last snapshot was older than that hour and that has changed
        since); nothing else. The next rerun of the last hour converges all of them."""
        STEPS["rerun_an_earlier_hour"] += 1
        assert self.hour is not None
        back = data.draw(st.integers(min_value=0,  # 0: the last hour, any hour up to it
                                     max_value=int((self.hour - START) / timedelta(hours=1))))
        hour = self.hour - timedelta(hours=back)
        with self.engine.connect() as conn:
            later = set(conn.execute(text(
                "select external_subscription_id from usage_amounts where as_of >= :h"),
                {"h": hour}).scalars())
        bill(self.engine, hour)
        now = owed(self.events, self.prices)
        with self.engine.connect() as conn:
            amounts = {s: Decimal(a) for s, a in conn.execute(text(
                "select external_subscription_id, amount_cents from usage_amounts")).all()}
            stored = set(conn.execute(text(
                "select external_subscription_id from usage_snapshots where as_of = :h"),
                {"h": hour}).scalars())
        for sub in SUBS:
            assert amounts.get(sub, Decimal(0)) in (self.owed_last[sub], now[sub]), sub
        # Every subscription snapshotted at or after that hour is stored again for it; the
        # others' last snapshot (older, nothing changed since) stands for it.
        assert later <= stored, (later, stored)
        self.owed_last = {sub: amounts.get(sub, Decimal(0)) for sub in SUBS}

    # ---------------------------------------------------------------------------- checks

    @invariant()
    def wallets_hold_money_in_minus_usage(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                """
                select c.external_id, wl.rate_amount, b.credits_balance, b.balance_cents
                from wallet_balances b join wallets wl on wl.id = b.wallet_id
                join customers c on c.id = b.customer_id
                """)).all()
        got = {r[0]: (r[1], r[2], r[3]) for r in rows}
        assert set(got) == set(self.money_in)
        for sub, customer in SUBS.items():
            if customer not in got:
                continue
            rate, credits, cents = got[customer]
            expected = self.money_in[customer] - self.owed_last[sub]
            assert cents == expected, (customer, cents, expected)
            assert credits * rate * 100 == cents, (customer, credits, rate, cents)

    @invariant()
    def ledger_sums_are_the_balances(self) -> None:
        with self.engine.connect() as conn:
            wrong = conn.execute(text(
                """
                select b.wallet_id from wallet_balances b left join (
                  select wallet_id,
                    sum(case when direction = 'inbound' then credits else -credits end) as cr,
                    sum(case when direction = 'inbound' then amount_cents
                             else -amount_cents end) as cents
                  from wallet_transactions where status = 'settled' group by wallet_id
                ) t on t.wallet_id = b.wallet_id
                where b.credits_balance <> coalesce(t.cr, 0)
                   or b.balance_cents <> coalesce(t.cents, 0)
                """)).all()
            deducted = dict(conn.execute(text(
                "select s.external_id, p.deducted_cents from wallet_usage_positions p"
                " join subscriptions s on s.id = p.subscription_id")).all())
            amounts = dict(conn.execute(text(
                "select external_subscription_id, amount_cents from usage_amounts")).all())
        assert wrong == []
        if self.hour is not None:
            assert {s: Decimal(a) for s, a in amounts.items()} == self.owed_last
            assert {s: Decimal(deducted.get(s, 0)) for s in SUBS} == self.owed_last


@pytest.mark.usefixtures("engine")
def test_billing_state_machine(database_url: str) -> None:
    from tallyflow.infra import db

    BillingMachine.engine = db.get_engine(database_url)
    STEPS.clear()
    run_state_machine_as_test(
        BillingMachine,
        # Derandomized: the same exploration on every run, so the coverage check below is a
        # property of this test, not of the day's random seed (it failed now and then).
        settings=settings(
            max_examples=15, stateful_step_count=12, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(dict(STEPS))
    assert STEPS["examples"] >= 10 and STEPS["bill_next_hour"] >= 10
    assert all(STEPS[name] for name in (
        "ingest_events", "drop_a_batch_again", "ingest_late_events", "change_price", "top_up",
        "rerun_last_hour", "rerun_an_earlier_hour"))
