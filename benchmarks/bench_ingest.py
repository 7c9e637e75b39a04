"""Ingest benchmark: Tallyflow end to end vs the bare-Postgres limit vs a naive baseline.

    python benchmarks/bench_ingest.py --events 1000000 --objects 10

Prints, on the same generated Mistral-shaped data:
  (a) events/s through the real ``ingest-events`` Prefect flow (list, read, validate, COPY,
      dedup, ledger), and its peak memory; then peak memory again with the same events in ONE
      object 10x larger (memory must not grow with object size);
  (b) the bare-Postgres limit: the same rows COPY'd into a staging table and inserted with
      ON CONFLICT into a table with the same unique key;
  (c) a naive baseline on a sample: per-event pydantic validation and SQLAlchemy ORM inserts.
Each run uses a fresh database on the server TALLYFLOW_DATABASE_URL points at (default: the
local server at 127.0.0.1:5432), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import (
    ROOT,
    bare_postgres,
    drop_database,
    fresh_database,
    generate,
    prepare,
)


def child_ingest(folder: str) -> None:
    """Run the flow in this (child) process and report its time and peak memory."""
    import resource

    from tallyflow.flows.ingest import ingest_events
    from tallyflow.tasks.ingest import SourceSpec

    started = time.perf_counter()
    summary = ingest_events(SourceSpec(url=Path(folder).as_uri()))
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "flow_seconds": summary["seconds"],
                "wall": wall,
                "peak_mb": peak_mb,
                "accepted": summary["accepted"],
            }
        )
    )


def run_child(folder: Path, url: str) -> dict:
    env = {
        **os.environ,
        "TALLYFLOW_DATABASE_URL": url,
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    out = subprocess.run(
        [sys.executable, __file__, "--child-ingest", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def naive(url: str, folder: Path, sample: int) -> float:
    """Per-event pydantic validation and ORM inserts: what a first version would do."""
    from datetime import UTC, datetime
    from typing import Any

    from pydantic import BaseModel
    from sqlalchemy import JSON, Column, DateTime, Text
    from sqlalchemy.orm import DeclarativeBase, Session

    class Base(DeclarativeBase):
        pass

    class NaiveEvent(Base):
        __tablename__ = "bench_naive_events"
        external_subscription_id = Column(Text, primary_key=True)
        transaction_id = Column(Text, primary_key=True)
        code = Column(Text)
        timestamp = Column(DateTime(timezone=True))
        properties = Column(JSON)

    class EventIn(BaseModel):
        transaction_id: str
        external_subscription_id: str
        code: str
        timestamp: int
        properties: dict[str, Any]

    engine = create_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    lines = (ROOT / folder / sorted(os.listdir(folder))[0]).read_text().splitlines()[:sample]
    started = time.perf_counter()
    with Session(engine) as session:
        for line in lines:
            e = EventIn.model_validate_json(line)
            session.add(
                NaiveEvent(
                    external_subscription_id=e.external_subscription_id,
                    transaction_id=e.transaction_id,
                    code=e.code,
                    timestamp=datetime.fromtimestamp(e.timestamp, UTC),
                    properties=e.properties,
                )
            )
            session.flush()
        session.commit()
    seconds = time.perf_counter() - started
    Base.metadata.drop_all(engine)
    engine.dispose()
    return len(lines) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--child-ingest")
    args = parser.parse_args()
    if args.child_ingest:
        child_ingest(args.child_ingest)
        return
    from tallyflow.infra.settings import get_settings

    base = get_settings().database_url or "postgresql://postgres@127.0.0.1:5432/postgres"
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        many, one = Path(tmp) / "many", Path(tmp) / "one"
        total = generate(many, args.events, args.objects, args.subscriptions)
        generate(one, args.events, 1, args.subscriptions)
        print(
            f"data: {total:,} events in {args.objects} objects "
            f"({sum(p.stat().st_size for p in many.iterdir()) / 1e6:.0f} MB), and in 1 object"
        )
        results = {}
        for label, folder in (("many", many), ("one", one)):
            url, name = fresh_database(base)
            try:
                prepare(url)
                results[label] = run_child(folder, url)
                if label == "many":
                    results["bare"] = bare_postgres(url, many)
                    results["naive"] = naive(url, many, args.naive_sample)
            finally:
                drop_database(base, name)
    a = results["many"]["accepted"] / results["many"]["flow_seconds"]
    print(
        f"(a) tallyflow flow:  {a:>10,.0f} events/s  ({results['many']['flow_seconds']:.2f} s "
        f"in the flow, {results['many']['wall']:.2f} s with Prefect start-up)"
    )
    print(
        f"(b) bare postgres:   {results['bare']:>10,.0f} events/s  (a)/(b) = "
        f"{a / results['bare']:.2f}"
    )
    print(
        f"(c) naive baseline:  {results['naive']:>10,.0f} events/s  "
        f"(sample of {args.naive_sample:,})"
    )
    print(
        f"peak memory: {results['many']['peak_mb']:.0f} MB with {args.objects} objects, "
        f"{results['one']['peak_mb']:.0f} MB with 1 object of {total:,} events "
        f"({results['one']['accepted'] / results['one']['flow_seconds']:,.0f} events/s)"
    )


if __name__ == "__main__":
    main()
