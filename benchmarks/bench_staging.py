"""Staging CPU per 100k events: the column path's parse (Python) and its COPY (PostgreSQL).

    python benchmarks/bench_staging.py --events 100000 --reps 7

On 2 cores the next object's parse and COPY run beside the current object's merge (the run's
critical path, tasks/ingest/load.py), so their CPU seconds -- not their wall time -- are what they
take from it. Prints, per 100k Mistral-shaped events (one object, chunks as the flow reads
them): the CPU of ``staged_jsonl`` in this process (all its threads), and the CPU of the
COPYs into ``tf_stage`` on the server backend (``/proc/PID/schedstat``, nanoseconds; the server
must be local) and in this process; median and minimum of ``--reps`` runs.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import drop_database, fresh_database, generate


def _backend_seconds(pid: int) -> float:
    """CPU time the backend has used (the first field of schedstat: nanoseconds on a CPU)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def _line(label: str, seconds: list[float], per: float) -> str:
    return (f"{label:<28} median {statistics.median(seconds) * per:.3f} s"
            f"  min {min(seconds) * per:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--chunk-rows", type=int, default=None)
    args = parser.parse_args()

    from tallyflow.models.events import TimeBounds
    from tallyflow.tasks.ingest import SourceSpec, build_source, staged_jsonl
    from tallyflow.tasks.ingest import load as ingest

    chunk_rows = args.chunk_rows or ingest.DEFAULT_CHUNK_ROWS
    with tempfile.TemporaryDirectory(prefix="tf-staging-") as tmp:
        generate(Path(tmp), args.events, 1, 10_000)
        data = (Path(tmp) / "part-0000.jsonl").read_bytes()
        source = build_source(SourceSpec(url=Path(tmp).as_uri()))
    bounds = TimeBounds(written_at=datetime(2026, 1, 1, tzinfo=UTC), archived_before=None)

    def parse() -> list:
        return list(staged_jsonl(io.BytesIO(data), chunk_rows, source, bounds))

    parse()  # imports pyarrow
    parsing = []
    for _ in range(args.reps):
        started = time.process_time()
        chunks = parse()
        parsing.append(time.process_time() - started)
    staged = sum(chunk.rows for chunk, _ in chunks)
    assert staged == args.events, f"{staged} of {args.events} staged"

    url, name = fresh_database()
    server, client = [], []
    try:
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as pg:
            pid = pg.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            for rep in range(args.reps + 1):  # the first one warms the backend's caches
                with pg.transaction():
                    pg.execute(ingest._STAGE)  # type: ignore[call-overload]
                    on_server, here = _backend_seconds(pid), time.process_time()
                    for chunk, _ in chunks:
                        with pg.cursor() as cur, cur.copy(
                            "copy tf_stage (row_number, sub_index, transaction_id,"
                            " external_subscription_id, code, ts, properties, precise,"
                            " ts_given) from stdin"
                        ) as copy:
                            copy.write(chunk.data)
                    if rep:
                        server.append(_backend_seconds(pid) - on_server)
                        client.append(time.process_time() - here)
    finally:
        drop_database(None, name)
    per = 100_000 / args.events
    print(f"{args.events:,} events, chunks of {chunk_rows:,}; CPU per 100k events:")
    print(_line("parse (staged_jsonl)", parsing, per))
    print(_line("COPY, server backend", server, per))
    print(_line("COPY, this process", client, per))


if __name__ == "__main__":
    main()
