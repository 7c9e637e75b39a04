"""kill -9 the real billing cycle at every named crash point, rerun the hour, compare with a
clean run.

The data: the Mistral example catalog and the demo customers, plus 20 generated customers (one
subscription each, one or two wallets, some with threshold top-up rules) and an alert rule.
Hour ``PRIOR`` is billed first with half of the events (so the crashed hour works on deltas,
revisions and existing snapshots); then the second half arrives, a new wallet is added, and
hour ``HOUR`` runs in a child process against the session's Prefect server with one failpoint
armed (tallyflow/failpoints.py). The child must die by SIGKILL at that point; the database it
leaves must hold what was committed up to there and nothing of what came after; the rerun of
the hour (the real ``billing-cycle`` flow) must leave usage state, snapshots, usage amounts,
the wallet ledger, balances, positions and alerts equal to one uninterrupted run.

The child runs ``usage-snapshot`` then ``wallet-deductions`` with batches of 5 (what
``billing-cycle`` does, with batch sizes small enough to crash between batches), or
``billing-cycle`` itself for the points in between and at the end.

The prepared database (everything before the hour under test) is built once per module, kept
as a copy in its own schema, and restored row for row (same ids, same sequence positions) at the
start of each trial: rebuilding it took seconds per trial.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.billing import billing_cycle
from tallyflow.tasks import wallets as w
from tallyflow.tasks.catalog import apply_catalog
from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects
from tallyflow.tasks.usage import due_subscriptions
from tests.factories import jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness", "settle_paid")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [ROOT / "examples" / "mistral", ROOT / "examples" / "demo" / "customers.yaml"]
PRIOR = datetime(2025, 11, 24, 16, tzinfo=UTC)
HOUR = datetime(2025, 11, 24, 17, tzinfo=UTC)
EXTRA = 20
MODELS = ("mistral-small", "mistral-medium", "mistral-large")
BATCH = 5

# (failpoint, hit, child mode, parts of the state already final right after the crash)
USAGE = ("usage_states",)
SNAPSHOTS = ("usage_states", "usage_snapshots", "usage_amounts")
LEDGER = (*SNAPSHOTS, "wallet_transactions", "wallet_balances", "wallet_usage_positions")
EVERYTHING = (*LEDGER, "wallet_alerts")
CRASH_POINTS: list[Any] = [
    ("usage.before_fold_commit", 1, "flows", ()),
    ("usage.after_fold", 1, "flows", USAGE),
    ("usage.before_snapshot_commit", 3, "flows", USAGE),
    ("billing.between_flows", 1, "cycle", SNAPSHOTS),
    ("wallets.before_open_commit", 1, "flows", SNAPSHOTS),
    ("wallets.before_batch_commit", 2, "flows", SNAPSHOTS),
    ("wallets.mid_batch", 1, "flows", SNAPSHOTS),
    ("wallets.after_topups", 1, "flows", LEDGER),
    ("wallets.before_finish_run", 1, "cycle", EVERYTHING),
    # the hour's change set taken, nothing snapshotted yet: the rerun takes it again
    ("usage.after_change_set", 1, "cycle", USAGE),
    # the same kinds of points again, elsewhere: run with `make test-slow`
    pytest.param("usage.after_snapshot_read", 2, "flows", USAGE, marks=pytest.mark.slow),
    # snapshot and deduction batches run two at a time: at the Nth commit the other thread may
    # have committed one more, so N stays at most (batches - 2) for the step to be unfinished
    pytest.param("usage.after_snapshot_commit", 2, "flows", USAGE, marks=pytest.mark.slow),
    pytest.param("wallets.after_open", 1, "flows", SNAPSHOTS, marks=pytest.mark.slow),
    pytest.param("wallets.mid_batch", 3, "flows", SNAPSHOTS, marks=pytest.mark.slow),
    pytest.param("wallets.before_alerts_commit", 1, "flows", LEDGER, marks=pytest.mark.slow),
    pytest.param("wallets.after_alerts", 1, "flows", EVERYTHING, marks=pytest.mark.slow),
    pytest.param("wallets.before_mark_emitted", 1, "cycle", EVERYTHING, marks=pytest.mark.slow),
    # all done but the hour's change set not marked completed: the rerun changes nothing
    pytest.param("billing.before_complete_change_set", 1, "cycle", EVERYTHING,
                 marks=pytest.mark.slow),
]


def _id(point: Any) -> str:
    values = point.values if hasattr(point, "values") else point
    return f"{values[0]}-{values[1]}"


_CHILD = """
import sys
from datetime import datetime
hour = datetime.fromisoformat(sys.argv[2])
if sys.argv[1] == "cycle":
    from tallyflow.flows.billing import billing_cycle
    billing_cycle(hour=hour)
