"""``tallyflow runs``: run history of every flow, readable without SQL."""

from __future__ import annotations

import json

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.ingest import ObjectResult, finish_run, start_run

runner = CliRunner()


def test_runs_lists_ingest_and_wallet_runs_newest_first(engine: Engine) -> None:
    run_id = start_run(engine, "file:///bucket", "0b7c2a0e-0000-4000-8000-000000000001")
    finish_run(engine, run_id, [ObjectResult(1, "file:///bucket/a.jsonl", "ingested",
                                             rows=4, accepted=2, rejected=2, conflicts=1,
                                             records=5, records_emitted=2, records_empty=1,
                                             events=3)], 0.5)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into wallet_runs (as_of, flow_run_id, status, started_at)"
            " values ('2026-11-27T10:00:00Z', 'wallet-run', 'completed', now() + interval '1s')"
        ))
    result = runner.invoke(app, ["runs", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["kind"] for r in rows] == ["wallets", "ingest"]
    ingest = rows[1]
    assert ingest["flow_run_id"] == "0b7c2a0e-0000-4000-8000-000000000001"
    assert (ingest["figures"]["accepted"], ingest["figures"]["rejected"],
            ingest["figures"]["conflicts"]) == (2, 2, 1)
    assert {k: ingest["figures"][k] for k in (
        "records", "records_emitted", "records_empty", "events")} == {
        "records": 5, "records_emitted": 2, "records_empty": 1, "events": 3}
    table = runner.invoke(app, ["runs"])
    assert table.exit_code == 0 and "ingest" in table.stdout
    assert "conflicts 1" in table.stdout


def test_runs_show_the_conflicts_of_a_tracked_ingest_run(engine: Engine) -> None:
    """An ingest run recorded in the run history (as every flow run is) shows its conflicting
    duplicates beside its other figures."""
    flow_run_id = "0b7c2a0e-0000-4000-8000-000000000003"
    with engine.begin() as conn:
        conn.execute(text(
            "insert into run_history (flow_run_id, kind, name, status, started_at)"
            " values (:id, 'ingest', 'ingest-events', 'completed', now())"), {"id": flow_run_id})
    run_id = start_run(engine, "file:///bucket", flow_run_id)
    finish_run(engine, run_id, [ObjectResult(1, "file:///bucket/b.jsonl", "ingested",
                                             rows=5, accepted=2, duplicates=1, conflicts=2,
                                             rejected=2)], 0.5)
    (row,) = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert row["figures"]["conflicts"] == 2
    table = runner.invoke(app, ["runs"], env={"COLUMNS": "200"})
    assert "conflicts 2" in table.stdout


def test_runs_link_to_the_prefect_ui_when_a_server_is_configured(engine: Engine) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    start_run(engine, "file:///bucket", "0b7c2a0e-0000-4000-8000-000000000002")
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect.internal:4200/api"}):
        (row,) = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert row["url"] == (
        "http://prefect.internal:4200/runs/flow-run/0b7c2a0e-0000-4000-8000-000000000002"
    )
