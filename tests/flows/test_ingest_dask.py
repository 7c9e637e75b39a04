"""Ingestion fanned out on a local two-worker Dask cluster: still exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.ingest import on_dask
from tallyflow.tasks.ingest import SourceSpec
from tests.factories import event, jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_ingest_on_a_two_worker_dask_cluster_is_exactly_once(
    engine: Engine, tmp_path: Path
) -> None:
    for n in range(6):
        # part-5 replays part-0: dedup across workers must keep one copy
        first = 0 if n == 5 else n * 1_000
        (tmp_path / f"part-{n}.jsonl").write_text(jsonl([event(first + i) for i in range(500)]))
    summary = on_dask(workers=2)(SourceSpec(url=tmp_path.as_uri()))
    assert (summary["objects"], summary["accepted"], summary["duplicates"]) == (6, 2_500, 500)
    with engine.connect() as conn:
        events = conn.execute(text("select count(*) from events")).scalar_one()
        attempts = conn.execute(text("select sum(attempts) from ingest_objects")).scalar_one()
    assert (events, attempts) == (2_500, 6)
    assert on_dask(workers=2)(SourceSpec(url=tmp_path.as_uri()))["objects"] == 0