else:
    from tallyflow.flows.usage_snapshot import usage_snapshot
    from tallyflow.flows.wallet_deductions import wallet_deductions
    usage_snapshot(as_of=hour, batch_size=int(sys.argv[3]))
    wallet_deductions(as_of=hour, batch_size=int(sys.argv[3]))
"""


# --------------------------------------------------------------------------------------------
# The data (shared with test_billing_faults.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settle_paid() -> Iterator[None]:
    """Purchased credits settle at once here and in the children (prepaid contracts)."""
    previous = os.environ.get(w.SETTLE_PAID_ENV)
    os.environ[w.SETTLE_PAID_ENV] = "1"
    yield
    if previous is None:
        os.environ.pop(w.SETTLE_PAID_ENV, None)
    else:
        os.environ[w.SETTLE_PAID_ENV] = previous


def extra_catalog() -> str:
    """20 customers on the Mistral plan; every 5th has two wallets, every 3rd a threshold
    top-up rule, every 4th a wallet at 0.5 per credit."""
    docs: list[str] = []
    for i in range(EXTRA):
        c = f"c{i:02d}"
        docs.append(f"customer:\n  external_id: {c}\n  name: Customer {i}\n  currency: USD\n")
        docs.append(
            f"subscription:\n  external_customer_id: {c}\n  plan_code: mistral_per_token\n"
            f"  external_id: sub_{c}\n  billing_time: calendar\n"
            f"  subscription_at: \"2025-06-01T00:00:00Z\"\n"
        )
        rate = "0.5" if i % 4 == 0 else "1.0"
        wallet = (
            f"wallet:\n  external_customer_id: {c}\n  name: Prepaid\n  currency: USD\n"
            f"  rate_amount: \"{rate}\"\n  paid_credits: \"{i % 3 * 2}\"\n"
            f"  granted_credits: \"{3 + i}\"\n  priority: 10\n"
        )
        if i % 3 == 0:
            wallet += (
                "  recurring_transaction_rules:\n    - trigger: threshold\n"
                "      threshold_credits: \"2\"\n      granted_credits: \"15\"\n"
            )
        docs.append(wallet)
        if i % 5 == 0:
            docs.append(
                f"wallet:\n  external_customer_id: {c}\n  name: Backup\n  currency: USD\n"
                f"  rate_amount: \"1.0\"\n  granted_credits: \"4\"\n  priority: 20\n"
            )
    return "---\n".join(docs)


LATE_WALLET = (
    "wallet:\n  external_customer_id: c19\n  name: Bonus\n  currency: USD\n"
    "  rate_amount: \"1.0\"\n  granted_credits: \"7.5\"\n  priority: 5\n"
)


def subscriptions() -> list[str]:
    return ["sub_acme_001", "sub_globex_001", "sub_initech_001"] + [
        f"sub_c{i:02d}" for i in range(EXTRA)
    ]


def events(part: int, per_sub: int = 4) -> list[dict[str, Any]]:
    """Deterministic events of every subscription between Nov 20 and Nov 24 16:00 UTC (in the
    current period of all of them, before both hours billed)."""
    rng = random.Random(part)
    start = int(datetime(2025, 11, 20, tzinfo=UTC).timestamp())
    out = []
    for s, sub in enumerate(subscriptions()):
        for n in range(per_sub):
            out.append({
                "transaction_id": f"p{part}-{s}-{n}",
                "external_subscription_id": sub,
                "code": "mistral_tokens",
                "timestamp": start + rng.randrange(0, 4 * 86_400 + 16 * 3_600),
                "properties": {
                    "tokens": rng.randrange(1, 900_000),
                    "model": MODELS[rng.randrange(3)],
                    "type": ("input", "output")[rng.randrange(2)],
                },
            })
    return out


def ingest(engine: Engine, folder: Path) -> None:
    """Ingest every new object of ``folder`` (the loader itself, without a flow run)."""
    source = build_source(SourceSpec(url=folder.as_uri()))
    for object_id in register_objects(engine, source.key, source.list()):
        assert ingest_object(engine, source, object_id).status == "ingested"


def apply(engine: Engine, folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(body)
    result = apply_catalog(engine, [path])
    assert not result.errors, result.errors


def prepare(engine: Engine, folder: Path) -> Path:
    """Everything up to the hour under test: catalog, first events, the prior hour billed,
    the second events ingested and a new wallet; returns the bucket folder."""
    catalog, bucket = folder / "catalog", folder / "bucket"
    catalog.mkdir()
    bucket.mkdir()
    result = apply_catalog(engine, EXAMPLES)
    assert not result.errors, result.errors
    apply(engine, catalog, "extra.yaml", extra_catalog())
    w.add_alert_rule(engine, "balance_below", Decimal(5))
    (bucket / "part-1.jsonl").write_text(jsonl(events(1)))
    ingest(engine, bucket)
    billing_cycle(hour=PRIOR)
    (bucket / "part-2.jsonl").write_text(jsonl(events(2)))
    ingest(engine, bucket)
    apply(engine, catalog, "late-wallet.yaml", LATE_WALLET)
    return bucket


def reset(engine: Engine) -> None:
    from tallyflow.models.tables import metadata

    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))


# --------------------------------------------------------------------------------------------
# A copy of the prepared database, so each trial starts from it in a fraction of a second
# instead of rebuilding it (catalog, ingest, the prior hour's billing cycle: seconds each time)
# --------------------------------------------------------------------------------------------

PREPARED = "billing_prepared"
# The bucket the module's prepared copy was ingested from (its objects' source), for the
# trials that add an object to it.
prepared_bucket: dict[str, Path] = {}


def snapshot(engine: Engine, name: str) -> None:
    """Copy every table's rows and every sequence's position into the schema ``name`` of
    the test database (replaced if it exists)."""
    from tallyflow.models.tables import metadata

    with engine.begin() as conn:
        conn.execute(text(f'drop schema if exists "{name}" cascade'))
        conn.execute(text(f'create schema "{name}"'))
        for table in metadata.sorted_tables:
            conn.execute(text(f'create table "{name}"."{table.name}" as table "{table.name}"'))
        conn.execute(text(
            f'create table "{name}".sequences as select sequencename as name, last_value'  # noqa: S608 - fixed names
            " from pg_sequences where schemaname = current_schema()"))


def restore(engine: Engine, name: str) -> None:
    """Make the database exactly what it was at ``snapshot(engine, name)``: the same rows
    with the same ids, and every sequence where it stood (the next ids are those a trial
    that rebuilt the data would get)."""
    from tallyflow.models.tables import metadata

    reset(engine)
    with engine.begin() as conn:
        # rows that passed the guards once: the triggers that refuse parts of finalized
        # invoices (a copy inserts them after their invoice) stay off for this transaction
        conn.execute(text("set local session_replication_role = replica"))
        for table in metadata.sorted_tables:
            conn.execute(text(f'insert into "{table.name}" table "{name}"."{table.name}"'))
        positions = text(f'select name, last_value from "{name}".sequences')  # noqa: S608
        for seq, last in conn.execute(positions):
            if last is None:
                conn.execute(text(f'alter sequence "{seq}" restart'))
            else:
                conn.execute(text("select setval(:seq, :last)"), {"seq": f'"{seq}"', "last": last})


def drop_snapshot(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f'drop schema if exists "{name}" cascade'))


# --------------------------------------------------------------------------------------------
# What is compared: everything but ids, timestamps and run ids
# --------------------------------------------------------------------------------------------

_QUERIES = {
    "usage_states": """
        select s.external_id, m.code, u.period_start, u.filter_key::text, u.group_key::text,
               u.events_count, u.unbillable_count, u.total, u.precise_total, u.moment,
               u.maximum, u.latest_value, u.state::text, u.day_totals::text
        from usage_states u join subscriptions s on s.id = u.subscription_id
        join billable_metrics m on m.id = u.billable_metric_id order by 1, 2, 3, 4, 5""",
    "usage_snapshots": """
        select external_subscription_id, period_start, period_end, as_of, currency,
               amount_cents, precise_amount_cents, events_count, usage::text
        from usage_snapshots order by 1, 2, 4""",
    "usage_amounts": """
        select external_subscription_id, period_start, period_end, as_of, currency,
               amount_cents, precise_amount_cents
        from usage_amounts order by 1, 2""",
    "wallet_transactions": """
        select c.external_id, wl.code, t.direction, t.status, t.source, t.credits,
               t.granted_credits, t.amount_cents, s.external_id, t.period_start,
               t.rule_position, t.as_of, t.idempotency_key
        from wallet_transactions t join wallets wl on wl.id = t.wallet_id
        join customers c on c.id = t.customer_id
        left join subscriptions s on s.id = t.subscription_id
        order by 1, 2, 13""",
    "wallet_balances": """
        select c.external_id, wl.code, b.credits_balance, b.granted_credits_balance,
               b.balance_cents, b.pending_credits, b.consumed_credits, b.consumed_amount_cents
        from wallet_balances b join wallets wl on wl.id = b.wallet_id
        join customers c on c.id = b.customer_id order by 1, 2""",
    "wallet_usage_positions": """
        select s.external_id, p.period_start, p.deducted_cents, p.revision
        from wallet_usage_positions p join subscriptions s on s.id = p.subscription_id
        order by 1, 2""",
    "wallet_alerts": """
        select c.external_id, wl.code, a.rule_key, a.kind, a.threshold_credits,
               a.credits_balance, a.crossing, a.resolved_at, a.as_of
        from wallet_alerts a join wallets wl on wl.id = a.wallet_id
        join customers c on c.id = a.customer_id order by 1, 2, 3, 7""",
}


def state(engine: Engine, parts: tuple[str, ...] = tuple(_QUERIES)) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {k: [tuple(r) for r in conn.execute(text(_QUERIES[k]))] for k in parts}


def assert_same(after: dict[str, list[tuple]], clean: dict[str, list[tuple]]) -> None:
    for key in clean:
        assert after[key] == clean[key], key


def assert_ledger_is_balances(engine: Engine) -> None:
    """wallet_balances are the settled ledger's sums, to the cent and the credit."""
    with engine.connect() as conn:
        wrong = conn.execute(text(
            """
            select b.wallet_id from wallet_balances b left join (
              select wallet_id,
                sum(case when direction = 'inbound' then credits else -credits end) as credits,
                sum(case when direction = 'inbound' then amount_cents else -amount_cents end)
                  as cents
              from wallet_transactions where status = 'settled' group by wallet_id
            ) t on t.wallet_id = b.wallet_id
            where b.credits_balance <> coalesce(t.credits, 0)
               or b.balance_cents <> coalesce(t.cents, 0)
            """
        )).all()
    assert wrong == []


