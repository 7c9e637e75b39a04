"""Benchmark: one ``wallet-deductions`` run over 10,000 customers, then a rerun with nothing new.

Targets (issue 5): first run <= 10 s on 2 cores; a rerun that writes nothing <= 2 s.

    TALLYFLOW_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_wallets.py [--customers 10000] [--batch 2500]

A scratch database is created next to the one in the URL and dropped afterwards. Catalog rows
(customers, subscriptions, two wallets each, half with an alert-worthy balance) and
usage_amounts are inserted with SQL in bulk; the timed part is the real Prefect flow (a
temporary local Prefect server is started first and not timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="tallyflow-bench-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database

AS_OF = datetime(2025, 3, 15, 10, tzinfo=UTC)

SEED = [
    "insert into plans (code, name, interval, amount_cents, amount_currency, document, digest)"
    " values ('bench', 'bench', 'monthly', 0, 'USD', '{}', 'x')",
    "insert into customers (external_id, currency, document, digest)"
    " select 'cust_' || i, 'USD', '{}', 'x' from generate_series(1, :n) i",
    "insert into subscriptions (external_id, customer_id, plan_id, subscription_at, document,"
    " digest) select 'sub_' || c.external_id, c.id, p.id, '2025-01-01T00:00:00Z', '{}', 'x'"
    " from customers c cross join plans p",
    # Two wallets each: a small granted one first (priority 1), a purchased one (priority 2).
    "insert into wallets (customer_id, code, name, currency, rate_amount, paid_credits,"
    " granted_credits, priority, document, digest)"
    " select id, 'promo', 'promo', 'USD', 1, 0, 5, 1, '{}', 'x' from customers",
    "insert into wallets (customer_id, code, name, currency, rate_amount, paid_credits,"
    " granted_credits, priority, document, digest)"
    " select id, 'main', 'main', 'USD', 1, 100, 0, 2, '{}', 'x' from customers",
    "insert into wallet_alert_rules (kind, threshold_credits) values ('balance_below', 10)",
]

USAGE = (
    "insert into usage_amounts as a (subscription_id, period_start, external_subscription_id,"
    " period_end, as_of, currency, amount_cents, precise_amount_cents, snapshot_id,"
    " snapshot_as_of)"
    " select s.id, '2025-03-01T00:00:00Z', s.external_id, '2025-03-31T23:59:59.999999Z',"
    " :as_of, 'USD', (s.id * :k) % 12000, (s.id * :k) % 12000, s.id, :as_of"
    " from subscriptions s"
    " on conflict (subscription_id, period_start) do update set"
    " amount_cents = excluded.amount_cents, precise_amount_cents = excluded.amount_cents"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2_500)
    args = parser.parse_args()

    from tallyflow.infra import db

    with scratch_database() as url:
        engine = db.get_engine(url)
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in SEED:
                conn.execute(text(statement), {"n": args.customers})
            conn.execute(text(USAGE), {"as_of": AS_OF, "k": 7919})
            conn.execute(text("analyze"))
        print(f"seeded {args.customers} customers, {2 * args.customers} wallets, "
              f"{args.customers} usage amounts in {time.perf_counter() - started:.2f} s")

        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        from tallyflow.flows.wallet_deductions import wallet_deductions

        with prefect_test_harness(server_startup_timeout=60), temporary_settings(
            updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ):
            timings = []
            for label, prepare in (
                ("first run", None),
                ("rerun, nothing new", None),
                ("usage grew for every customer", "grow"),
            ):
                if prepare == "grow":
                    with engine.begin() as conn:
                        conn.execute(text(USAGE), {"as_of": AS_OF, "k": 7933})
                with engine.connect() as conn:
                    before = conn.execute(
                        text("select count(*) from wallet_transactions")).scalar_one()
                started = time.perf_counter()
                summary = wallet_deductions(as_of=AS_OF, batch_size=args.batch, settle_paid=True)
                seconds = time.perf_counter() - started
                with engine.connect() as conn:
                    after = conn.execute(
                        text("select count(*) from wallet_transactions")).scalar_one()
                timings.append((label, seconds))
                print(
                    f"{label:32s} {seconds:6.2f} s  customers={summary['customers']:>6}"
                    f"  rows written={after - before:>6}  corrections={summary['corrections']}"
                    f"  credits deducted={summary['credits_deducted']}"
                    f"  alerts={summary['alerts']}  negative={summary['negative_wallets']}"
                )


if __name__ == "__main__":
    main()
