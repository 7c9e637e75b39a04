"""Two worker processes draining one source at once: every object is loaded by exactly one of
them, every event is stored once (SKIP LOCKED claims, docs/architecture.md: exactly once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, text

from tallyflow.tasks.ingest import SourceSpec
from tests.factories import event, jsonl

OBJECTS = 12
PER_OBJECT = 3_000

# Each worker imports everything, says it is ready and blocks on its stdin until the test says
# go (so both really drain at once), then prints what it did with every object.
_WORKER = """
import json, sys
from tallyflow.tasks.ingest.load import drain
from tallyflow.tasks.ingest.sources import SourceSpec, build_source
from tallyflow.infra.resources import billing_engine
source = build_source(SourceSpec.model_validate(json.loads(sys.argv[1])))
engine = billing_engine()
print("ready", flush=True)
sys.stdin.readline()
results = drain(engine, source, chunk_rows=500)
print(json.dumps({r.object_id: r.status for r in results}))
"""


def test_two_workers_load_each_object_once(engine: Engine, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for n in range(OBJECTS):
        # every object repeats the previous object's last 100 events: dedup across workers
        first = max(n * PER_OBJECT - 100, 0)
        records = [event(i) for i in range(first, (n + 1) * PER_OBJECT)]
        (bucket / f"part-{n:02d}.jsonl").write_text(jsonl(records))
    spec = json.dumps(SourceSpec(url=bucket.as_uri()).model_dump(mode="json"))
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, spec], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        for _ in range(2)
    ]
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        for w in workers:  # both go before either is waited for
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.close()
        outputs = [w.stdout.read() for w in workers if w.stdout is not None]
        for w in workers:
            w.wait(timeout=300)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert [w.returncode for w in workers] == [0, 0]
    seen = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    loaded = [{int(k) for k, status in s.items() if status == "ingested"} for s in seen]
    # each object loaded by exactly one worker; the other one skipped it
    assert loaded[0].isdisjoint(loaded[1])
    assert len(loaded[0] | loaded[1]) == OBJECTS
    with engine.connect() as conn:
        events, distinct = conn.execute(text(
            "select count(*), count(distinct (external_subscription_id, transaction_id))"
            " from events")).one()
        attempts = conn.execute(text(
            "select array_agg(distinct attempts), array_agg(distinct status)"
            " from ingest_objects")).one()
    assert events == distinct == OBJECTS * PER_OBJECT
    assert attempts == ([1], ["ingested"])