@pytest.fixture(scope="module")
def clean_run(
    database_url: str, prefect_harness: None, settle_paid: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, list[tuple]]]:
    """The reference: the same input, the hour billed once without interruption. The input
    (everything ``prepare`` makes) is kept as the snapshot ``PREPARED`` for the trials."""
    from tallyflow.infra import db

    engine = db.get_engine(database_url)
    reset(engine)
    prepared_bucket[PREPARED] = prepare(engine, tmp_path_factory.mktemp("billing-clean"))
    snapshot(engine, PREPARED)
    try:  # the copy never outlives the module: other modules' tests read information_schema
        yield bill_clean(engine)
    finally:
        drop_snapshot(engine, PREPARED)


def bill_clean(engine: Engine) -> dict[str, list[tuple]]:
    """Bill the prepared hour once, check the reference has what the trials need, return it."""
    summary = billing_cycle(hour=HOUR)
    assert summary["usage"]["snapshots"] == len(subscriptions())
    assert summary["wallets"]["opened"] == 1  # the late wallet
    assert summary["wallets"]["transactions"] > 0
    reference = state(engine)
    assert_ledger_is_balances(engine)
    sources = {row[4] for row in reference["wallet_transactions"]}
    assert {"initial", "usage", "threshold"} <= sources
    hours = {row[3] for row in reference["usage_snapshots"]}
    assert hours == {PRIOR, HOUR}
    assert reference["wallet_alerts"], "some wallets ran low"
    assert any(row[4] < 0 for row in reference["wallet_balances"]), "an overflow"
    # the hour ran on its change set (docs/architecture.md §24): the full recomputation, every
    # subscription and customer, finds nothing left (the child's "flows" runs take no set)
    assert summary["usage"]["change_set"]["base_as_of"] == PRIOR.isoformat()
    assert due_subscriptions(engine, HOUR) == [] and w.due_customers(engine, HOUR) == []
    return reference


