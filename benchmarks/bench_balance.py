"""Benchmark: the running balance a gateway asks on every request (issue 29, item 3).

Goals: >= 2,000 reads/s of ``GET /api/v1/tallyflow/customers/{id}/balance`` with p99 <= 20 ms
while events arrive through the API at 2,000/s, and the balance reflects an event within 2 s
of its 200 (docs/architecture.md §19).

    TALLYFLOW_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_balance.py [--seconds 20] [--readers 8]

A scratch database is created next to the one in the URL and dropped afterwards; the Mistral
catalog is applied with 20 subscriptions of ``acme`` and one of a ``probe`` customer. Two
children run as in production: ``tallyflow api`` (it loads the objects it writes) and
``tallyflow wallets refresh-balances --every 0.2``. Load clients post 100-event batches paced
to 2,000 events/s; readers read acme's balance as fast as they can; a probe posts one large
event to its own customer and polls the balance until its usage shows it. The clients are
asyncio tasks over one keep-alive connection each (``lean_http``); the report gives the CPU
the two children and the clients each used, and the load average at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from lean_http import Connection, CpuMeter
from scratch import drop_database, fresh_database

ROOT = Path(__file__).resolve().parents[1]
SUBSCRIPTIONS = 20
PROBE = "sub_probe"
RATE = 2000  # events/s offered
PREFIX = "/api/v1"


def _catalog(folder: Path) -> None:
    shutil.copytree(ROOT / "examples" / "mistral", folder)
    (folder / "wallet.json").unlink(missing_ok=True)
    sub = json.loads((folder / "subscription.json").read_text())
    subs: list[dict[str, Any]] = [
        {"subscription": {**sub["subscription"], "external_id": f"sub_{i}"}}
        for i in range(SUBSCRIPTIONS)]
    subs.append({"subscription": {**sub["subscription"], "external_id": PROBE,
                                  "external_customer_id": "probe"}})
    (folder / "subscription.json").write_text(json.dumps(subs))
    (folder / "probe_customer.json").write_text(json.dumps(
        {"customer": {"external_id": "probe", "currency": "USD"}}))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(sub: str, txn: str, tokens: int = 1234) -> dict[str, object]:
    return {"transaction_id": txn, "external_subscription_id": sub, "code": "mistral_tokens",
            "timestamp": int(time.time()), "properties": {"tokens": tokens,
                                                          "model": "mistral-small",
                                                          "type": "input"}}


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else float("nan")


class Bench:
    """The load, the readers and the probe against one running API: asyncio tasks, one
    keep-alive connection each (``lean_http``)."""

    def __init__(self, port: int, headers: dict[str, str], clients: int) -> None:
        self.port, self.headers, self.clients = port, headers, clients
        self.stop = asyncio.Event()
        self.accepted = [0] * clients
        self.reads: list[float] = []
        self.read_errors = 0
        self.delays: list[float] = []
        self.direct: list[float] = []

    def connection(self) -> Connection:
        return Connection("127.0.0.1", self.port, self.headers)

    async def load(self, worker: int) -> None:
        """100-event batches, paced so all clients together offer RATE events/s."""
        interval = 100 * self.clients / RATE
        client = self.connection()
        n, next_at = 0, time.perf_counter()
        while not self.stop.is_set():
            batch = [_event(f"sub_{(worker + i) % SUBSCRIPTIONS}", f"w{worker}-{n}-{i}")
                     for i in range(100)]
            answer = await client.request("POST", f"{PREFIX}/events/batch",
                                          orjson.dumps({"events": batch}), 30)
            if answer.status == 200:
                self.accepted[worker] += 100
            n += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        client.close()

    async def read(self) -> None:
        client = self.connection()
        while not self.stop.is_set():
            started = time.perf_counter()
            answer = await client.request("GET", f"{PREFIX}/tallyflow/customers/acme/balance",
                                          None, 30)
            if answer.status == 200:
                self.reads.append(time.perf_counter() - started)
            else:
                self.read_errors += 1
        client.close()

    def read_direct(self, url: str, stop: threading.Event) -> None:
        """The read's SQL alone (``customer_balance`` on one connection), in a thread: what
        HTTP adds is the difference (``--direct``; it shares the clients' process)."""
        from tallyflow.infra import db
        from tallyflow.tasks.wallets import customer_balance

        with db.get_engine(url).connect() as conn:
            while not stop.is_set():
                started = time.perf_counter()
                customer_balance(conn, "acme", 0)
                conn.commit()
                self.direct.append(time.perf_counter() - started)

    async def _ongoing(self, client: Connection) -> Any:
        answer = await client.request("GET", f"{PREFIX}/tallyflow/customers/probe/balance",
                                      None, 30)
        return orjson.loads(answer.body)["balance"]["ongoing_usage_cents"]

    async def probe(self) -> None:
        """One 100-package event at a time to ``probe``; the delay until its balance shows it."""
        client = self.connection()
        i = 0
        while not self.stop.is_set():
            before = await self._ongoing(client)
            answer = await client.request("POST", f"{PREFIX}/events/batch", orjson.dumps(
                {"events": [_event(PROBE, f"probe-{i}", 100_000_000)]}), 30)
            answered = time.perf_counter()
            assert answer.status == 200, answer.body
            while await self._ongoing(client) <= before:
                if time.perf_counter() - answered > 60:
                    raise SystemExit(f"probe {i} not reflected within 60 s")
                await asyncio.sleep(0.02)
            self.delays.append(time.perf_counter() - answered)
            i += 1
            await asyncio.sleep(0.3)
        client.close()

    async def run(self, readers: int, seconds: float) -> float:
        tasks = [asyncio.create_task(self.load(w)) for w in range(self.clients)]
        tasks += [asyncio.create_task(self.read()) for _ in range(readers)]
        tasks.append(asyncio.create_task(self.probe()))
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        self.stop.set()
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def _wait_up(api: str, headers: dict[str, str], process: subprocess.Popen[bytes],
             log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{api}/customers", headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("tallyflow api did not start:\n" + log.read_text())
        time.sleep(0.2)


def _report(bench: Bench, elapsed: float, meter: CpuMeter) -> None:
    reads = len(bench.reads) / elapsed
    p99 = _p(bench.reads, 99) * 1000
    events = sum(bench.accepted) / elapsed
    p95 = _p(bench.delays, 95)
    print(f"balance reads under ingest, {elapsed:.1f} s, {datetime.now(UTC):%Y-%m-%d %H:%M}Z, "
          f"{os.cpu_count()} cores")
    print(meter.line().replace("server", "server (API + refresh)"))
    print(f"  events accepted: {events:,.0f}/s (offered {RATE:,}/s)")
    print(f"  balance reads: {reads:,.0f}/s   goal >= 2,000/s  "
          f"{'MET' if reads >= 2000 else 'NOT MET'}")
    print(f"  read latency: median {statistics.median(bench.reads) * 1000:.1f} ms, "
          f"p99 {p99:.1f} ms   goal p99 <= 20 ms  {'MET' if p99 <= 20 else 'NOT MET'}; "
          f"errors {bench.read_errors}")
    if bench.direct:
        print(f"  the read's SQL alone (one connection, same load): "
              f"{len(bench.direct) / elapsed:,.0f}/s, median "
              f"{statistics.median(bench.direct) * 1000:.2f} ms, "
              f"p99 {_p(bench.direct, 99) * 1000:.2f} ms")
    if bench.delays:
        print(f"  200 -> in the balance ({len(bench.delays)} probes): median "
              f"{statistics.median(bench.delays):.2f} s, p95 {p95:.2f} s, max "
              f"{max(bench.delays):.2f} s   goal <= 2 s  "
              f"{'MET' if max(bench.delays) <= 2 else 'NOT MET'}")


def _run(url: str, work: Path, args: argparse.Namespace,
         children: list[subprocess.Popen[bytes]]) -> None:
    """Start the API and the refresh loop; run the load; print the figures."""
    from tallyflow.api.keys import create_key
    from tallyflow.infra import db, migrate
    from tallyflow.tasks.catalog import apply_catalog

    engine = db.get_engine(url)
    migrate.upgrade(engine)
    _catalog(work / "catalog")
    assert apply_catalog(engine, [work / "catalog"]).ok
    key, _ = create_key(engine, "bench")
    port = _free_port()
    env = {**os.environ, "TALLYFLOW_DATABASE_URL": url, "TALLYFLOW_HOME": str(work / "home"),
           "TALLYFLOW_API_BUCKET": (work / "bucket").as_uri()}
    children.extend(
        subprocess.Popen([sys.executable, "-m", "tallyflow.cli", *argv], env=env,
                         stdout=(work / f"{argv[0]}.log").open("wb"),
                         stderr=subprocess.STDOUT, start_new_session=True)
        for argv in (["api", "--port", str(port)],
                     ["wallets", "refresh-balances", "--every", "0.2"]))
    api = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Bearer {key}"}
    _wait_up(api, headers, children[0], work / "api.log")
    bench = Bench(port, headers, args.clients)
    meter = CpuMeter(children[0].pid, children[1].pid)
    api_meter = CpuMeter(children[0].pid)
    stop_direct = threading.Event()
    direct = threading.Thread(target=bench.read_direct, args=(url, stop_direct))
    if args.direct:
        direct.start()
    meter.start()
    api_meter.start()
    elapsed = asyncio.run(bench.run(args.readers, args.seconds))
    meter.stop()
    api_meter.stop()
    stop_direct.set()
    if args.direct:
        direct.join()
    _report(bench, elapsed, meter)
    requests = len(bench.reads) + sum(bench.accepted) // 100
    print(f"  API process CPU: {api_meter.server:.1f} s for {len(bench.reads)} reads and "
          f"{sum(bench.accepted) // 100} batches = {api_meter.server / max(requests, 1) * 1e6:,.0f}"
          f" us per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="Load duration.")
    parser.add_argument("--clients", type=int, default=4, help="Event posting clients.")
    parser.add_argument("--readers", type=int, default=8, help="Balance reading clients.")
    parser.add_argument("--direct", action="store_true",
                        help="Also time the read's SQL alone, in a thread of the clients.")
    args = parser.parse_args()

    from tallyflow.infra import db

    url, name = fresh_database()
    work = Path(tempfile.mkdtemp(prefix="tallyflow-bench-balance-"))
    children: list[subprocess.Popen[bytes]] = []
    try:
        _run(url, work, args, children)
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait(30)
        db.dispose_engines()
        drop_database(None, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
