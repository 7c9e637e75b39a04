"""The hourly billing cycle at 100,000 subscriptions.

    .venv/bin/python benchmarks/bench_cycle.py [--subscriptions 100000] [--events 10000000]

Builds, on a scratch database (``scratch.py``): the Mistral metric and plan
(examples/mistral), ``--subscriptions`` customers (UTC) each with one subscription on the plan
and one wallet, and ``--events`` events in the March 2025 period (SQL ``generate_series``,
one ingested object per ``--chunk`` events, as the ingest leaves them). A first, untimed
cycle folds the backlog. Then it times the whole
``billing-cycle`` flow (usage snapshot: fold + snapshot; wallet deductions; period close) for:
  1. an hour with ``--new`` new events over ``--changed`` subscriptions and no period closing
                                                                    goal <= 60 s
  2. a rerun of that hour with nothing new                          goal <= 10 s
  3. the next hour, with nothing new (the change set is empty)      goal <= 10 s
  4. the hour in which every period closes (invoices finalized)     goal <= 300 s
     (``--no-close`` skips it)
and prints each step's seconds (the sub-flows' own times, from ``run_history``).
A temporary Prefect server is started first and not timed.

Wallets hold granted (free) credits: paid ones would give every customer a credit invoice in
the first hour, a one-off of the seeding, not an hourly cost. The cycle renders no PDFs (it
reports how many are pending); after the close hour the benchmark runs the ``invoice-pdfs``
flow for ``--pdfs`` of them (0: skip) and prints its seconds and PDFs/s, then the time of the
pending count and of one empty claim over the whole invoice table (their cost grows with it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tallyflow-bench-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import ROOT, peak_rss_mb, scratch_database
from sqlalchemy import Engine, text

PERIOD_START = datetime(2025, 3, 1, tzinfo=UTC)
HOUR = datetime(2025, 3, 20, 10, tzinfo=UTC)  # the timed hour: mid-period
CLOSE_HOUR = datetime(2025, 4, 1, 8, tzinfo=UTC)  # every March period closes
GOALS = {"hour": 60.0, "rerun": 10.0, "close": 300.0}

SEED = [
    "insert into customers (external_id, currency, timezone, document, digest)"
    " select 'cust_' || i, 'USD', 'UTC', '{}', 'x' from generate_series(1, :n) i",
    "insert into subscriptions (external_id, customer_id, plan_id, billing_time, subscription_at,"
    " document, digest)"
    " select 'bsub_' || substr(c.external_id, 6), c.id, p.id, 'calendar', :start, '{}', 'x'"
    " from customers c, (select id from plans where code = 'mistral_per_token') p"
    " where c.external_id like 'cust\\_%'",
    "insert into wallets (customer_id, code, name, currency, rate_amount, paid_credits,"
    " granted_credits, priority, document, digest)"
    " select id, 'main', 'main', 'USD', 1, 0, 1000, 1, '{}', 'x' from customers"
    " where external_id like 'cust\\_%'",
]

_EVENTS = text(
    """
    insert into events (external_subscription_id, transaction_id, code, "timestamp",
                        properties, object_id, row_number)
    select 'bsub_' || (1 + g % :subs), 'c' || g, 'mistral_tokens',
           cast(:lo_ts as timestamptz) + (g % :span) * interval '1 second',
           jsonb_build_object(
             'tokens', 1 + (g * 7919) % 500000,
             'model', (array['mistral-small', 'mistral-medium', 'mistral-large'])[1 + g % 3],
             'type', (array['input', 'output'])[1 + (g / 3) % 2]),
           :oid, g - :lo
    from generate_series(cast(:lo as bigint), cast(:hi as bigint) - 1) g
    """
)


def load_events(engine: Engine, first: int, last: int, chunk: int, subs: int,
                lo_ts: datetime, hi_ts: datetime) -> None:
    """Events ``first`` .. ``last - 1`` between two times, one ingested object per chunk."""
    span = max(int((hi_ts - lo_ts).total_seconds()), 1)
    for lo in range(first, last, chunk):
        hi = min(lo + chunk, last)
        with engine.begin() as conn:
            oid = conn.execute(text(
                "insert into ingest_objects (source, path, version, status, ingested_at,"
                " rows, accepted) values ('bench', :p, '1', 'ingested', now(), :n, :n)"
                " returning id"), {"p": f"bench/{lo:012d}", "n": hi - lo}).scalar_one()
            conn.execute(_EVENTS, {"subs": subs, "lo_ts": lo_ts, "span": span, "oid": oid,
                                   "lo": lo, "hi": hi})


def listed_until(engine: Engine, moment: datetime) -> None:
    """A finished ingest run that listed the bucket at ``moment`` (the close's watermark)."""
    with engine.begin() as conn:
        conn.execute(text(
            "insert into ingest_runs (source, status, started_at, finished_at)"
            " values ('bench', 'completed', :t, :t)"), {"t": moment})


def cycle(engine: Engine, hour: datetime) -> tuple[float, dict[str, float], dict]:
    """One billing-cycle run: (wall seconds, each sub-flow's seconds, its summary)."""
    from tallyflow.flows.billing import billing_cycle

    started = time.perf_counter()
    state = billing_cycle(hour=hour, return_state=True)
    wall = time.perf_counter() - started
    summary = state.result()
    with engine.connect() as conn:
        steps = {
            str(row.kind): float(row.seconds)
            for row in conn.execute(text(
                "select kind, extract(epoch from finished_at - started_at) as seconds"
                " from run_history where parent_flow_run_id = :p order by started_at"),
                {"p": str(state.state_details.flow_run_id)})
        }
    return wall, steps, summary


def report(label: str, goal: float | None, wall: float, steps: dict[str, float],
           summary: dict) -> None:
    usage, wallets, invoices = summary["usage"], summary["wallets"], summary["invoices"]
    met = "met" if goal is not None and wall <= goal else "NOT met"
    verdict = "" if goal is None else f"  goal <= {goal:.0f} s: {met}"
    print(f"{label:44s} {wall:7.2f} s{verdict}")
    print("    steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    print(f"    folded {usage['fold'].get('events', 0):,} events, "
          f"{usage['snapshots']:,} snapshots, wallet customers {wallets.get('customers', 0):,}, "
          f"finalized {invoices.get('finalized', 0):,} invoices, "
          f"PDFs pending for the invoice-pdfs flow {invoices.get('pdfs_pending', 0):,}",
          flush=True)


def pdf_flow(engine: Engine, most: int) -> None:
    """The ``invoice-pdfs`` flow for ``most`` PDFs (no time bound), then the reads whose cost
    grows with the invoice table: the pending count and a claim that finds nothing."""
    from tallyflow.flows.invoice_pdfs import invoice_pdfs
    from tallyflow.tasks.invoicing import pdf_available, pending_pdfs, render_pdf_chunk

    if not pdf_available():
        print("invoice-pdfs flow: the pdf extra (WeasyPrint) is not installed")
        return
    started = time.perf_counter()
    summary = invoice_pdfs(max_pdfs=most, max_seconds=3600)
    wall = time.perf_counter() - started
    made = summary["rendered"]
    print(f"{'invoice-pdfs flow, ' + format(most, ',') + ' PDFs':44s} {wall:7.2f} s"
          f"  ({made / wall:.2f} PDFs/s, {1000 * wall / max(made, 1):.0f} ms each;"
          f" {summary['remaining']:,} remaining for later runs)", flush=True)
    started = time.perf_counter()
    pending = pending_pdfs(engine)
    counted = time.perf_counter() - started
    with engine.begin() as conn:  # every invoice claimed: the next claim walks the whole table
        conn.execute(text("select id from invoices for no key update"))
        held = time.perf_counter()
        empty: list = []
        probe = threading.Thread(target=lambda: empty.append(render_pdf_chunk(engine, 20)))
        probe.start()
        probe.join()
        claimed = time.perf_counter() - held
    print(f"    pending count {pending:,}: {1000 * counted:.0f} ms; a claim finding every"
          f" invoice locked: {1000 * claimed:.0f} ms ({empty[0].claimed} claimed)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--new", type=int, default=100_000, help="events in the timed hour")
    parser.add_argument("--changed", type=int, default=20_000,
                        help="subscriptions the timed hour's new events go to (0: all)")
    parser.add_argument("--no-close", action="store_true", help="skip the close hour")
    parser.add_argument("--chunk", type=int, default=500_000, help="events per object")
    parser.add_argument("--pdfs", type=int, default=200,
                        help="PDFs the invoice-pdfs flow renders after the close hour (0: none)")
    args = parser.parse_args()
    with scratch_database() as url:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        from tallyflow.infra.db import get_engine
        from tallyflow.tasks import wallets as w
        from tallyflow.tasks.catalog import apply_catalog

        engine = get_engine(url)
        catalog = Path(tempfile.mkdtemp(prefix="tf-bench-catalog-"))
        for stem in ("billable_metric", "plan"):  # the metric and plan, not the demo customer
            shutil.copy(ROOT / "examples" / "mistral" / f"{stem}.json", catalog)
        assert apply_catalog(engine, [catalog]).ok
        shutil.rmtree(catalog)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in SEED:
                conn.execute(text(statement), {"n": args.subscriptions, "start": PERIOD_START})
        w.open_wallets(engine, PERIOD_START, True)
        seeded = time.perf_counter() - started
        started = time.perf_counter()
        backlog = args.events - args.new
        load_events(engine, 0, backlog, args.chunk, args.subscriptions, PERIOD_START,
                    HOUR - timedelta(hours=1))
        with engine.begin() as conn:
            conn.execute(text("analyze"))
        print(f"seeded {args.subscriptions:,} customers, subscriptions and wallets in "
              f"{seeded:.1f} s; {backlog:,} events in the period in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        with prefect_test_harness(server_startup_timeout=120), temporary_settings(
            updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ):
            listed_until(engine, HOUR - timedelta(minutes=30))
            report("catch-up cycle (folds the whole backlog)", None,
                   *cycle(engine, HOUR - timedelta(hours=1)))
            changed = args.changed or args.subscriptions
            load_events(engine, backlog, args.events, args.new, changed,
                        HOUR - timedelta(hours=1), HOUR - timedelta(seconds=1))
            listed_until(engine, HOUR - timedelta(minutes=1))
            report(f"hourly cycle, {args.new:,} new events over {changed:,} subscriptions",
                   GOALS["hour"], *cycle(engine, HOUR))
            report("rerun of that hour, nothing new", GOALS["rerun"], *cycle(engine, HOUR))
            listed_until(engine, HOUR + timedelta(minutes=30))
            report("the next hour, nothing new", GOALS["rerun"],
                   *cycle(engine, HOUR + timedelta(hours=1)))
            if not args.no_close:
                listed_until(engine, CLOSE_HOUR - timedelta(hours=2))
                report(f"close hour: {args.subscriptions:,} periods close", GOALS["close"],
                       *cycle(engine, CLOSE_HOUR))
            if args.pdfs:
                pdf_flow(engine, args.pdfs)
        print(f"peak RSS of the benchmark process (flows run in it): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
