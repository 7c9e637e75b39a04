"""``tallyflow wallets refresh-balances`` and ``tallyflow wallets balance``: one pass, then the
JSON the API answers; an unknown customer exits 1 naming it."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tests.tasks.wallets.test_balance import _seeded

runner = CliRunner()


def test_refresh_then_balance(engine: Engine, tmp_path: Path) -> None:
    _seeded(engine, tmp_path)  # February 2025 events: the current period (now) has none
    refreshed = runner.invoke(app, ["wallets", "refresh-balances"])
    assert refreshed.exit_code == 0, refreshed.output
    assert "subscription(s); watermark" in refreshed.output
    shown = runner.invoke(app, ["wallets", "balance", "c"])
    assert shown.exit_code == 0, shown.output
    balance = json.loads(shown.stdout)
    assert balance["ongoing_usage_cents"] == 0 and balance["allowed"] is True
    missing = runner.invoke(app, ["wallets", "balance", "nobody"])
    assert missing.exit_code == 1 and "nobody" in missing.output
