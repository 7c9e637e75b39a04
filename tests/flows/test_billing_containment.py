"""A failure stays with its customer (docs/data-quality.md): real ``billing-cycle`` runs over
1,000 subscriptions with one unit poisoned in each step, compared with a clean run.

Poisons (failpoint hooks keyed by one unit, raising an error of the unit's own):
- the usage snapshot of ``bsub_1``, whose customer ``cust_1`` has a healthy second
  subscription ``bsub_1b`` (snapshotted; the customer is then withheld from the deductions and
  the close: nothing is deducted or closed on a stale snapshot);
- the wallet deductions of ``cust_2`` (then withheld from the close);
- the charges paid in advance of ``cust_10`` (its plan bills each event in advance);
- the period close: the rating of ``bsub_4`` and the invoice of ``cust_3``.
Every other unit's snapshot, ledger, fees and invoice equal the clean run's; the run ends
Failed naming the poisoned units, records them (run history, ``tallyflow runs``, the
artifact); a rerun after the poison is gone completes them exactly once.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.flows.billing import billing_cycle
from tallyflow.infra import failpoints
from tallyflow.tasks.runs import ContainedFailures
from tests.flows.test_billing_artifact import _latest_billing_artifact
from tests.tasks.invoicing.test_invoicing import MISTRAL, TAXES
from tests.tasks.rating_fixtures import load_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")

HOUR = datetime(2025, 3, 20, 10, tzinfo=UTC)
CLOSE = datetime(2025, 4, 1, 8, tzinfo=UTC)
CUSTOMERS = 999  # + cust_1's second subscription = 1,000 subscriptions
ADVANCE_EVERY = 10  # cust_10, cust_20, ...: the plan that bills each event in advance
cycle = billing_cycle.with_options(retries=0)  # one attempt: the test reads its ending


class Poisoned(ValueError):
    """A unit's own failure (not transient): what a bad value in its data raises."""


def _seed(engine: Engine, folder: Path) -> None:
    from tallyflow.tasks.catalog import apply_catalog

    target = folder / "catalog"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("billable_metric", "plan"):
        shutil.copy(MISTRAL / f"{name}.json", target / f"{name}.json")
    (target / "taxes.json").write_text(json.dumps(TAXES))
    advance = json.loads((MISTRAL / "plan.json").read_text())
    advance["plan"].update(code="mistral_advance", name="Mistral in advance")
    advance["plan"]["charges"][0]["pay_in_advance"] = True
    (target / "plan_advance.json").write_text(json.dumps(advance))
    result = apply_catalog(engine, [target])
    assert result.ok, result.errors
    with engine.begin() as conn:
        conn.execute(text(
            "insert into customers (external_id, currency, timezone, document, digest)"
            " select 'cust_' || i, 'USD', 'UTC', '{}', 'x' from generate_series(1, :n) i"),
            {"n": CUSTOMERS})
        conn.execute(text(
            "insert into subscriptions (external_id, customer_id, plan_id, billing_time,"
            " subscription_at, document, digest)"
            " select 'bsub_' || substr(c.external_id, 6), c.id, p.id, 'calendar',"
            " '2025-03-01T00:00:00Z', '{}', 'x' from customers c join plans p on p.code ="
            " case when cast(substr(c.external_id, 6) as int) % :every = 0"
            " then 'mistral_advance' else 'mistral_per_token' end"), {"every": ADVANCE_EVERY})
        conn.execute(text(
            "insert into subscriptions (external_id, customer_id, plan_id, billing_time,"
            " subscription_at, document, digest)"
            " select 'bsub_1b', c.id, p.id, 'calendar', '2025-03-01T00:00:00Z', '{}', 'x'"
            " from customers c, plans p where c.external_id = 'cust_1'"
            " and p.code = 'mistral_per_token'"))
        conn.execute(text(
            "insert into wallets (customer_id, code, name, currency, rate_amount, paid_credits,"
            " granted_credits, priority, document, digest)"
            " select id, 'main', 'main', 'USD', 1, 0, 1000, 1, '{}', 'x' from customers"))
        subs = list(conn.execute(text("select external_id from subscriptions order by id"))
                    .scalars())
    assert len(subs) == 1000
    load_rows(engine, [
        {"sub": sub, "txn": f"{sub}-{k}", "code": "mistral_tokens",
         "ts": f"2025-03-{2 + (n + k) % 17:02d}T0{k}:00:00Z",
         "properties": {"tokens": 100_000 * (1 + (n * 7 + k) % 40),
                        "model": ("mistral-small", "mistral-large")[k % 2],
                        "type": ("input", "output")[(n + k) % 2]}}
        for n, sub in enumerate(subs) for k in range(3)
    ])
    with engine.begin() as conn:  # an ingest run listed everything up to the close hour
        conn.execute(text("insert into ingest_runs (source, status, started_at, finished_at)"
                          " values ('test', 'completed', :m, :m)"), {"m": CLOSE})


