"""Merge benchmark: the ingest's serial step, as a plain INSERT against INSERT ... ON CONFLICT.

    python benchmarks/bench_merge.py --rows 100000 --objects 5 --rounds 3

On a fresh migrated database next to TALLYFLOW_DATABASE_URL (default: the local server), each
round fills ``events`` with ``--objects`` objects of ``--rows`` new events, staged exactly as
the ingest stages them (``tasks/ingest/load.py``'s temp table), and times the real merge statements
(``_MERGE_NEW``: what runs first; ``_MERGE``: the ON CONFLICT fallback) in microseconds per
row; it also times the fallback's worst case, a plain insert refused at its last row and then
the ON CONFLICT merge. Prints the median object of each round and the best round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import drop_database, fresh_database, prepare

FILL = text(
    """
    insert into tf_stage
    select g, 0, 'tx-' || g, 'sub_' || (g % 10000), 'mistral_tokens',
           timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => g % 2000000),
           jsonb_build_object('model', 'mistral-large',
                              'type', case when g % 2 = 0 then 'input' else 'output' end,
                              'tokens', g % 50000),
           null, true
    from generate_series(cast(:first as bigint), cast(:last as bigint)) g
    """
)

REPEAT_FIRST = text(
    """
    insert into tf_stage
    select :after, sub_index, transaction_id, external_subscription_id, code, ts, properties,
           precise, ts_given
    from tf_stage where row_number = :first
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--objects", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tallyflow.infra import db
    from tallyflow.tasks.ingest import load as ingest

    url, name = fresh_database()
    try:
        prepare(url)
        engine = db.get_engine(url)
        with engine.begin() as conn:
            object_id = conn.execute(text(
                "insert into ingest_objects (source, path, version, format, status)"
                " values ('bench', 'bench://merge', 'v1', 'jsonl', 'pending') returning id"
            )).scalar_one()
        variants = {
            "plain insert (runs first)": ingest._MERGE_NEW,
            "on conflict (the fallback)": ingest._MERGE,
            "refused at the last row, then on conflict": None,
        }
        results: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for label, statement in variants.items():
                with engine.begin() as conn:
                    conn.execute(text("truncate events restart identity"))
                per_object = []
                for k in range(args.objects):
                    first = k * args.rows
                    with engine.begin() as conn:
                        conn.execute(text(ingest._STAGE))
                        conn.execute(FILL, {"first": first, "last": first + args.rows - 1})
                        if statement is None:  # the object repeats its first event last
                            conn.execute(REPEAT_FIRST, {"first": first,
                                                        "after": first + args.rows})
                        conn.execute(ingest._MERGE_SETTINGS)
                        started = time.perf_counter()
                        if statement is None:
                            ingest._merge(conn, object_id)
                        else:
                            conn.execute(statement, {"object_id": object_id}).one()
                        per_object.append((time.perf_counter() - started) / args.rows * 1e6)
                results[label].append(statistics.median(per_object))
        print(f"merge of {args.objects} objects x {args.rows:,} new events, us per row "
              f"(median object per round; best round):")
        for label, rounds in results.items():
            print(f"  {label:44s} {min(rounds):6.2f}   rounds: "
                  + ", ".join(f"{r:.2f}" for r in rounds))
        db.dispose_engines()
    finally:
        drop_database(None, name)


if __name__ == "__main__":
    main()
