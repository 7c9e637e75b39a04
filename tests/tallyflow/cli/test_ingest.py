"""``tallyflow ingest`` and ``tallyflow rejects`` as a person or a script uses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tests.factories import event, jsonl

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()


def test_ingest_json_summary_then_rejects(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        jsonl([event(1), event(2), event(2), event(3, code="unknown_metric")])
        + '{"transaction_id": "x"}\n'
    )
    (tmp_path / "skip.txt").write_text("not an event object")
    result = runner.invoke(app, ["ingest", str(tmp_path), "--pattern", "*.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in (
        "objects", "accepted", "duplicates", "conflicts", "rejected", "unbillable",
        "failed_objects"
    )} == {"objects": 1, "accepted": 3, "duplicates": 1, "conflicts": 0, "rejected": 1,
           "unbillable": 3, "failed_objects": 0}
    # every record accounted for: 5 read = 4 emitted + 1 rejected + 0 empty; 4 events
    assert {k: summary[k] for k in ("records", "records_emitted", "records_empty", "events")} == {
        "records": 5, "records_emitted": 4, "records_empty": 0, "events": 4}

    listed = runner.invoke(app, ["rejects", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["row_number"], row["field"], row["reason"]) == (
        5, "external_subscription_id", "missing_field",
    )

    out = tmp_path / "rejects.jsonl"
    exported = runner.invoke(app, ["rejects", "export", "-o", str(out), "--mark-exported"])
    assert exported.exit_code == 0, exported.output
    (line,) = out.read_text().splitlines()
    assert json.loads(json.loads(line)["raw"]) == {"transaction_id": "x"}
    assert json.loads(runner.invoke(app, ["rejects", "--json"]).stdout) == []


def test_ingest_exits_non_zero_when_an_object_fails(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00truncated")
    result = runner.invoke(app, ["ingest", tmp_path.as_uri()])
    assert result.exit_code == 1
    assert "next run retries them" in result.stdout