def _truncate(engine: Engine) -> None:
    from tallyflow.models.tables import metadata

    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))


def _raise_for(attribute: Callable[[Any], Any], poisoned: set[Any]) -> Callable[[Any], None]:
    def hook(unit: Any) -> None:
        if attribute(unit) in poisoned:
            raise Poisoned(f"poisoned unit {attribute(unit)}")

    return hook


@contextmanager
def _poisoned(engine: Engine) -> Iterator[None]:
    with engine.connect() as conn:
        cust_2 = conn.execute(text("select id from customers where external_id = 'cust_2'"))\
            .scalar_one()
    hooks = [
        ("usage.rate_subscription", _raise_for(lambda s: s.external_id, {"bsub_1"})),
        ("wallets.deduct_customer", _raise_for(lambda c: c, {cust_2})),
        ("advance.bill_subscription", _raise_for(lambda s: s.external_id, {"bsub_10"})),
        ("invoices.rate_subscription", _raise_for(lambda s: s.external_id, {"bsub_4"})),
        ("invoices.write_customer", _raise_for(lambda c: c.external_id, {"cust_3"})),
    ]
    with ExitStack() as stack:
        for name, hook in hooks:
            stack.enter_context(failpoints.hooked(name, hook))
        yield


def _observe(engine: Engine, at: datetime) -> dict[str, dict[str, Any]]:
    """Per unit, what the hour left: its snapshot, its wallet, its fees paid in advance and
    its invoices (amounts, not numbers or dates, which depend on when a unit was billed)."""
    with engine.connect() as conn:
        snapshots = {r.s: (int(r.amount_cents), r.as_of == at) for r in conn.execute(text(
            "select external_subscription_id as s, amount_cents, as_of from usage_amounts"))}
        wallets = {r.c: str(r.credits) for r in conn.execute(text(
            "select c.external_id as c, b.credits_balance as credits from wallets w"
            " join wallet_balances b on b.wallet_id = w.id"
            " join customers c on c.id = w.customer_id"))}
        advance = {r.s: (int(r.n), int(r.cents)) for r in conn.execute(text(
            "select s.external_id as s, count(*) as n, sum(f.amount_cents) as cents"
            " from advance_fees f join subscriptions s on s.id = f.subscription_id"
            " group by s.external_id"))}
        invoices = {r.c: (r.status, int(r.total), int(r.prepaid)) for r in conn.execute(text(
            "select c.external_id as c, v.status, v.total_amount_cents as total,"
            " v.prepaid_credit_amount_cents as prepaid from invoices v"
            " join customers c on c.id = v.customer_id"
            " where v.invoice_type = 'subscription'"))}
    return {"snapshots": snapshots, "wallets": wallets, "advance": advance,
            "invoices": invoices}


def _differing(left: dict[str, dict[str, Any]], right: dict[str, dict[str, Any]]
               ) -> dict[str, set[str]]:
    return {kind: {unit for unit in set(left[kind]) | set(right[kind])
                   if left[kind].get(unit) != right[kind].get(unit)}
            for kind in left}


def _run_failed(at: datetime) -> ContainedFailures:
    with pytest.raises(ContainedFailures) as caught:
        cycle(hour=at)
    return caught.value


