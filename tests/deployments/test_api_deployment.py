"""``ingest-events/api`` where the API was never used: its folder does not exist, and a run
finds no objects and completes, instead of failing (and paging) every five minutes (issue 32).
Runs the deployment's own parameters, as ``tallyflow serve`` and ``prefect deploy --all`` give
them; the regular source still fails on a missing folder (a mistake worth a page)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tallyflow.deployments.serve import deployment_specs
from tallyflow.errors import UserError
from tallyflow.flows.ingest import ingest_events
from tests.factories import event, jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _parameters(name: str) -> dict:
    return next(spec for spec in deployment_specs() if spec["name"] == name)["parameters"]


def test_an_api_bucket_never_written_is_an_empty_source(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = tmp_path / "api-bucket"  # absent: the API never ran here
    monkeypatch.setenv("TALLYFLOW_API_BUCKET", str(bucket))
    parameters = _parameters("api")
    assert parameters["source"]["url"] == f"{bucket.as_uri()}/api"
    summary = ingest_events(**parameters)
    assert summary["objects"] == 0 and summary["failed_objects"] == 0
    with engine.connect() as conn:
        assert conn.execute(text("select status from run_history")).scalars().all() == [
            "completed"]
    # once the API writes there, the same deployment loads what it wrote
    (bucket / "api").mkdir(parents=True)
    (bucket / "api" / "events.jsonl").write_text(jsonl([event(1), event(2)]))
    assert ingest_events(**_parameters("api"))["accepted"] == 2


def test_the_scheduled_source_still_fails_on_a_missing_folder(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYFLOW_SOURCE_URL", (tmp_path / "typo").as_uri())
    with pytest.raises(UserError, match="no such file or folder"):
        ingest_events(**_parameters("interval"))
