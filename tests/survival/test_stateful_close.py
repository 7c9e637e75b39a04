"""A state machine across a period end: events arrive (for the ending period and the next),
prices change (new plan versions), hours before and after the period end are billed and rerun
in any order, each with the whole cycle (fold, snapshot, wallet deductions, period close).

Checked after every step: a finalized invoice never changes (fees, periods, plan version,
totals), nor do the ledger rows of its periods; every finalized invoice's prepaid credits are
what the ledger took for its periods, to the cent; the ledger's sums are the balances; and
billing the latest hour twice in a row is a fixed point (the hours converge, whatever order
they ran in). The watermark is set past every hour, so periods finalize as soon as they end
plus the settle delay; the clock is never read for billing.
"""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
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

from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects
from tallyflow.tasks.invoicing import close_periods, list_invoices
from tests.factories import jsonl
from tests.survival.test_close_crash_points import assert_invoices_agree_with_the_ledger
from tests.survival.test_stateful_billing import EXAMPLES, MODELS, PLAN, PRICES, bill
from tests.tasks.wallets.test_wallets_support import assert_balances_match_ledger

# November ends at 23:00Z (Paris), 04:59:59Z (New York) and 07:59:59Z... for the calendar
# customers; with the 2 h settle delay the hours after 10:00Z finalize both.
HOURS = [datetime(2025, 11, 30, 18, tzinfo=UTC) + timedelta(hours=2 * i) for i in range(10)]
NOVEMBER = (datetime(2025, 11, 20, tzinfo=UTC), datetime(2025, 11, 29, 12, tzinfo=UTC))
DECEMBER = (datetime(2025, 12, 1, 12, tzinfo=UTC), datetime(2025, 12, 2, tzinfo=UTC))
SUBS = ("sub_acme_001", "sub_globex_001", "sub_initech_001")
STEPS: Counter[str] = Counter()

event_specs = st.lists(
    st.tuples(st.sampled_from(SUBS), st.sampled_from(MODELS),
              st.sampled_from(["input", "output"]), st.integers(1, 3_000_000),
              st.floats(0, 0.999), st.booleans()),
    min_size=1, max_size=5,
)

_LEDGER = """
    select t.id, t.direction, t.status, t.source, t.credits, t.amount_cents, t.idempotency_key
    from wallet_transactions t
    where (t.subscription_id, t.period_start) in (
            select i.subscription_id, i.period_start from invoice_subscriptions i
            join invoices v on v.id = i.invoice_id where v.status = 'finalized')
       or t.source = 'invoice'
    order by t.id
"""


def cycle(engine: Engine, hour: datetime) -> None:
    bill(engine, hour)
    close_periods(engine, hour, now=hour)


def frozen(invoice: dict[str, Any]) -> dict[str, Any]:
    """What of a finalized invoice may never change (payment fields may)."""
    return {k: v for k, v in invoice.items()
            if k not in ("payment_status", "payment_overdue", "total_due_amount_cents",
                         "updated_at")}


