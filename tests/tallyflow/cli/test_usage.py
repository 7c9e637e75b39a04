"""``tallyflow usage`` (JSON and table), ``usage rebuild`` and ``snapshot`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import CustomerUsage
from tests.tasks.rating_fixtures import SUB, apply_mistral, ingest_events, token_event

runner = CliRunner()


def test_usage_json_table_rebuild_and_snapshot(
    engine: Engine, tmp_path: Path, prefect_harness: None
) -> None:
    apply_mistral(engine, tmp_path)
    ingest_events(engine, tmp_path, [token_event("a", "2025-03-10T00:00:00Z", 2_000_001)])

    result = runner.invoke(app, ["usage", SUB, "--at", "2025-03-15T00:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    usage = json.loads(result.stdout)
    assert usage["amount_cents"] == 300
    assert usage["from_datetime"] == "2025-03-01T05:00:00Z"
    assert usage["charges_usage"][0]["filters"][0]["units"] == "2000001"
    assert mismatches(usage, CustomerUsage) == []

    table = runner.invoke(app, ["usage", SUB, "--at", "1742000000"])
    assert table.exit_code == 0, table.output
    assert "mistral-small input tokens" in table.stdout and "3.00 USD" in table.stdout

    snap = runner.invoke(app, ["snapshot", "--at", "2025-03-15T10:00:00Z", "--json"])
    assert snap.exit_code == 0, snap.output
    assert json.loads(snap.stdout)["snapshots"] == 1
    with engine.connect() as conn:
        assert conn.execute(text("select amount_cents from usage_amounts")).scalar_one() == 300

    rebuilt = runner.invoke(app, ["usage", "rebuild", "--metric", "mistral_tokens"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "1 event(s) folded" in rebuilt.stdout

    bad = runner.invoke(app, ["usage", "sub_nobody", "--at", "2025-03-15T00:00:00Z"])
    assert bad.exit_code == 1 and "unknown subscription" in bad.stderr
    naive = runner.invoke(app, ["usage", SUB, "--at", "2025-03-15T00:00:00"])
    assert naive.exit_code != 0
