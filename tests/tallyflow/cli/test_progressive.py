"""``tallyflow subscriptions lifetime-usage`` and ``bill-thresholds`` through the CLI: the
lifetime usage, the historical part set, a crossing billed once, an unknown subscription as
one line with a hint (docs/progressive-billing.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tests.tasks.invoicing.test_invoicing import catalog, usage_events

runner = CliRunner()
SUB = "sub_acme_001"


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_lifetime_usage_and_bill_thresholds(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, plan={"usage_thresholds": [{"amount_cents": 1000}]},
            wallet=False)
    usage_events(engine, tmp_path, datetime.now(UTC))  # 800 cents this period
    assert "lifetime usage 800 cents" in _ok(["subscriptions", "lifetime-usage", SUB])
    assert "0 progressive invoice(s) issued" in _ok(["subscriptions", "bill-thresholds"])
    out = json.loads(_ok(["subscriptions", "lifetime-usage", SUB, "--historical", "300",
                          "--json"]))["lifetime_usage"]
    assert out["external_historical_usage_amount_cents"] == 300
    assert out["usage_thresholds"][0]["completion_ratio"] == 1.0
    billed = _ok(["subscriptions", "bill-thresholds", SUB])
    assert "1 progressive invoice(s) issued" in billed and "thresholds [1000]" in billed
    assert "0 progressive invoice(s) issued" in _ok(["subscriptions", "bill-thresholds"])
    unknown = runner.invoke(app, ["subscriptions", "lifetime-usage", "nobody"])
    assert unknown.exit_code != 0 and "unknown subscription 'nobody'" in unknown.output
    assert "hint" in unknown.output
