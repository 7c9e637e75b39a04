"""Unbillable events as a person sees them: a line per metric in ``tallyflow usage``, the counts
of the usage-snapshot run (``tallyflow snapshot``, ``tallyflow runs``, the run's artifact) and
the listing ``tallyflow rejects --unbillable``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.catalog import apply_catalog
from tests.tasks.rating_fixtures import ingest_events
from tests.tasks.usage.test_unbillable_counts import SUB, _catalog, _event

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()
AT = "2026-01-20T00:00:00Z"
EVENTS = [_event("nan-1", "abc"), _event("nan-2", True), _event("nan-3", "1,000"),
          _event("ok-1", 5), _event("b-1", 2, "b"), _event("z-1", 3, "zzz")]


def _artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC, limit=1,
            )
        return f"{found[0].description}\n{found[0].data}"

    return asyncio.run(read())


def test_usage_snapshot_runs_and_rejects_show_unbillable_events(
    engine: Engine, tmp_path: Path
) -> None:
    assert apply_catalog(engine, [_catalog(tmp_path / "catalog")]).ok
    ingest_events(engine, tmp_path, EVENTS)

    table = runner.invoke(app, ["usage", SUB, "--at", AT])
    assert table.exit_code == 0, table.output
    assert "unbillable: tokens: 3 event(s) not_a_number (e.g. nan-1, nan-2, nan-3)" in (
        table.stdout)
    assert "unbillable: tokens: 2 event(s) unpriced (e.g. b-1, z-1)" in table.stdout
    usage = json.loads(runner.invoke(app, ["usage", SUB, "--at", AT, "--json"]).stdout)
    assert [(u["reason"], u["count"]) for u in usage["tallyflow_unbillable"]] == [
        ("not_a_number", 3), ("unpriced", 2)]

    before = runner.invoke(app, ["rejects", "--unbillable", "--json"])
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout) == []  # listed as of the latest snapshot: none yet

    snap = runner.invoke(app, ["snapshot", "--at", AT, "--json"])
    assert snap.exit_code == 0, snap.output
    summary = json.loads(snap.stdout)
    assert (summary["not_a_number"], summary["unpriced"]) == (3, 2)
    artifact = _artifact("usage-snapshot-unbillable")
    assert "nan-1, nan-2, nan-3" in artifact and "3 not_a_number, 2 unpriced" in artifact

    runs = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    snapshot_run = next(r for r in runs if "not_a_number" in r["figures"])
    assert (snapshot_run["figures"]["not_a_number"], snapshot_run["figures"]["unpriced"]) == (
        3, 2)

    listed = runner.invoke(app, ["rejects", "--unbillable", "--subscription", SUB, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(r["subscription"], r["metric"], r["reason"], r["count"],
             r["sample_transaction_ids"]) for r in json.loads(listed.stdout)] == [
        (SUB, "tokens", "not_a_number", 3, ["nan-1", "nan-2", "nan-3"]),
        (SUB, "tokens", "unpriced", 2, ["b-1", "z-1"]),
    ]
    only = runner.invoke(app, ["rejects", "--unbillable", "--reason", "unpriced", "--json"])
    assert [r["reason"] for r in json.loads(only.stdout)] == ["unpriced"]
    other = runner.invoke(app, ["rejects", "--unbillable", "--subscription", "sub_x", "--json"])
    assert json.loads(other.stdout) == []
    hint = runner.invoke(app, ["rejects"])  # the rejected rows, and a pointer to these
    assert hint.exit_code == 0 and "3 not_a_number, 2 unpriced" in hint.stdout
    shown = runner.invoke(app, ["rejects", "--unbillable"])
    assert shown.exit_code == 0 and "not_a_number" in shown.stdout and "b-1, z-1" in (
        shown.stdout)


@pytest.mark.parametrize("args", [["--subscription", SUB], ["--unbillable", "--object", "x"]])
def test_options_that_do_not_apply_are_refused(engine: Engine, args: list[str]) -> None:
    result = runner.invoke(app, ["rejects", *args])
    assert result.exit_code == 2
