"""``tallyflow export`` through the CLI: a file written, and mistakes as one line + hint."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.tasks.wallets import open_catalog_wallets
from tests.tasks.rating_fixtures import apply_mistral

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


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["export", "ledger", "-o", "x.csv"], 2, "error: unknown export 'ledger'"),
        (["export", "usage", "-o", "x.json"], 2, "error: cannot write 'x.json'"),
    ],
)
def test_export_mistakes(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         args: list[str], code: int, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.stderr.splitlines()[0].startswith(message)
    assert result.stderr.splitlines()[1].startswith("hint: ")
