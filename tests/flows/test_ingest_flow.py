"""The ingest flow as Prefect runs it: summary, run history, artifacts, failure reporting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.flows.ingest import IngestFailed, ingest_events
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.summaries import IngestSummary
from tallyflow.tasks.ingest import SourceSpec
from tests.factories import event, jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _artifacts(flow_run_id: object) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )

    return asyncio.run(read())


def test_flow_ingests_reports_and_records_history(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(jsonl([event(i) for i in range(20)]) + "not json\n")
    (tmp_path / "b.jsonl").write_text(jsonl([event(i) for i in range(10, 30)]))
    state = ingest_events(SourceSpec(url=tmp_path.as_uri()), return_state=True)
    summary = state.result()
    assert {k: summary[k] for k in ("objects", "accepted", "duplicates", "rejected")} == {
        "objects": 2, "accepted": 30, "duplicates": 10, "rejected": 1,
    }
    assert mismatches(summary, IngestSummary) == []  # the Prefect result's shape
    with engine.connect() as conn:
        run = conn.execute(text("select * from ingest_runs")).mappings().one()
    assert run["status"] == "completed"
    assert run["flow_run_id"] == str(state.state_details.flow_run_id)
    assert (run["objects"], run["accepted"], run["rejected"]) == (2, 30, 1)
    # every record accounted for: 41 read = 40 emitted + 1 rejected + 0 empty; 40 events
    accounting = ("records", "records_emitted", "rejected", "records_empty", "events")
    assert tuple(summary[k] for k in accounting) == tuple(run[k] for k in accounting) == (
        41, 40, 1, 0, 40)
    artifacts = _artifacts(state.state_details.flow_run_id)
    kinds = {a.type for a in artifacts}
    assert {"progress", "table"} <= kinds
    (table,) = [a for a in artifacts if a.key == "ingest-objects"]
    assert "41 record(s) read = 40 emitted + 1 rejected + 0 empty (no_usage)" in (
        table.description or "")
    assert '"records": 21' in str(table.data) and '"empty (no_usage)": 0' in str(table.data)
    again = ingest_events(SourceSpec(url=tmp_path.as_uri()))
    assert (again["objects"], again["accepted"]) == (0, 0)


def test_flow_fails_at_the_end_when_an_object_is_unreadable(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "good.jsonl").write_text(jsonl([event(i) for i in range(5)]))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    state = ingest_events(SourceSpec(url=tmp_path.as_uri()), return_state=True)
    assert state.is_failed()
    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, IngestFailed)
    assert failure.summary["objects"] == 1 and failure.summary["failed_objects"] == 1
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from events")).scalar_one() == 5
        error = conn.execute(
            text("select error from ingest_objects where status = 'failed'")
        ).scalar_one()
    assert "Parquet" in error


def test_progress_is_announced_per_object_to_whoever_listens(
    engine: Engine, tmp_path: Path
) -> None:
    import logging

    from tallyflow.flows.ingest import PROGRESS

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.jsonl").write_text(jsonl([event(i, sub=name) for i in range(4)]))
    seen: list[tuple[int, int, int]] = []

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.done, record.total, record.result.accepted))  # type: ignore[attr-defined]

    listener = Listener()
    PROGRESS.addHandler(listener)
    PROGRESS.setLevel(logging.INFO)
    try:
        ingest_events(SourceSpec(url=tmp_path.as_uri()))
    finally:
        PROGRESS.removeHandler(listener)
    assert [(done, total) for done, total, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert sum(accepted for *_, accepted in seen) == 12
    ingest_events(SourceSpec(url=tmp_path.as_uri()))  # no listener: nothing to announce to
    assert len(seen) == 3