def run_child(mode: str, failpoints: str | None = None) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    env.pop("TALLYFLOW_FAILPOINTS", None)
    if failpoints:
        env["TALLYFLOW_FAILPOINTS"] = failpoints
    return subprocess.run(
        [sys.executable, "-c", _CHILD, mode, HOUR.isoformat(), str(BATCH)],
        env=env, capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )


# --------------------------------------------------------------------------------------------
# The trials
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("point", "hit", "mode", "final"), CRASH_POINTS,
                         ids=[_id(p) for p in CRASH_POINTS])
def test_kill_at_crash_point_then_rerun_equals_clean_run(
    clean_run: dict, engine: Engine, point: str, hit: int, mode: str,
    final: tuple[str, ...],
) -> None:
    restore(engine, PREPARED)
    before = state(engine)
    child = run_child(mode, f"{point}={hit}")
    assert child.returncode == -signal.SIGKILL, (
        f"{point}={hit} was not reached: exit {child.returncode}\n{child.stderr[-3000:]}"
    )
    crashed = state(engine)
    for key in _QUERIES:
        if key in final:  # committed before the crash point: already what a clean run leaves
            assert crashed[key] == clean_run[key], f"{key} should be final at {point}"
        elif key != "wallet_alerts":  # not reached yet: not final (alerts may not change)
            assert crashed[key] != clean_run[key], f"{key} should be unfinished at {point}"
    assert_ledger_is_balances(engine)  # even the crashed hour never splits ledger/balance

    billing_cycle(hour=HOUR)  # the rerun, the real flow, default batch sizes

    after = state(engine)
    assert_same(after, clean_run)
    assert json.dumps(after, default=str) == json.dumps(clean_run, default=str)
    assert after != before
    assert_ledger_is_balances(engine)
    with engine.connect() as conn:
        runs = conn.execute(text("select status from wallet_runs order by id")).scalars().all()
    assert runs[0] == "completed" and runs[-1] == "completed"  # prior hour, rerun


def test_child_without_failpoint_equals_clean_run(clean_run: dict, engine: Engine) -> None:
    """The child itself (small batches, its own process) is a clean run: the baseline the
    crash trials are measured against does not depend on how the hour is run."""
    restore(engine, PREPARED)
    child = run_child("flows")
    assert child.returncode == 0, child.stderr[-3000:]
    assert_same(state(engine), clean_run)
