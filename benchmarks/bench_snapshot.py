"""Benchmark: hourly usage snapshot of N subscriptions on the Mistral plan, and ingest rate.

    .venv/bin/python benchmarks/bench_snapshot.py --events 1000000 10000000

For each event count E (in the current billing period): loads E - new events with SQL
generate_series (one ``ingest_objects`` row per chunk, as ingestion would leave them), runs the
``usage-snapshot`` flow once (folds all of them: the "catch-up" figure), adds ``--new`` events
and times the next hourly run (fold of the new objects + snapshot of every subscription). Then
ingests a JSONL object through the real ingest code and prints events/s. Uses a scratch
database on the local server (dropped afterwards) unless ``--url`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch_database

ROOT = Path(__file__).resolve().parents[1]

_EVENTS = text(
    """
    insert into events (external_subscription_id, transaction_id, code, "timestamp",
                        properties, object_id, row_number)
    select 'bench_' || lpad((g % :subs)::text, 6, '0'), 'b' || g, 'mistral_tokens',
           cast(:start as timestamptz) + (g % :span) * interval '1 second',
           jsonb_build_object(
             'tokens', 1 + (g * 7919) % 5000,
             'model', (array['mistral-small', 'mistral-medium', 'mistral-large'])[1 + g % 3],
             'type', (array['input', 'output'])[1 + (g / 3) % 2]),
           :oid, g - :lo
    from generate_series(cast(:lo as bigint), cast(:hi as bigint) - 1) g
    """
)


def load_events(
    engine: Engine, first: int, last: int, chunk: int, subs: int, start: datetime, span: int
) -> None:
    """Events ``first`` .. ``last - 1``, one ingested object per ``chunk`` events."""
    for lo in range(first, last, chunk):
        hi = min(lo + chunk, last)
        with engine.begin() as conn:
            oid = conn.execute(
                text(
                    "insert into ingest_objects (source, path, version, status, ingested_at,"
                    " rows, accepted) values ('bench', :p, '1', 'ingested', now(), :n, :n)"
                    " returning id"
                ),
                {"p": f"bench/{lo}", "n": hi - lo},
            ).scalar_one()
            conn.execute(
                _EVENTS,
                {"subs": subs, "start": start, "span": span, "oid": oid, "lo": lo, "hi": hi},
            )


def setup_catalog(engine: Engine, subs: int) -> None:
    from tallyflow.tasks.catalog import apply_catalog

    result = apply_catalog(engine, [ROOT / "examples" / "mistral"])
    assert result.ok, result.errors
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                insert into subscriptions (external_id, customer_id, plan_id, billing_time,
                  subscription_at, document, digest)
                select 'bench_' || lpad(g::text, 6, '0'), c.id, p.id, 'calendar',
                       '2024-01-01T05:00:00Z', '{}'::jsonb, ''
                from generate_series(0, :n - 1) g,
                     (select id from customers where external_id = 'acme') c,
                     (select id from plans where code = 'mistral_per_token') p
                """
            ),
            {"n": subs},
        )
        conn.execute(text("analyze"))


def timed_snapshot(as_of: datetime) -> tuple[float, dict]:
    from tallyflow.flows.usage_snapshot import usage_snapshot

    started = time.perf_counter()
    summary = usage_snapshot(as_of=as_of)
    return time.perf_counter() - started, summary


def ingest_rate(engine: Engine, events: int) -> float:
    """Events/s of the real ingest path (read, validate, COPY, dedup) for one JSONL object."""
    from tallyflow.tasks.ingest import SourceSpec, build_source, ingest_object, register_objects

    folder = Path(tempfile.mkdtemp(prefix="tf-bench-"))
    base = int(datetime.now(UTC).timestamp()) - 3600
    with (folder / "batch.jsonl").open("w") as handle:
        for i in range(events):
            handle.write(
                json.dumps(
                    {
                        "transaction_id": f"ing-{i}",
                        "external_subscription_id": f"bench_{i % 10000:06d}",
                        "code": "mistral_tokens",
                        "timestamp": base + i % 3000,
                        "properties": {
                            "tokens": 1 + i % 5000,
                            "model": "mistral-small",
                            "type": "input",
                        },
                    }
                )
                + "\n"
            )
    source = build_source(SourceSpec(url=folder.as_uri()))
    started = time.perf_counter()
    for object_id in register_objects(engine, source.key, source.list()):
        ingest_object(engine, source, object_id)
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=100_000, help="events since last snapshot")
    parser.add_argument("--chunk", type=int, default=100_000, help="events per object")
    parser.add_argument("--ingest-events", type=int, default=200_000)
    parser.add_argument("--url", help="an existing empty database (default: a scratch one)")
    args = parser.parse_args()

    from contextlib import nullcontext

    scratch = scratch_database() if args.url is None else nullcontext(args.url)
    with scratch as url:
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from tallyflow.infra.resources import billing_engine
        from tallyflow.infra.settings import set_in_environment

        set_in_environment("TALLYFLOW_DATABASE_URL", url)

        engine = billing_engine(url)
        setup_catalog(engine, args.subscriptions)
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        # Events spread over the first days of the current (New York, monthly) period.
        start = datetime(now.year, now.month, 2, 12, tzinfo=UTC)
        if start > now - timedelta(hours=2):
            start = now - timedelta(days=1)
        span = max(int((now - start).total_seconds()) - 3600, 60)
        loaded = 0
        hour = now
        print(f"subscriptions: {args.subscriptions}, new events per hour: {args.new}")
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            for target in sorted(args.events):
                base = target - args.new
                t0 = time.perf_counter()
                load_events(engine, loaded, base, args.chunk, args.subscriptions, start, span)
                with engine.begin() as conn:
                    conn.execute(text("analyze events"))
                load_s = time.perf_counter() - t0
                catch_up, _ = timed_snapshot(hour)
                load_events(engine, base, target, args.chunk, args.subscriptions, start, span)
                hour += timedelta(minutes=1)
                seconds, summary = timed_snapshot(hour)
                loaded = target
                print(
                    f"events in period {target:>11,}: hourly snapshot {seconds:6.2f} s"
                    f" (folded {summary['fold']['folded']:,} new events,"
                    f" {summary['snapshots']:,} snapshots);"
                    f" catch-up run {catch_up:6.2f} s; SQL load {load_s:6.1f} s",
                    flush=True,
                )
        rate = ingest_rate(engine, args.ingest_events)
        print(f"ingest: {rate:,.0f} events/s ({args.ingest_events:,} events, one JSONL object)")


if __name__ == "__main__":
    main()
