"""Benchmark: close the billing periods of 10,000 subscriptions with usage into invoices.

Target (issue 13): <= 30 s on these machines (2 cores shared).

    TALLYFLOW_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_invoices.py [--subscriptions 10000]

A scratch database is created next to the one in the URL and dropped afterwards. The Mistral
metric and plan (with a $10 subscription fee and a 20 % tax) are applied with the catalog code;
customers, subscriptions, wallets and two events per subscription are inserted with SQL in bulk
and folded. The timed part is ``tasks.invoicing.close_periods`` (rating every period, drafting,
finalizing with the last wallet deduction, numbering, HTML), then a second close that finds
everything final, then (with the ``pdf`` extra) the PDFs of a sample of the invoices, which
the flow makes after the close, outside its locks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database

ROOT = Path(__file__).resolve().parents[1]
CLOSE_AT = datetime(2025, 4, 1, 8, tzinfo=UTC)

SEED = [
    "insert into customers (external_id, currency, timezone, document, digest)"
    " select 'cust_' || i, 'USD', 'UTC', '{}', 'x' from generate_series(1, :n) i",
    "insert into subscriptions (external_id, customer_id, plan_id, subscription_at, document,"
    " digest) select 'sub_' || c.external_id, c.id, p.id, '2025-03-01T00:00:00Z', '{}', 'x'"
    " from customers c cross join plans p",
    "insert into wallets (customer_id, code, name, currency, rate_amount, paid_credits,"
    " granted_credits, priority, document, digest)"
    " select id, 'main', 'main', 'USD', 1, 20, 0, 1, '{}', 'x' from customers",
    "insert into ingest_objects (source, path, version, status, ingested_at)"
    " values ('bench', 'mem://bench', '1', 'ingested', now())",
    """insert into events (external_subscription_id, transaction_id, code, "timestamp",
         properties, object_id, row_number)
       select s.external_id, 'e' || k, 'mistral_tokens', '2025-03-10T12:00:00Z',
              jsonb_build_object('tokens', 1000000 + (s.id * 7919) % 3000000,
                                 'model', 'mistral-small',
                                 'type', case when k = 1 then 'input' else 'output' end),
              (select id from ingest_objects), s.id * 2 + k
       from subscriptions s cross join generate_series(1, 2) k""",
    # the ingest watermark: a finished run that listed everything after the period end
    "insert into ingest_runs (source, status, started_at, finished_at)"
    " values ('bench', 'completed', '2025-04-01T06:00:00Z', '2025-04-01T06:00:00Z')",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--pdfs", type=int, default=200, help="How many PDFs to time.")
    args = parser.parse_args()

    from tallyflow.infra import db

    folder = Path(tempfile.mkdtemp(prefix="tallyflow-bench-catalog-"))
    with scratch_database() as url:
        engine = db.get_engine(url)
        from tallyflow.tasks import wallets as w
        from tallyflow.tasks.catalog import apply_catalog
        from tallyflow.tasks.folding import fold_pending
        from tallyflow.tasks.invoicing import close_periods, pdf_available

        for stem in ("billable_metric", "plan"):
            shutil.copy(ROOT / "examples" / "mistral" / f"{stem}.json", folder)
        plan = json.loads((folder / "plan.json").read_text())
        plan["plan"].update(amount_cents=1000, tax_codes=["vat"])
        (folder / "plan.json").write_text(json.dumps(plan))
        (folder / "tax.json").write_text(json.dumps(
            {"tax": {"code": "vat", "name": "VAT", "rate": "20"}}))
        assert apply_catalog(engine, [folder]).ok
        started = time.perf_counter()
        with engine.begin() as conn:
            for statement in SEED:
                conn.execute(text(statement), {"n": args.subscriptions})
            conn.execute(text("analyze"))
        fold_pending(engine, max_objects=10)
        w.open_wallets(engine, CLOSE_AT, True)
        print(f"seeded {args.subscriptions} subscriptions with usage and wallets in "
              f"{time.perf_counter() - started:.2f} s")
        for label in ("close: rate, draft, finalize", "close again: all final"):
            started = time.perf_counter()
            summary = close_periods(engine, CLOSE_AT, now=CLOSE_AT)
            seconds = time.perf_counter() - started
            print(f"{label:30s} {seconds:6.2f} s  finalized={len(summary.finalized):>6}"
                  f"  drafts={summary.drafts}  already final={summary.unchanged_final}"
                  f"  prepaid cents={summary.prepaid_cents}")
        if pdf_available():
            from tallyflow.tasks.invoicing import make_missing_pdfs

            started = time.perf_counter()
            made = make_missing_pdfs(engine, limit=args.pdfs)
            seconds = time.perf_counter() - started
            print(f"{'PDFs of a sample':30s} {seconds:6.2f} s  pdfs={made}"
                  f"  per PDF={1000 * seconds / max(made, 1):.1f} ms")
        else:
            print("PDFs: the pdf extra (WeasyPrint) is not installed")
        with engine.connect() as conn:
            row = conn.execute(text(
                "select count(*), sum(total_amount_cents), sum(prepaid_credit_amount_cents),"
                " count(distinct number) from invoices where status = 'finalized'")).one()
        print(f"invoices={row[0]} numbers={row[3]} total due cents={row[1]}"
              f" prepaid cents={row[2]}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
