"""Benchmark: `tallyflow api` under load, as Lago SDKs drive it (issue 28, item 4).

Goals: 300 concurrent clients in one run (half posting ``POST /api/v1/events/batch`` of 100,
Lago's batch limit, half posting ``POST /api/v1/events`` one event each) on this project's
2-core machine: >= 10,000 events/s accepted in batches and >= 1,000 single-event requests/s,
p95 accept latency <= 250 ms for both, p95 <= 2 s from a 200 answer to the event counting in
``GET .../current_usage``, and every event stored exactly once although clients retry.

    TALLYFLOW_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_api.py [--seconds 20] [--clients 300] [--probes 40]

Clients are asyncio tasks, one keep-alive connection each (``lean_http``: httpx cost more CPU
than the server's routes, so it measured mostly itself), with the Python SDK's 5 s timeout.
Like the SDKs, a client retries the same body on 429 (after ``Retry-After``) and on a timeout
or a dropped connection, until it gets a 200; when the run ends each finishes the request it
has. At the end every transaction id a client sent is looked up: it must be stored exactly
once. The report gives the CPU the server and the clients each used during the load, and the
load average at its start (the clients share the machine's two cores with the server).

A scratch database is created next to the one in the URL and dropped afterwards; the Mistral
catalog is applied with 20 subscriptions. The API runs as a real ``tallyflow api`` child
process on loopback (its bucket a temporary folder).
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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from lean_http import Connection, CpuMeter, HttpError
from scratch import drop_database, fresh_database
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
SUBSCRIPTIONS = 20
PROBE = "sub_probe"
PREFIX = "/api/v1"


def _catalog(folder: Path) -> None:
    shutil.copytree(ROOT / "examples" / "mistral", folder)
    sub = json.loads((folder / "subscription.json").read_text())
    subs = [{"subscription": {**sub["subscription"], "external_id": f"sub_{i}"}}
            for i in range(SUBSCRIPTIONS)]
    subs.append({"subscription": {**sub["subscription"], "external_id": PROBE}})
    (folder / "subscription.json").write_text(json.dumps(subs))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _event(sub: str, txn: str, now: int) -> dict[str, object]:
    return {"transaction_id": txn, "external_subscription_id": sub, "code": "mistral_tokens",
            "timestamp": now, "properties": {"tokens": 1234, "model": "mistral-small",
                                             "type": "input"}}


SDK_TIMEOUT = 5.0  # the Python SDK's batch timeout


@dataclass
class Figures:
    """What the clients saw: accepted events per kind, latencies of answered attempts, the
    latency of a request including its retries, and each refusal or timeout."""

    events: dict[str, int] = field(default_factory=lambda: {"batch": 0, "single": 0})
    requests: dict[str, int] = field(default_factory=lambda: {"batch": 0, "single": 0})
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"batch": [], "single": []})
    total: dict[str, list[float]] = field(default_factory=lambda: {"batch": [], "single": []})
    refused: int = 0
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)


RETRIED = (TimeoutError, OSError, asyncio.IncompleteReadError, HttpError)


async def _post(client: Connection, path: str, body: dict[str, Any], kind: str,
                figures: Figures) -> None:
    """One SDK request: retried on 429 (after Retry-After) and on timeouts until a 200."""
    first = time.perf_counter()
    data = orjson.dumps(body)
    while True:
        started = time.perf_counter()
        try:
            answer = await client.request("POST", PREFIX + path, data, SDK_TIMEOUT)
        except RETRIED:
            figures.timeouts += 1
            continue
        if answer.status == 429:
            figures.refused += 1
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            continue
        if answer.status != 200:
            figures.errors.append(f"{answer.status} {answer.body[:200]!r}")
            return
        now = time.perf_counter()
        figures.latencies[kind].append(now - started)
        figures.total[kind].append(now - first)
        return


async def _client(worker: int, kind: str, client: Connection, stop: asyncio.Event,
                  figures: Figures) -> None:
    n = 0
    while not stop.is_set():
        size = 100 if kind == "batch" else 1
        events = [_event(f"sub_{(worker + i) % SUBSCRIPTIONS}", f"{kind[0]}{worker}-{n}-{i}",
                         int(time.time())) for i in range(size)]
        figures.sent.extend(e["transaction_id"] for e in events)  # type: ignore[misc]
        if kind == "batch":
            await _post(client, "/events/batch", {"events": events}, kind, figures)
        else:
            await _post(client, "/events", {"event": events[0]}, kind, figures)
        figures.events[kind] += size
        figures.requests[kind] += 1
        n += 1
    client.close()


async def _probe(client: Connection, stop: asyncio.Event, probes: int,
                 figures: Figures) -> None:
    """One event at a time to its own subscription; from its 200 to counting in usage."""
    for i in range(probes):
        if stop.is_set():
            return
        event = _event(PROBE, f"probe-{i}", int(time.time()))
        figures.sent.append(str(event["transaction_id"]))
        await _post(client, "/events", {"event": event}, "probe", figures)
        answered = time.perf_counter()
        while True:
            usage = await client.request("GET", f"{PREFIX}/customers/acme/current_usage"
                                         f"?external_subscription_id={PROBE}", None, 30)
            if usage.status == 200 and \
                    orjson.loads(usage.body)["customer_usage"]["events_count"] >= i + 1:
                figures.delays.append(time.perf_counter() - answered)
                break
            if time.perf_counter() - answered > 60:
                raise SystemExit(f"probe {i} did not count within 60 s")
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)


async def _load(api: str, headers: dict[str, str], clients: int, seconds: float,
                probes: int, meter: CpuMeter) -> tuple[Figures, float]:
    figures = Figures()
    figures.latencies["probe"], figures.total["probe"] = [], []
    port = int(api.rsplit(":", 1)[1].split("/")[0])
    stop = asyncio.Event()
    meter.start()
    tasks = [asyncio.create_task(_client(w, "batch" if w % 2 == 0 else "single",
                                         Connection("127.0.0.1", port, headers), stop,
                                         figures)) for w in range(clients)]
    prober = asyncio.create_task(_probe(Connection("127.0.0.1", port, headers), stop, probes,
                                        figures))
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    meter.stop()
    await prober
    return figures, elapsed


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 2 else float("nan")


def _verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _report(args: argparse.Namespace, figures: Figures, elapsed: float, stored: int,
            distinct: int, missing: int, drain: float, meter: CpuMeter) -> None:
    batch_rate = figures.events["batch"] / elapsed
    single_rate = figures.requests["single"] / elapsed
    print(f"tallyflow api, {args.clients} clients ({args.clients - args.clients // 2} x "
          f"POST /events/batch of 100, {args.clients // 2} x POST /events), {elapsed:.1f} s, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M}Z, {args.workers} API worker process(es)")
    print(meter.line())
    accepted = figures.events["batch"] + figures.events["single"]
    if accepted and meter.server:
        print(f"  server CPU per accepted event (accept + store + load, all requests): "
              f"{meter.server / accepted * 1e6:,.0f} us = {accepted / meter.server:,.0f} "
              f"events per server CPU-second")
    print(f"  batches: {figures.events['batch']} events = {batch_rate:,.0f} events/s   "
          f"goal >= 10,000/s  {_verdict(batch_rate >= 10_000)}")
    print(f"  singles: {figures.requests['single']} requests = {single_rate:,.0f} requests/s"
          f"   goal >= 1,000/s  {_verdict(single_rate >= 1_000)}")
    for kind in ("batch", "single"):
        lat, total = figures.latencies[kind], figures.total[kind]
        if not lat:
            continue
        print(f"  {kind} accept latency (answered attempt): median "
              f"{statistics.median(lat) * 1000:.0f} ms, p95 {_p95(lat) * 1000:.0f} ms   goal "
              f"p95 <= 250 ms  {_verdict(_p95(lat) <= 0.25)}; with retries p95 "
              f"{_p95(total) * 1000:.0f} ms, max {max(total) * 1000:.0f} ms")
    print(f"  429 answers: {figures.refused}; timeouts retried: {figures.timeouts}; "
          f"other errors: {len(figures.errors)} {figures.errors[:3]}")
    if figures.delays:
        print(f"  200 -> counted in current usage ({len(figures.delays)} probes under load): "
              f"median {statistics.median(figures.delays):.2f} s, p95 {_p95(figures.delays):.2f}"
              f" s, max {max(figures.delays):.2f} s   goal p95 <= 2 s  "
              f"{_verdict(_p95(figures.delays) <= 2)}")
    once = stored == distinct == len(figures.sent) and missing == 0
    print(f"  exactly once: {len(figures.sent)} events sent, {stored} rows stored, {distinct} "
          f"distinct, {missing} missing   {_verdict(once)}; all loaded {drain:.1f} s after "
          f"the load stopped")


def _start_api(url: str, work: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "TALLYFLOW_DATABASE_URL": url, "TALLYFLOW_HOME": str(work / "home"),
           "TALLYFLOW_API_BUCKET": (work / "bucket").as_uri()}
    process = subprocess.Popen(
        [sys.executable, "-m", "tallyflow.cli", "api", "--port", str(port),
         *(["--workers", str(workers)] if workers > 1 else [])], env=env,
        stdout=(work / "api.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    return process, f"http://127.0.0.1:{port}/api/v1"


def _wait_ready(process: subprocess.Popen[bytes], api: str, headers: dict[str, str],
                work: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{api}/customers", headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("tallyflow api did not start:\n" + (work / "api.log").read_text())
        time.sleep(0.2)


def _check_stored(engine: Any, figures: Figures) -> tuple[int, int, int, float]:
    """Wait until every sent event is loaded (or 120 s), then count rows and ids."""
    drain_started = time.perf_counter()
    expected = len(set(figures.sent))
    while True:
        with engine.connect() as conn:
            stored = conn.execute(text("select count(*) from events")).scalar_one()
        if stored >= expected or time.perf_counter() - drain_started > 120:
            break
        time.sleep(0.1)
    drain = time.perf_counter() - drain_started
    with engine.connect() as conn:
        stored, distinct = conn.execute(text(
            "select count(*), count(distinct transaction_id) from events")).one()
        missing = conn.execute(text(
            "select count(*) from unnest(cast(:ids as text[])) as s(id) where not exists"
            " (select 1 from events e where e.transaction_id = s.id)"),
            {"ids": figures.sent}).scalar_one()
    return stored, distinct, missing, drain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="Load duration.")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--probes", type=int, default=40, help="Delay samples (at most).")
    parser.add_argument("--workers", type=int, default=1, help="`tallyflow api --workers`.")
    args = parser.parse_args()

    from tallyflow.api.keys import create_key
    from tallyflow.infra import db, migrate
    from tallyflow.tasks.catalog import apply_catalog

    url, name = fresh_database()
    work = Path(tempfile.mkdtemp(prefix="tallyflow-bench-api-"))
    process = None
    try:
        engine = db.get_engine(url)
        migrate.upgrade(engine)
        _catalog(work / "catalog")
        assert apply_catalog(engine, [work / "catalog"]).ok
        key, _ = create_key(engine, "bench")
        headers = {"Authorization": f"Bearer {key}"}
        process, api = _start_api(url, work, args.workers)
        _wait_ready(process, api, headers, work)
        meter = CpuMeter(process.pid)  # its own session: the pid is the group
        figures, elapsed = asyncio.run(_load(api, headers, args.clients, args.seconds,
                                             args.probes, meter))
        stored, distinct, missing, drain = _check_stored(engine, figures)
        _report(args, figures, elapsed, stored, distinct, missing, drain, meter)
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        db.dispose_engines()
        drop_database(None, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
