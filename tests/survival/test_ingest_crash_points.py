"""kill -9 the real ingest flow at every named crash point, rerun, compare with a clean run.

Each trial arms one failpoint (tallyflow/failpoints.py) in a child process running the real
``ingest-events`` flow against the session's Prefect server, checks the child died by SIGKILL
at that point, reruns the flow, and then requires the database to hold exactly what a single
clean run over the same objects holds: every valid event once, every bad row once, every object
ingested, nothing else.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.ingest import SourceSpec
from tests.factories import event, jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")

# (failpoint, hit): spread over listing, reading, loading and committing.
CRASH_POINTS = [
    ("ingest.after_listing", 1),
    ("ingest.after_claim", 1),
    ("ingest.after_open", 2),
    ("ingest.after_read_chunk", 3),
    ("ingest.after_copy", 1),
    ("ingest.after_copy", 4),
    ("ingest.after_merge", 2),
    ("ingest.after_rejects", 1),
    ("ingest.before_ledger", 2),
    ("ingest.before_commit", 1),
    ("ingest.after_commit", 2),
    ("ingest.before_finish_run", 1),
]

_CHILD = """
import sys
from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.ingest.sources import SourceSpec
ingest_events(SourceSpec(url=sys.argv[1]), chunk_rows=400)
"""


def _write_batches(folder: Path) -> None:
    """Three objects, three formats; overlaps are true replays (same content)."""
    a = [event(i) for i in range(1500)]
    a.insert(700, {"transaction_id": "bad-1"})  # missing fields
    lines = jsonl(a).splitlines()
    lines.insert(100, '{"broken": ')
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    b = [event(i) for i in range(1000, 2200)]  # 500 replayed from a.jsonl
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(b).encode()))
    rows = ["transaction_id,external_subscription_id,code,timestamp,properties.tokens"]
    rows += [f"c-{i},sub_acme_001,mistral_tokens,{1_764_000_000 + i},{i}" for i in range(300)]
    rows.append("c-x,sub_acme_001,mistral_tokens,2025-11-24T16:00:00,1")  # no zone
    (folder / "c.csv").write_text("\n".join(rows) + "\n")


EXPECTED_EVENTS = 2200 + 300
EXPECTED_REJECTS = {("a.jsonl", 101, "invalid_json"), ("a.jsonl", 702, "missing_field"),
                    ("c.csv", 301, "timestamp_without_zone")}


def _state(engine: Engine) -> dict:
    with engine.connect() as conn:
        events = conn.execute(
            text(
                "select external_subscription_id, transaction_id, code, \"timestamp\","
                " properties::text from events order by 1, 2"
            )
        ).all()
        rejects = conn.execute(
            text(
                "select o.path, r.row_number, r.reason from rejected_rows r"
                " join ingest_objects o on o.id = r.object_id"
            )
        ).all()
        objects = conn.execute(text("select path, status from ingest_objects")).all()
    return {
        "events": [tuple(e) for e in events],
        "rejects": sorted((p.rsplit("/", 1)[-1], n, reason) for p, n, reason in rejects),
        "objects": sorted((p.rsplit("/", 1)[-1], s) for p, s in objects),
    }


@pytest.fixture(scope="module")
def clean_run(
    database_url: str, prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """The reference: one uninterrupted run over the same objects."""
    from tallyflow.infra import db
    from tallyflow.models.tables import metadata

    folder = tmp_path_factory.mktemp("clean")
    _write_batches(folder)
    engine = db.get_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "truncate " + ", ".join(f'"{t.name}"' for t in metadata.sorted_tables) + " cascade"
        ))
    summary = ingest_events(SourceSpec(url=folder.as_uri()), chunk_rows=400)
    assert summary["accepted"] == EXPECTED_EVENTS
    state = _state(engine)
    assert len(state["events"]) == EXPECTED_EVENTS
    assert set(state["rejects"]) == EXPECTED_REJECTS
    return state


@pytest.mark.parametrize(("point", "hit"), CRASH_POINTS, ids=[f"{p}-{h}" for p, h in CRASH_POINTS])
def test_kill_at_crash_point_then_rerun_equals_clean_run(
    clean_run: dict, engine: Engine, tmp_path: Path, point: str, hit: int
) -> None:
    from prefect.settings import PREFECT_API_URL

    _write_batches(tmp_path)
    env = {**os.environ, "TALLYFLOW_FAILPOINTS": f"{point}={hit}",
           "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, tmp_path.as_uri()],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert child.returncode == -signal.SIGKILL, (
        f"{point}={hit} was not reached: exit {child.returncode}\n{child.stderr[-2000:]}"
    )
    ingest_events(SourceSpec(url=tmp_path.as_uri()), chunk_rows=400)
    after = _state(engine)
    for key in ("events", "rejects", "objects"):
        assert after[key] == clean_run[key], key
    assert json.dumps(after, default=str) == json.dumps(clean_run, default=str)
