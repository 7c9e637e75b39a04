"""Scale-out benchmark: one ingest worker against two, draining the same objects.

    .venv/bin/python benchmarks/bench_workers.py [--events 400000] [--objects 8]

Each worker is a separate process running ``tasks.ingest.drain`` (list, then load every object
no other worker holds: SKIP LOCKED), as several Prefect workers on one work pool would. For one
and then two workers, on a fresh scratch database each, prints the wall time from "go" until
the last worker is done, events/s, and how many objects each worker loaded (each object is
loaded exactly once whatever the number of workers). On two cores shared with PostgreSQL the
second worker helps only as far as the first leaves a core idle.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import generate, prepare, scratch_database

_WORKER = """
import json, sys
from tallyflow.tasks.ingest.load import drain
from tallyflow.tasks.ingest.sources import SourceSpec, build_source
from tallyflow.infra.resources import billing_engine
source = build_source(SourceSpec(url=sys.argv[1]))
engine = billing_engine()
print("ready", flush=True)
sys.stdin.readline()
results = drain(engine, source)
print(json.dumps([r.status for r in results]), flush=True)
"""


def run(folder: Path, workers: int, url: str) -> tuple[float, list[int]]:
    env = {**os.environ, "TALLYFLOW_DATABASE_URL": url}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, folder.as_uri()], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    outputs = [proc.stdout.read() for proc in procs if proc.stdout is not None]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("a worker failed")
    seconds = time.perf_counter() - started
    loaded = [json.loads(out.strip().splitlines()[-1]).count("ingested") for out in outputs]
    return seconds, loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--objects", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tf-bench-workers-") as tmp:
        folder = Path(tmp)
        total = generate(folder, args.events, args.objects, 10_000)
        for workers in (1, 2):
            with scratch_database() as url:
                prepare(url)
                seconds, loaded = run(folder, workers, url)
            print(f"{workers} worker(s): {total:,} events in {args.objects} objects in "
                  f"{seconds:.2f} s = {total / seconds:,.0f} events/s; objects loaded per "
                  f"worker {loaded} (sum {sum(loaded)})", flush=True)


if __name__ == "__main__":
    main()