def test_one_poisoned_unit_per_step_among_1000_subscriptions(
    engine: Engine, tmp_path: Path
) -> None:
    # The clean run: what every unit should end with.
    _seed(engine, tmp_path)
    cycle(hour=HOUR)
    clean_hour = _observe(engine, HOUR)
    cycle(hour=CLOSE)
    clean_close = _observe(engine, CLOSE)
    assert len(clean_hour["snapshots"]) == 1000 and len(clean_close["invoices"]) == 999
    assert len(clean_hour["advance"]) == CUSTOMERS // ADVANCE_EVERY
    assert all(status == "finalized" for status, _, _ in clean_close["invoices"].values())

    # The same world, poisoned.
    _truncate(engine)
    _seed(engine, tmp_path)
    with _poisoned(engine):
        hour_error = _run_failed(HOUR)
    assert _differing(_observe(engine, HOUR), clean_hour) == {
        "snapshots": {"bsub_1"},  # not snapshotted; bsub_1b (same customer) was
        # withheld (stale snapshot), failed, and its fees in advance not paid
        "wallets": {"cust_1", "cust_2", "cust_10"},
        "advance": {"bsub_10"},
        "invoices": set(),
    }
    own = {(f["step"], f["external_id"]) for f in hour_error.failures if not f["withheld"]}
    assert own == {("usage-snapshot", "bsub_1"), ("wallet-deductions", "cust_2"),
                   ("advance-charges", "cust_10")}
    held = {(f["step"], f["external_id"]) for f in hour_error.failures if f["withheld"]}
    assert held == {("wallet-deductions", "cust_1")}
    assert "3 unit(s) failed and were contained" in str(hour_error)
    assert "Poisoned: poisoned unit bsub_1" in str(hour_error)

    with _poisoned(engine):
        close_error = _run_failed(CLOSE)
    poisoned_close = _observe(engine, CLOSE)
    assert _differing(poisoned_close, clean_close) == {
        "snapshots": {"bsub_1"},
        # cust_3 and cust_4: no finalization deduction (their close failed)
        "wallets": {"cust_1", "cust_2", "cust_3", "cust_4", "cust_10"},
        "advance": {"bsub_10"},
        # withheld after the snapshot (cust_1), the deductions (cust_2) and the fees in
        # advance (cust_10: a finalized period would never bill its unbilled events) failed
        # for them; failed in their own close: rating (bsub_4's cust_4) and writing (cust_3)
        "invoices": {"cust_1", "cust_2", "cust_3", "cust_4", "cust_10"},
    }
    assert {(f["step"], f["external_id"], f["withheld"]) for f in close_error.failures} >= {
        ("close-periods", "cust_1", True), ("close-periods", "cust_2", True),
        ("close-periods", "cust_10", True), ("close-periods", "cust_3", False),
        ("close-periods", "cust_4", False)}
    assert {f["subscription"] for f in close_error.failures
            if f["external_id"] == "cust_4" and f["step"] == "close-periods"} == {"bsub_4"}
    _assert_recorded(engine)

    # The poison is gone: a rerun completes the contained units, each exactly once.
    summary = cycle(hour=CLOSE)
    assert summary["contained"] == []
    assert _differing(_observe(engine, CLOSE), clean_close) == {
        "snapshots": set(), "wallets": set(), "advance": set(), "invoices": set()}
    cycle(hour=CLOSE)  # and again: nothing moves
    assert _differing(_observe(engine, CLOSE), clean_close) == {
        "snapshots": set(), "wallets": set(), "advance": set(), "invoices": set()}


def _assert_recorded(engine: Engine) -> None:
    """Run history and ``tallyflow runs`` name the failed units with step and error; the
    artifact has its section."""
    from tallyflow.cli.main import app

    with engine.connect() as conn:
        status, error, figures = conn.execute(text(
            "select status, error, figures from run_history where kind = 'billing'"
            " order by started_at desc limit 1")).one()
    assert status == "failed" and "cust_3" in error and "bsub_4" in error
    assert {(f["step"], f["external_id"]) for f in figures["contained"]} >= {
        ("usage-snapshot", "bsub_1"), ("close-periods", "cust_3")}
    result = CliRunner().invoke(app, ["runs", "--limit", "1", "--status", "failed"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "contained: usage-snapshot subscription bsub_1" in result.output
    assert "close-periods customer cust_3" in result.output
    listed = json.loads(CliRunner().invoke(
        app, ["runs", "--limit", "1", "--status", "failed", "--json"]).output)
    assert {f["external_id"] for f in listed[0]["figures"]["contained"]} >= {"bsub_1", "cust_3"}
    artifact = _latest_billing_artifact()
    assert "## Contained failures" in artifact
    assert "| usage-snapshot | subscription | bsub_1 | cust_1 |" in artifact



