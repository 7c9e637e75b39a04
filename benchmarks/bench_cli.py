"""CLI ingest benchmark: ``tallyflow ingest`` end to end against the bare-Postgres limit, in
the same run, on the same server.

    python benchmarks/bench_cli.py --events 1000000 --objects 10 [--embedded]

Runs the real command in a child process, as a person does, and prints:
  - the local Prefect server's start (once per machine, not per command);
  - a small object (median of ``--repeat`` runs): CLI wall time against the flow's own seconds;
  - ``--events`` Mistral-shaped events in ``--objects`` objects: events/s of the whole command
    (wall clock, start-up and exit included) and of the flow, next to the bare-Postgres limit
    (``scratch.bare_postgres``: COPY of the same rows into a staging table, then
    ``INSERT ... ON CONFLICT DO NOTHING`` into a plain table with the same unique key), measured
    just before and just after the command; the ratio uses their mean, since the machine's
    load moves during a run;
  - the command's peak memory, and again with the same number of new events in ONE object
    (memory must stay flat in object size).
With ``--embedded`` the command runs on Tallyflow's embedded PostgreSQL (a fresh
TALLYFLOW_HOME, as on a laptop); otherwise on a fresh database next to TALLYFLOW_DATABASE_URL
(default: the local server at 127.0.0.1:5432). Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import (
    bare_postgres,
    base_url,
    drop_database,
    fresh_database,
    generate,
    prepare,
)

GOAL_RATE = 100_000
GOAL_RATIO = 0.85
GOAL_MB = 1024


def tallyflow(env: dict[str, str], *args: str) -> tuple[float, str, float]:
    """Run one command: (wall seconds, stdout, peak RSS of the command's process in MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "tallyflow.cli", *args], env=env,
                                 stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"tallyflow {' '.join(args)} failed:\n{err.read()[-3000:]}")
        return wall, out.read(), usage.ru_maxrss / 1024


def ingest(env: dict[str, str], folder: Path) -> tuple[float, float, int, float]:
    wall, out, peak = tallyflow(env, "ingest", str(folder), "--json")
    summary = json.loads(out.strip().splitlines()[-1])
    return wall, float(summary["seconds"]), int(summary["accepted"]), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--small-events", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="Small-object runs (median).")
    parser.add_argument("--embedded", action="store_true",
                        help="Run on the embedded PostgreSQL (a fresh TALLYFLOW_HOME).")
    parser.add_argument("--skip-one-object", action="store_true",
                        help="Skip the memory run with all events in one object.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tfb-", dir="/tmp"))
    env = {**os.environ, "TALLYFLOW_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    managed = not os.environ.get("PREFECT_API_URL")
    name = None
    if args.embedded:
        env.pop("TALLYFLOW_DATABASE_URL", None)
        seconds, _, _ = tallyflow(env, "db", "status")
        print(f"embedded PostgreSQL start (once per machine): {seconds:.2f} s")
        from tallyflow.infra.settings import set_in_environment

        set_in_environment("TALLYFLOW_DATABASE_URL", None)
        set_in_environment("TALLYFLOW_HOME", str(home))
        from tallyflow.infra.db import start_embedded

        url = start_embedded()
    else:
        url, name = fresh_database()
        env["TALLYFLOW_DATABASE_URL"] = url
    try:
        prepare(url)
        if managed:
            seconds, _, _ = tallyflow(env, "prefect", "start")
            print(f"local Prefect server start (once per machine): {seconds:.2f} s")
        with tempfile.TemporaryDirectory(prefix="tf-bench-cli-") as tmp:
            small_walls, small_flows = [], []
            for n in range(args.repeat):
                folder = Path(tmp) / f"small-{n}"
                generate(folder, args.small_events, 1, 100, first=10**9 + n * args.small_events)
                wall, flow, _, _ = ingest(env, folder)
                small_walls.append(wall)
                small_flows.append(flow)
            wall, flow = statistics.median(small_walls), statistics.median(small_flows)
            print(f"small object ({args.small_events} events), median of {args.repeat}: "
                  f"CLI {wall:.2f} s wall, flow {flow:.2f} s, start-up and exit "
                  f"{wall - flow:.2f} s (runs: {', '.join(f'{w:.2f}' for w in small_walls)})")
            big = Path(tmp) / "big"
            total = generate(big, args.events, args.objects, args.subscriptions)
            bare_before = bare_postgres(url, big)
            wall, flow, accepted, peak = ingest(env, big)
            bare_after = bare_postgres(url, big)
            bare = (bare_before + bare_after) / 2
            cli_rate, flow_rate = accepted / wall, accepted / flow
            print(f"{total:,} events in {args.objects} objects ({accepted:,} accepted):")
            print(f"  bare PostgreSQL limit  {bare:>9,.0f} events/s"
                  f"  (before {bare_before:,.0f}, after {bare_after:,.0f})")
            print(f"  tallyflow ingest (CLI) {cli_rate:>9,.0f} events/s  {wall:.2f} s wall"
                  f"  ratio {cli_rate / bare:.2f}  goal >= {GOAL_RATE:,}/s and >= {GOAL_RATIO}")
            print(f"  the flow alone         {flow_rate:>9,.0f} events/s  {flow:.2f} s"
                  f"  ratio {flow_rate / bare:.2f}")
            print(f"  peak RSS of the command: {peak:.0f} MB (goal <= {GOAL_MB})")
            shutil.rmtree(big)
            if not args.skip_one_object:
                one = Path(tmp) / "one"
                generate(one, args.events, 1, args.subscriptions, first=args.events)
                wall, flow, accepted, peak = ingest(env, one)
                print(f"  one object of {accepted:,} events: {accepted / wall:,.0f} events/s"
                      f" (CLI), peak RSS {peak:.0f} MB (flat in object size: goal <= {GOAL_MB})")
    finally:
        if managed:
            tallyflow(env, "prefect", "stop")
        from tallyflow.infra import db

        db.dispose_engines()
        if args.embedded:
            tallyflow(env, "db", "stop")
        elif name is not None:
            drop_database(base_url(), name)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
