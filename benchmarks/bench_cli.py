"""CLI start-up benchmark: what ``tallyflow ingest`` costs beyond the flow's own work.

    python benchmarks/bench_cli.py --events 1000000 --objects 10

Runs the real command in a child process, as a person does, and prints its wall time next to
the seconds the ``ingest-events`` flow itself reports, for a small object (median of several
runs) and for ``--events`` events. Runs are real Prefect flow runs on the local Prefect server
Tallyflow starts once under TALLYFLOW_HOME (a fresh temporary one here; its start-up is printed
separately because it happens once per machine, not per command), or on PREFECT_API_URL when
set. Each run uses a fresh database on the server TALLYFLOW_DATABASE_URL points at (default:
the local server at 127.0.0.1:5432), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from bench_ingest import drop_database, fresh_database, generate, prepare  # noqa: E402


def tallyflow(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tallyflow.cli", *args], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tallyflow {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, done


def ingest(env: dict[str, str], folder: Path) -> tuple[float, float, int]:
    wall, done = tallyflow(env, "ingest", str(folder), "--json")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, float(summary["seconds"]), int(summary["accepted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--small-events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="Small-object runs (median).")
    args = parser.parse_args()
    base = os.environ.get("TALLYFLOW_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url, name = fresh_database(base)
    home = Path(tempfile.mkdtemp(prefix="tfb-", dir="/tmp"))
    env = {**os.environ, "TALLYFLOW_DATABASE_URL": url, "TALLYFLOW_HOME": str(home)}
    managed = not os.environ.get("PREFECT_API_URL")
    try:
        prepare(url)
        if managed:
            seconds, _ = tallyflow(env, "prefect", "start")
            print(f"local Prefect server start (once per machine): {seconds:.2f} s")
        with tempfile.TemporaryDirectory(prefix="tf-bench-cli-") as tmp:
            small_walls, small_flows = [], []
            for n in range(args.repeat):
                folder = Path(tmp) / f"small-{n}"
                generate(folder, args.small_events, 1, 100)
                wall, flow, _ = ingest(env, folder)
                small_walls.append(wall)
                small_flows.append(flow)
            wall, flow = statistics.median(small_walls), statistics.median(small_flows)
            print(f"small object ({args.small_events} events), median of {args.repeat}: "
                  f"CLI {wall:.2f} s wall, flow {flow:.2f} s, start-up and exit "
                  f"{wall - flow:.2f} s (runs: {', '.join(f'{w:.2f}' for w in small_walls)})")
            big = Path(tmp) / "big"  # overlaps the small objects' ids: those are duplicates
            total = generate(big, args.events, args.objects, 10_000)
            wall, flow, accepted = ingest(env, big)
            print(f"{total:,} events in {args.objects} objects: CLI {wall:.2f} s wall, flow "
                  f"{flow:.2f} s, start-up and exit {wall - flow:.2f} s "
                  f"({accepted / flow:,.0f} events/s in the flow)")
    finally:
        if managed:
            tallyflow(env, "prefect", "stop")
        drop_database(base, name)


if __name__ == "__main__":
    main()
