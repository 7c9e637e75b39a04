"""``tallyflow alerts`` through the CLI: create, list, evaluate, triggered, delete, and a
refused type as one line (lago-api spec/services/usage_monitoring/create_alert_service_spec.rb)."""

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


def test_alerts_commands(engine: Engine, tmp_path: Path) -> None:
    catalog(engine, tmp_path, wallet=False)  # since March 2025: usage now is this period's
    usage_events(engine, tmp_path, datetime.now(UTC))
    assert "created units" in _ok(["alerts", "create", SUB, "--type",
                                   "billable_metric_current_usage_units", "--code", "units",
                                   "--metric", "mistral_tokens", "--threshold", "1:one",
                                   "--recurring", "1000000"])
    [alert] = json.loads(_ok(["alerts", "list", SUB, "--json"]))["alerts"]
    assert [t["recurring"] for t in alert["thresholds"]] == [False, True]
    assert "1 alert(s) triggered" in _ok(["alerts", "evaluate"])
    assert "0 alert(s) triggered" in _ok(["alerts", "evaluate", SUB])
    [triggered] = json.loads(_ok(["alerts", "triggered", SUB, "--json"]))["triggered_alerts"]
    assert triggered["crossed_thresholds"][0]["code"] == "one"
    assert "deleted units" in _ok(["alerts", "delete", SUB, "units"])
    refused = runner.invoke(app, ["alerts", "create", SUB, "--type",
                                  "billable_metric_lifetime_usage_units",
                                  "--code", "x", "--threshold", "1"])
    assert refused.exit_code != 0 and "billable_metric_lifetime_usage_units" in refused.output
