"""``tallyflow export`` through the CLI: a file written, and mistakes as one line + hint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import ExportWritten
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tasks.rating_fixtures import apply_mistral, ingest_events, token_event

runner = CliRunner()


def test_export_writes_the_file_and_says_how_many_rows(engine: Engine, tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    open_catalog_wallets(engine)  # as `tallyflow apply` does: granted credits settle
    out = tmp_path / "ledger.csv"
    result = runner.invoke(app, ["export", "wallet-transactions", "-o", str(out),
                                 "--customer", "acme"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert result.stdout.strip() == f"wrote {len(rows)} row(s) of wallet-transactions to {out}"
    assert rows and {r["external_customer_id"] for r in rows} == {"acme"}


def test_events_export_prints_the_watermark_for_the_next_run(engine: Engine,
                                                             tmp_path: Path) -> None:
    apply_mistral(engine, tmp_path)
    seen: list[str] = []
    since: list[str] = []
    for run in range(3):
        ingest_events(engine, tmp_path, [token_event(f"c{run}-{n}", "2025-03-10T12:00:00Z", 5)
                                         for n in range(run)])
        out = tmp_path / f"events-{run}.csv"
        result = runner.invoke(app, ["export", "events", str(out), *since, "--json"])
        assert result.exit_code == 0, result.output
        done = json.loads(result.stdout)
        assert mismatches(done, ExportWritten) == []
        rows = list(csv.DictReader(out.open()))
        assert done == {"export": "events", "file": str(out), "rows": len(rows),
                        "watermark": [0, 1, 3][run]}
        seen += [r["transaction_id"] for r in rows]
        since = ["--since", str(done["watermark"])]
    assert seen == ["c1-0", "c2-0", "c2-1"]
    out = tmp_path / "again.parquet"
    result = runner.invoke(app, ["export", "events", "-o", str(out), *since])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"wrote 0 row(s) of events to {out}",
                                          "watermark: 3 (next time: --since 3)"]
    assert pq.read_table(out).num_rows == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["export", "ledger", "-o", "x.csv"], 2, "error: unknown export 'ledger'"),
        (["export", "usage", "-o", "x.json"], 2, "error: cannot write 'x.json'"),
        (["export", "usage", "x.csv", "-o", "y.csv"], 2, "error: name one file to write"),
        (["export", "usage"], 2, "error: name one file to write"),
        (["export", "events", "x.csv", "--since", "2025-01-01T00:00:00Z"], 2,
         "error: --since '2025-01-01T00:00:00Z' is not a watermark"),
        (["export", "events", "x.csv", "--until", "2025-01-01T00:00:00Z"], 2,
         "error: the events export takes no time window"),
    ],
)
def test_export_mistakes(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         args: list[str], code: int, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.stderr.splitlines()[0].startswith(message)
    assert result.stderr.splitlines()[1].startswith("hint: ")
