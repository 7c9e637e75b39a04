"""Benchmark: `tallyflow api` under load, as a Lago SDK would drive it.

Goals (issue 16): >= 2,000 events/s accepted by ``POST /api/v1/events/batch`` (100 events a
request, 8 concurrent clients) on this project's 2-core machine, and p95 <= 2 s from a 200
answer to the event counting in ``GET .../current_usage``.

    TALLYFLOW_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_api.py [--seconds 20] [--clients 8] [--probes 40]

A scratch database is created next to the one in the URL and dropped afterwards; the Mistral
catalog is applied with 20 subscriptions. The API runs as a real ``tallyflow api`` child
process on loopback (its bucket a temporary folder). While the load clients post, a probe
posts one event to its own subscription, notes when the 200 came, and polls current usage
until the event counts there.
"""

from __future__ import annotations

import argparse
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
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[1]
SUBSCRIPTIONS = 20
PROBE = "sub_probe"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="Load duration.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probes", type=int, default=40, help="Delay samples (at most).")
    args = parser.parse_args()

    from tallyflow.infra.settings import get_settings

    base = get_settings().database_url or "postgresql://postgres@127.0.0.1:5432/postgres"
    from tallyflow.api.keys import create_key
    from tallyflow.infra import db, migrate
    from tallyflow.tasks.catalog import apply_catalog

    admin_url = make_url(db.normalise_url(base)).set(database="postgres")
    name = f"tallyflow_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    work = Path(tempfile.mkdtemp(prefix="tallyflow-bench-api-"))
    process = None
    try:
        engine = db.get_engine(url)
        migrate.upgrade(engine)
        _catalog(work / "catalog")
        assert apply_catalog(engine, [work / "catalog"]).ok
        key, _ = create_key(engine, "bench")
        port = _free_port()
        env = {**os.environ, "TALLYFLOW_DATABASE_URL": url, "TALLYFLOW_HOME": str(work / "home"),
               "TALLYFLOW_API_BUCKET": (work / "bucket").as_uri()}
        process = subprocess.Popen(
            [sys.executable, "-m", "tallyflow.cli", "api", "--port", str(port)], env=env,
            stdout=(work / "api.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        api = f"http://127.0.0.1:{port}/api/v1"
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{api}/customers", headers=headers, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("tallyflow api did not start:\n" + (work / "api.log").read_text())
            time.sleep(0.2)

        stop = threading.Event()
        accepted = [0] * args.clients
        latencies: list[float] = []
        errors: list[str] = []

        def load(worker: int) -> None:
            with httpx.Client(headers=headers, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    now = int(time.time())
                    batch = [_event(f"sub_{(worker + i) % SUBSCRIPTIONS}",
                                    f"w{worker}-{n}-{i}", now) for i in range(100)]
                    started = time.perf_counter()
                    answer = client.post(f"{api}/events/batch", json={"events": batch})
                    if answer.status_code != 200:
                        errors.append(answer.text[:200])
                        continue
                    latencies.append(time.perf_counter() - started)
                    accepted[worker] += 100
                    n += 1

        delays: list[float] = []

        def probe() -> None:
            with httpx.Client(headers=headers, timeout=30) as client:
                for i in range(args.probes):
                    if stop.is_set():
                        return
                    answer = client.post(f"{api}/events/batch", json={"events": [
                        _event(PROBE, f"probe-{i}", int(time.time()))]})
                    answered = time.perf_counter()
                    assert answer.status_code == 200, answer.text
                    while True:
                        usage = client.get(f"{api}/customers/acme/current_usage",
                                           params={"external_subscription_id": PROBE})
                        if usage.json()["customer_usage"]["events_count"] >= i + 1:
                            delays.append(time.perf_counter() - answered)
                            break
                        if time.perf_counter() - answered > 60:
                            raise SystemExit(f"probe {i} did not count within 60 s")
                        time.sleep(0.02)
                    time.sleep(0.2)

        threads = [threading.Thread(target=load, args=(w,)) for w in range(args.clients)]
        prober = threading.Thread(target=probe)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        prober.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        prober.join()
        total = sum(accepted)
        # everything answered is loaded: wait for it, for the drain figure
        drain_started = time.perf_counter()
        while True:
            with engine.connect() as conn:
                loaded = conn.execute(text("select count(*) from events")).scalar_one()
            if loaded >= total + len(delays):
                break
            time.sleep(0.1)
        drain = time.perf_counter() - drain_started
        with engine.connect() as conn:
            objects = conn.execute(text("select count(*) from ingest_objects")).scalar_one()

        rate = total / elapsed
        p95 = statistics.quantiles(delays, n=20)[18] if len(delays) >= 2 else float("nan")
        lat95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else 0.0
        print(f"tallyflow api, {args.clients} clients x POST /events/batch of 100, "
              f"{elapsed:.1f} s, {datetime.now(UTC):%Y-%m-%d %H:%M}Z, load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"  accepted: {total} events = {rate:,.0f} events/s "
              f"({rate / 100:,.1f} requests/s)   goal >= 2,000 events/s  "
              f"{'MET' if rate >= 2000 else 'NOT MET'}")
        print(f"  request latency: median {statistics.median(latencies) * 1000:.0f} ms, "
              f"p95 {lat95 * 1000:.0f} ms; errors: {len(errors)}")
        print(f"  200 -> counted in current usage ({len(delays)} probes under load): "
              f"median {statistics.median(delays):.2f} s, p95 {p95:.2f} s, max {max(delays):.2f} s"
              f"   goal p95 <= 2 s  {'MET' if p95 <= 2 else 'NOT MET'}")
        print(f"  objects written: {objects} ({total / max(objects, 1):.0f} events each); "
              f"all loaded {drain:.1f} s after the load stopped")
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        db.dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
