"""``tallyflow archive``: how fast finalized history leaves PostgreSQL for Parquet.

    .venv/bin/python benchmarks/bench_archive.py [--events 2000000] [--keep 200000]

On a scratch database: ``--events`` Mistral-shaped events in March 2025 and ``--keep`` in
April, for subscription ids no catalog knows (so no open period holds them back: what is timed
is the move itself, not the finalization rule). Times ``tasks.archive.archive_events`` for
``--before`` 1 April into a temporary folder and prints events/s, the files, the bytes on disk
per event against the table's size per event, and that April's events stayed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cycle import load_events
from scratch import scratch_database
from sqlalchemy import text

APRIL = datetime(2025, 4, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--keep", type=int, default=200_000)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=500_000)
    args = parser.parse_args()
    from fsspec.implementations.local import LocalFileSystem

    from tallyflow.infra.db import get_engine
    from tallyflow.tasks.archive import archive_events

    with scratch_database() as url:
        engine = get_engine(url)
        load_events(engine, 0, args.events, args.chunk, args.subscriptions,
                    datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 31, tzinfo=UTC))
        load_events(engine, args.events, args.events + args.keep, args.chunk,
                    args.subscriptions, datetime(2025, 4, 2, tzinfo=UTC),
                    datetime(2025, 4, 20, tzinfo=UTC))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("vacuum analyze events"))
            table_bytes = conn.execute(text(
                "select pg_total_relation_size('events')")).scalar_one()
        folder = Path(tempfile.mkdtemp(prefix="tf-bench-archive-"))
        try:
            started = time.perf_counter()
            done = archive_events(engine, APRIL, LocalFileSystem(), str(folder))
            seconds = time.perf_counter() - started
            on_disk = sum(p.stat().st_size for p in folder.rglob("*.parquet"))
            with engine.connect() as conn:
                left = conn.execute(text("select count(*) from events")).scalar_one()
            total = args.events + args.keep
            print(f"archive of {done.rows:,} events (before {APRIL.date()}) out of {total:,}: "
                  f"{seconds:.1f} s, {done.rows / seconds:,.0f} events/s, "
                  f"{len(done.files)} file(s)")
            print(f"  Parquet {on_disk / max(done.rows, 1):.1f} bytes/event; the events table "
                  f"held {table_bytes / total:.1f} bytes/event (indexes included)")
            print(f"  events left in the table: {left:,} (expected {args.keep:,})")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
