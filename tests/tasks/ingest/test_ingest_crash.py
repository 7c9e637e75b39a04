"""Crashes mid-object: the object's transaction dies with the process, the rerun loads it once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from sqlalchemy import Engine, text

from tallyflow.tasks.ingest import build_source, ingest_object, register_objects
from tallyflow.tasks.runs import is_transient
from tests.factories import event, jsonl
from tests.faults import damage_at, terminate_other_backends, wait_for_open_transactions_to_end
from tests.storage import Bucket

EVENTS = 30_000

_LOADER = """
import json, sys
from tallyflow.tasks.ingest import ingest_object, register_objects
from tallyflow.tasks.ingest.sources import SourceSpec, build_source
from tallyflow.infra.resources import billing_engine
spec = SourceSpec.model_validate(json.loads(sys.argv[1]))
engine = billing_engine()
source = build_source(spec)
for object_id in register_objects(engine, source.key, source.list()):
    ingest_object(engine, source, object_id, chunk_rows=2_000)
"""


def _totals(engine: Engine) -> tuple[int, int, str]:
    with engine.connect() as conn:
        events = conn.execute(text("select count(*) from events")).scalar_one()
        distinct = conn.execute(
            text("select count(distinct (external_subscription_id, transaction_id)) from events")
        ).scalar_one()
        status = conn.execute(text("select string_agg(status, ',') from ingest_objects")).scalar()
    return int(events), int(distinct), status or ""


def _ingest_everything(engine: Engine, bucket: Bucket) -> None:
    source = build_source(bucket.spec())
    for object_id in register_objects(engine, source.key, source.list()):
        ingest_object(engine, source, object_id)


@pytest.fixture()
def big_object(bucket: Bucket) -> Bucket:
    bucket.put("big.jsonl", jsonl([event(i) for i in range(EVENTS)]))
    return bucket


def test_killed_process_mid_object_then_rerun_counts_every_event_once(
    engine: Engine, big_object: Bucket
) -> None:
    if big_object.url.startswith("memory://"):
        pytest.skip("memory:// lives inside one process; see the backend-termination test")
    spec = json.dumps(big_object.spec().model_dump(mode="json"))
    env = {**os.environ, "TALLYFLOW_FAILPOINTS": "ingest.after_copy=5"}  # mid-object
    loader = subprocess.run(
        [sys.executable, "-c", _LOADER, spec], env=env, timeout=120, check=False
    )
    assert loader.returncode == -signal.SIGKILL
    wait_for_open_transactions_to_end(engine)  # the dead client's transaction is rolled back
    assert _totals(engine)[0] == 0
    _ingest_everything(engine, big_object)
    assert _totals(engine) == (EVENTS, EVENTS, "ingested")


def test_backend_killed_mid_object_then_rerun_counts_every_event_once(
    engine: Engine, big_object: Bucket
) -> None:
    """The same crash seen from the database side: the loader's connection is terminated."""
    source = build_source(big_object.spec())
    (object_id,) = register_objects(engine, source.key, source.list())
    with damage_at("ingest.after_copy=5", lambda: terminate_other_backends(engine)) as done:
        with pytest.raises(Exception) as crash:
            ingest_object(engine, source, object_id, chunk_rows=2_000)
    assert done and done[0] >= 1
    assert is_transient(crash.value), crash.value
    assert _totals(engine)[0] == 0
    _ingest_everything(engine, big_object)
    assert _totals(engine) == (EVENTS, EVENTS, "ingested")
