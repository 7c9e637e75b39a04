"""``tallyflow apply`` and ``tallyflow catalog export|show`` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.results import CatalogApplyOutput

ROOT = Path(__file__).resolve().parents[3]
MISTRAL = ROOT / "examples" / "mistral"
FIXTURES = ROOT / "tests" / "fixtures" / "catalog"

runner = CliRunner()


def test_apply_prints_a_summary(engine: Engine) -> None:
    result = runner.invoke(app, ["apply", str(MISTRAL)])
    assert result.exit_code == 0, result.output
    assert "catalog apply" in result.stdout
    for kind in ("billable_metric", "plan", "customer", "subscription", "wallet"):
        assert kind in result.stdout
    again = runner.invoke(app, ["apply", str(MISTRAL), "--json"])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert mismatches(summary, CatalogApplyOutput) == []
    assert summary["ok"] is True
    assert summary["kinds"]["plan"] == {"created": 0, "updated": 0, "unchanged": 1}


def test_apply_with_errors_exits_1_and_lists_every_error(engine: Engine) -> None:
    bad_plan = FIXTURES / "invalid" / "bad_plan.json"
    result = runner.invoke(app, ["apply", str(MISTRAL), str(FIXTURES / "invalid")])
    assert result.exit_code == 1
    assert f"{bad_plan}: plan.charges[0].properties.amount: must be a decimal string" in (
        result.stderr)
    assert ("plan.charges[1].properties.graduated_ranges[1].from_value: must equal the "
            "previous to_value (100) or 101") in result.stderr
    assert "bad_wallet.json: wallet.currency: EUR differs" in result.stderr
    assert "3 error(s); nothing was applied." in result.stderr
    as_json = runner.invoke(app, ["apply", str(FIXTURES / "invalid"), "--json"])
    assert as_json.exit_code == 1
    refused = json.loads(as_json.stdout)
    assert len(refused["errors"]) == 3 and mismatches(refused, CatalogApplyOutput) == []


def test_catalog_export_and_show(engine: Engine, tmp_path: Path) -> None:
    assert runner.invoke(app, ["apply", str(MISTRAL)]).exit_code == 0
    exported = runner.invoke(app, ["catalog", "export"])
    assert exported.exit_code == 0, exported.output
    envelopes = json.loads(exported.stdout)
    assert [next(iter(e)) for e in envelopes] == [
        "billable_metric", "plan", "customer", "subscription", "wallet"]
    to_folder = runner.invoke(app, ["catalog", "export", "--output", str(tmp_path / "cat")])
    assert to_folder.exit_code == 0 and (tmp_path / "cat" / "plans.json").exists()
    reapplied = runner.invoke(app, ["apply", str(tmp_path / "cat"), "--json"])
    assert json.loads(reapplied.stdout)["kinds"]["wallet"]["unchanged"] == 1
    shown = runner.invoke(app, ["catalog", "show"])
    assert shown.exit_code == 0, shown.output
    assert "mistral_per_token" in shown.stdout
    assert "model=mistral-medium, type=output: 8.1 per 1000000 units" in shown.stdout
