"""Ingest under faults: the database drops connections, the object store dies mid-read, three
runs race over one prefix, batches are dropped again under new names."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.ingest import IngestFailed, ingest_events
from tallyflow.tasks.ingest import SourceSpec
from tests.factories import event, jsonl
from tests.faults import damage_at, terminate_other_backends

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_backend_terminated_mid_flow_is_retried_and_completes(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "a.jsonl").write_text(jsonl([event(i) for i in range(20_000)]))
    with damage_at("ingest.after_copy=3", lambda: terminate_other_backends(engine)) as done:
        summary = ingest_events(SourceSpec(url=tmp_path.as_uri()), chunk_rows=2_000)
    assert done and done[0] >= 1, "the loader's connection was terminated mid-object"
    assert (summary["objects"], summary["accepted"]) == (1, 20_000)
    assert _count(engine, "select count(*) from events") == 20_000
    assert _count(engine, "select attempts from ingest_objects") == 1  # the dead try left nothing


def test_object_store_dies_mid_read_then_next_run_ingests(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.server import ThreadedMotoServer

    from tests.storage import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # This store is stopped and restarted inside the test (moto's in-process server keeps its
    # buckets across the restart) and does not check credentials: any signed request passes.
    # Credentials are covered by tests/flows/test_ingest_s3.py against a server that checks.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "in-process-store")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "in-process-store")
    bucket = f"tf-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="in-process-store", aws_secret_access_key="in-process-store",
    )
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="small.jsonl", Body=jsonl([event(i) for i in range(10)]))
    spec = SourceSpec(
        url=f"s3://{bucket}", options={"endpoint_url": endpoint, "block_size": 256 * 1024}
    )
    assert ingest_events(spec)["accepted"] == 10
    client.put_object(
        Bucket=bucket, Key="zbig.jsonl", Body=jsonl([event(i) for i in range(100, 80_100)])
    )

    # some chunks of zbig are loaded, the rest is still in the store when it dies
    with damage_at("ingest.after_copy=2", server.stop):
        with pytest.raises(IngestFailed) as failed:
            ingest_events(spec, chunk_rows=2_000)
    assert (failed.value.summary["failed_objects"], failed.value.summary["objects"]) == (1, 0)
    with engine.connect() as conn:
        status = dict(conn.execute(text("select path, status from ingest_objects")).all())
    assert status[f"s3://{bucket}/zbig.jsonl"] == "failed"
    assert _count(engine, "select count(*) from events") == 10  # nothing partial of zbig

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()  # moto keeps its buckets in the process: the store is back as it was
    try:
        summary = ingest_events(spec, chunk_rows=2_000)
    finally:
        server.stop()
    assert (summary["objects"], summary["accepted"]) == (1, 80_000)
    assert _count(engine, "select count(*) from events") == 80_010


_CHILD = """
import sys
from tallyflow.flows.ingest import ingest_events
from tallyflow.tasks.ingest.sources import SourceSpec
print(ingest_events(SourceSpec(url=sys.argv[1]), chunk_rows=500))
"""


def test_three_concurrent_flow_runs_ingest_each_object_once(
    engine: Engine, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    for n in range(9):
        (tmp_path / f"part-{n}.jsonl").write_text(
            jsonl([event(n * 10_000 + i) for i in range(2_000)])
        )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    runs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, tmp_path.as_uri()], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for run in runs:
        _, err = run.communicate(timeout=180)
        assert run.returncode == 0, err[-2000:]
    assert _count(engine, "select count(*) from events") == 18_000
    assert _count(engine, "select count(*) from ingest_objects where status = 'ingested'") == 9
    assert _count(engine, "select sum(attempts) from ingest_objects") == 9
    assert _count(engine, "select sum(objects) from ingest_runs") == 9
    assert _count(engine, "select sum(duplicates) from ingest_objects") == 0


def test_batches_dropped_again_under_new_names_add_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    batch = jsonl([event(i) for i in range(1_000)])
    (tmp_path / "2025-11-24.jsonl").write_text(batch)
    ingest_events(SourceSpec(url=tmp_path.as_uri()))
    for copy in range(3):
        (tmp_path / f"replay-{copy}.jsonl").write_text(batch)
    summary = ingest_events(SourceSpec(url=tmp_path.as_uri()))
    assert (summary["objects"], summary["accepted"], summary["duplicates"]) == (3, 0, 3_000)
    assert _count(engine, "select count(*) from events") == 1_000