class CloseMachine(RuleBasedStateMachine):
    engine: Engine

    def __init__(self) -> None:
        super().__init__()
        STEPS["examples"] += 1
        from tallyflow.models.tables import metadata

        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        with self.engine.begin() as conn:
            conn.execute(text(f"truncate {names} restart identity cascade"))
            conn.execute(text("insert into ingest_runs (source, status, started_at,"
                              " finished_at) values ('test', 'completed', :m, :m)"),
                         {"m": HOURS[-1] + timedelta(days=1)})
        assert apply_catalog(self.engine, EXAMPLES).ok
        self.folder = Path(tempfile.mkdtemp(prefix="tf-stateful-close-"))
        (self.folder / "bucket").mkdir()
        self.source = build_source(SourceSpec(url=(self.folder / "bucket").as_uri()))
        self.plan = copy.deepcopy(PLAN)
        self.ids = itertools.count()
        self.billed: list[datetime] = []
        self.final: dict[str, dict[str, Any]] = {}
        self.final_ledger: dict[int, tuple[Any, ...]] = {}

    @rule(specs=event_specs)
    def ingest_events(self, specs: list[tuple[Any, ...]]) -> None:
        STEPS["ingest_events"] += 1
        records = []
        for sub, model, kind, tokens, fraction, december in specs:
            low, high = DECEMBER if december else NOVEMBER
            moment = (low + (high - low) * fraction).replace(microsecond=0)
            records.append({"transaction_id": f"tx-{next(self.ids)}",
                            "external_subscription_id": sub, "code": "mistral_tokens",
                            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "properties": {"tokens": tokens, "model": model, "type": kind}})
        (self.folder / "bucket" / f"b-{next(self.ids):04d}.jsonl").write_text(jsonl(records))
        for object_id in register_objects(self.engine, self.source.key, self.source.list()):
            assert ingest_object(self.engine, self.source, object_id).status == "ingested"

    @rule(position=st.integers(0, 5), amount=st.sampled_from(PRICES),
          fee=st.sampled_from([0, 1000, 2999]))
    def change_prices(self, position: int, amount: str, fee: int) -> None:
        """A new plan version: open periods and drafts reprice, finalized invoices do not."""
        STEPS["change_prices"] += 1
        self.plan["plan"]["charges"][0]["filters"][position]["properties"]["amount"] = amount
        self.plan["plan"]["amount_cents"] = fee
        path = self.folder / "plan.json"
        path.write_text(json.dumps(self.plan))
        result = apply_catalog(self.engine, [path])
        assert result.ok, result.errors

    @rule(index=st.integers(0, len(HOURS) - 1))
    def bill_an_hour(self, index: int) -> None:
        """Any hour, before or after the period end, first run or rerun, in any order."""
        STEPS["bill_an_hour"] += 1
        if HOURS[index] in self.billed:
            STEPS["rerun"] += 1
        cycle(self.engine, HOURS[index])
        self.billed.append(HOURS[index])

    @precondition(lambda self: bool(self.billed))
    @rule()
    def latest_hour_is_a_fixed_point(self) -> None:
        """Rerunning the latest hour billed brings everything up to date; running it once more
        changes nothing: the order the hours ran in does not matter once it has run."""
        STEPS["fixed_point"] += 1
        latest = max(self.billed)
        cycle(self.engine, latest)
        first = self._state()
        cycle(self.engine, latest)
        assert self._state() == first

    def _state(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {
                "invoices": [frozen(i) for i in list_invoices(self.engine)],
                "ledger": [tuple(r) for r in conn.execute(text(
                    "select wallet_id, direction, status, source, credits, amount_cents,"
                    " idempotency_key from wallet_transactions order by idempotency_key"))],
                "amounts": [tuple(r) for r in conn.execute(text(
                    "select subscription_id, period_start, amount_cents from usage_amounts"
                    " order by 1, 2"))],
            }

    @invariant()
    def finalized_invoices_and_their_ledger_never_change(self) -> None:
        for invoice in list_invoices(self.engine, status="finalized"):
            if invoice["lago_id"] in self.final:
                assert frozen(invoice) == self.final[invoice["lago_id"]], invoice["number"]
            else:
                self.final[invoice["lago_id"]] = frozen(invoice)
                STEPS["finalized"] += 1
        with self.engine.connect() as conn:
            rows = {int(r[0]): tuple(r) for r in conn.execute(text(_LEDGER))}
        for row_id, row in self.final_ledger.items():
            assert rows.get(row_id) == row, row
        self.final_ledger.update(rows)

    @invariant()
    def ledger_and_invoices_agree(self) -> None:
        assert_balances_match_ledger(self.engine)
        assert_invoices_agree_with_the_ledger(self.engine)


@pytest.mark.usefixtures("engine")
def test_close_state_machine(database_url: str) -> None:
    from tallyflow.infra import db

    CloseMachine.engine = db.get_engine(database_url)
    STEPS.clear()
    run_state_machine_as_test(
        CloseMachine,
        settings=settings(
            max_examples=8, stateful_step_count=10, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print(dict(STEPS))
    assert all(STEPS[name] for name in (
        "ingest_events", "change_prices", "bill_an_hour", "rerun", "fixed_point", "finalized"))
