"""Ingest cost of the ways to partition ``events`` (docs/scaling.md, "History that stays cheap").

    .venv/bin/python benchmarks/bench_partitions.py [--existing 2000000] [--batch 500000]

PostgreSQL needs the partition key inside every unique constraint, and the events' primary key
(external_subscription_id, transaction_id) is the dedup key. The layouts compared, each an
events-shaped table already holding ``--existing`` events, then timed loading ``--batch`` new
events (plus 5 % duplicates) from a staging table with ``INSERT ... ON CONFLICT DO NOTHING``:
  plain        one table, default collation (the schema before migration 0011)
  plain-C      one table, key columns in the "C" collation
  hash-16      hash partitions by external_subscription_id (16), "C" keys: the dedup key
               keeps working as each partition's primary key
  time+dedup   monthly range partitions by timestamp, plus a separate dedup table holding the
               key: every event is inserted twice (key first, then the event if the key was new)
Prints rows/s per layout, best of ``--repeat`` runs. Runs on a scratch database.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database
from sqlalchemy import create_engine, text

COLUMNS = """external_subscription_id text {c} not null, transaction_id text {c} not null,
  id bigint not null, code text not null, "timestamp" timestamptz not null,
  properties jsonb not null, object_id bigint not null, row_number bigint not null"""

PLAIN = COLUMNS.format(c="")
C_KEYS = COLUMNS.format(c='collate "C"')
LAYOUTS: dict[str, list[str]] = {
    "plain": [f"create table ev ({PLAIN},"
              " primary key (external_subscription_id, transaction_id))"],
    "plain-C": [f"create table ev ({C_KEYS},"
                " primary key (external_subscription_id, transaction_id))"],
    "hash-16": [f"create table ev ({C_KEYS},"
                " primary key (external_subscription_id, transaction_id))"
                " partition by hash (external_subscription_id)"]
    + [f"create table ev_{i} partition of ev for values with (modulus 16, remainder {i})"
       for i in range(16)],
    "time+dedup": [f"create table ev ({C_KEYS},"
                   " primary key (\"timestamp\", external_subscription_id, transaction_id))"
                   " partition by range (\"timestamp\")",
                   "create table ev_keys (external_subscription_id text collate \"C\","
                   " transaction_id text collate \"C\","
                   " primary key (external_subscription_id, transaction_id))"]
    + [f"create table ev_{m:02d} partition of ev for values from ('2025-{m:02d}-01')"
       f" to ('{2025 + m // 12}-{m % 12 + 1:02d}-01')" for m in range(1, 13)],
}
INDEXES = ["create index on ev using brin (object_id)", "create index on ev using brin (id)"]

STAGE = """
create temp table st as
select 'sub_' || (g * 7919 % :subs) as external_subscription_id, 'tx-' || g as transaction_id,
       g as id, 'mistral_tokens' as code,
       timestamptz '2025-01-01' + (g % 31536000) * interval '1 second' as "timestamp",
       jsonb_build_object('tokens', g % 5000, 'model', 'mistral-small', 'type', 'input')
         as properties, 1 as object_id, g as row_number
from generate_series(cast(:lo as bigint), cast(:hi as bigint) - 1) g
"""

PLAIN_MERGE = "insert into ev select * from st order by row_number on conflict do nothing"
DEDUP_MERGE = """
with k as (
  insert into ev_keys select external_subscription_id, transaction_id from st
  order by row_number on conflict do nothing returning external_subscription_id, transaction_id
)
insert into ev select st.* from st join k using (external_subscription_id, transaction_id)
"""


def run(url: str, layout: str, existing: int, batch: int, subs: int) -> float:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("drop table if exists ev, ev_keys cascade"))
        for statement in LAYOUTS[layout] + INDEXES:
            conn.execute(text(statement))
        conn.execute(text(STAGE), {"lo": 0, "hi": existing, "subs": subs})
        conn.execute(text(DEDUP_MERGE if layout == "time+dedup" else PLAIN_MERGE))
        conn.execute(text("drop table st"))
    with engine.begin() as conn:
        conn.execute(text("analyze ev"))
    with engine.begin() as conn:
        # 5 % of the batch repeats events already stored
        conn.execute(text(STAGE), {"lo": existing - batch // 20, "hi": existing + batch,
                                   "subs": subs})
        started = time.perf_counter()
        conn.execute(text(DEDUP_MERGE if layout == "time+dedup" else PLAIN_MERGE))
        seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(text("drop table if exists ev, ev_keys cascade"))
    engine.dispose()
    return (batch + batch // 20) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--existing", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=500_000)
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with scratch_database(migrate=False) as url:
        results: dict[str, float] = {}
        for _ in range(args.repeat):  # interleaved, so load changes hit every layout alike
            for layout in LAYOUTS:
                rate = run(url, layout, args.existing, args.batch, args.subscriptions)
                results[layout] = max(results.get(layout, 0.0), rate)
        print(f"{args.existing:,} events stored, {args.batch:,} new + 5 % duplicates merged:")
        for layout, rate in results.items():
            print(f"  {layout:11s} {rate:>10,.0f} rows/s  ({rate / results['plain']:.2f} x plain)")


if __name__ == "__main__":
    main()
