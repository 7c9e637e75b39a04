"""Mapping benchmark: records/s and events/s through read + map + validate + COPY formatting.

    python benchmarks/bench_mappings.py --records 200000

The per-record Python work of ingestion (everything but Postgres), for Lago events (the
identity mapping, the fast path) and for each built-in LLM mapping on records shaped like its
golden fixture. No database: this isolates what a mapping costs on the hot path.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# Where the id of a coded mapping's record is (declarative ones say so in their file).
CODED_IDS = {"lago": "transaction_id", "cloudevents": "id",
             "otel-genai": "resourceSpans.0.scopeSpans.0.spans.0.spanId"}


def records_like(mapping: object, count: int) -> bytes:
    """``count`` records shaped like the golden's first, with distinct ids."""
    first = json.loads(mapping.golden.read_text().splitlines()[0])  # type: ignore[attr-defined]
    spec = getattr(mapping, "spec", None)
    path = (spec.transaction_id.path.split("|")[0] if spec is not None
            else CODED_IDS.get(mapping.name, "id"))  # type: ignore[attr-defined]
    *parents, leaf = path.split(".")
    lines = []
    for i in range(count):
        record = json.loads(json.dumps(first))
        holder = record
        for part in parents:
            holder = holder[int(part)] if part.isdigit() else holder[part]
        holder[leaf] = f"{holder[leaf]}-{i}"
        lines.append(json.dumps(record))
    return ("\n".join(lines) + "\n").encode()


def measure(name: str, data: bytes) -> tuple[float, float]:
    from tallyflow.models.events import TimeBounds
    from tallyflow.tasks.ingest import SourceSpec, build_source, read_jsonl, validated

    source = build_source(SourceSpec(url="memory://bench", mapping=name))
    bounds = TimeBounds(written_at=datetime(2026, 1, 1, tzinfo=UTC))
    started = time.perf_counter()
    events = rows = 0
    for staged, rejected in validated(read_jsonl(io.BytesIO(data), 20_000), source, bounds):
        events += staged.rows
        rows += len(rejected)
    seconds = time.perf_counter() - started
    assert rows == 0, f"{name}: {rows} rejected"
    return seconds, events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    from tallyflow.tasks.ingest import plugins

    print(f"{'mapping':<20}{'records/s':>12}{'events/s':>12}{'events/record':>15}")
    for name, mapping in sorted(plugins.mappings().items()):
        if mapping.golden is None:
            continue
        data = records_like(mapping, args.records)
        seconds, events = measure(name, data)
        print(f"{name:<20}{args.records / seconds:>12,.0f}{events / seconds:>12,.0f}"
              f"{events / args.records:>15.1f}")


if __name__ == "__main__":
    main()
