"""``tallyflow wallets``: the Mistral demo customer through show, top-up, mark-paid, deduct."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from tallyflow.cli.main import app
from tallyflow.models.lago.conformance import mismatches
from tallyflow.models.lago.resources import WalletOverview
from tests.factories import jsonl

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mistral"
AT = "2025-03-15T10:00:00Z"


def _ingest_tokens(folder: Path, name: str, tokens: int) -> None:
    """Events through the real ingest command (mistral-small input: $1 per started 1M)."""
    (folder / name).mkdir()
    (folder / name / "e.jsonl").write_text(jsonl([{
        "transaction_id": name, "external_subscription_id": "sub_acme_001",
        "code": "mistral_tokens", "timestamp": "2025-03-10T12:00:00Z",
        "properties": {"tokens": tokens, "model": "mistral-small", "type": "input"},
    }]))
    result = runner.invoke(app, ["ingest", str(folder / name), "--json"])
    assert result.exit_code == 0, result.output


def _show(*extra: str) -> dict:
    result = runner.invoke(app, ["wallets", "show", "acme", "--at", AT, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_wallet_commands_on_the_mistral_demo(
    engine: Engine, prefect_harness: None, tmp_path: Path
) -> None:
    applied = runner.invoke(app, ["apply", str(EXAMPLE), "--json"])
    assert applied.exit_code == 0, applied.output
    assert json.loads(applied.stdout)["wallets_opened"] == 1

    # Right after the apply: granted credits settled (as Lago does), purchased ones pending.
    wallet = _show()["wallets"][0]
    assert (wallet["credits_balance"], wallet["pending_credits"]) == ("25.00000", "100.00000")
    again = runner.invoke(app, ["apply", str(EXAMPLE), "--json"])
    assert json.loads(again.stdout)["wallets_opened"] == 0  # posted once
    assert _show()["wallets"][0]["credits_balance"] == "25.00000"

    # Live usage, before any snapshot or wallet run: the same figure `tallyflow usage` shows.
    _ingest_tokens(tmp_path, "first", 2_000_000)
    live = json.loads(runner.invoke(app, ["usage", "sub_acme_001", "--at", AT, "--json"]).stdout)
    before = _show()
    assert before["ongoing_usage"]["amount_cents"] == live["total_amount_cents"] == 200
    assert before["ongoing_usage"]["undeducted_cents"] == 200
    assert before["wallets"][0]["credits_ongoing_balance"] == "23.00000"
    assert before["wallets"][0]["credits_balance"] == "25.00000"

    assert runner.invoke(app, ["snapshot", "--at", AT]).exit_code == 0
    ran = runner.invoke(app, ["wallets", "deduct", "--at", AT, "--pending-paid", "--json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["transactions"] == 1
    wallet = _show()["wallets"][0]
    # 25 granted settled, 100 purchased pending: 25 - 2 = 23.
    assert (wallet["credits_balance"], wallet["pending_credits"]) == ("23.00000", "100.00000")

    paid = runner.invoke(app, ["wallets", "mark-paid", "acme"])
    assert paid.exit_code == 0 and "1 transaction(s) settled" in paid.stdout
    shown = _show()
    assert shown["wallet_transactions"] and mismatches(shown, WalletOverview) == []
    wallet = shown["wallets"][0]
    assert wallet["credits_balance"] == "123.00000" and wallet["balance_cents"] == 12300
    assert wallet["code"] == "prepaid_credits" and wallet["rate_amount"] == "1.0"
    assert wallet["consumed_amount_cents"] == 200 and wallet["status"] == "active"
    for field in ("lago_id", "name", "currency", "credits_ongoing_balance",
                  "ongoing_balance_cents", "consumed_credits", "ongoing_usage_balance_cents",
                  "expiration_at"):
        assert field in wallet

    top = runner.invoke(app, ["wallets", "top-up", "acme", "--granted-credits", "7.5",
                              "--key", "k1"])
    assert top.exit_code == 0, top.output
    again = runner.invoke(app, ["wallets", "top-up", "acme", "--granted-credits", "7.5",
                                "--key", "k1"])
    assert "0 transaction(s)" in again.stdout
    assert _show()["wallets"][0]["credits_balance"] == "130.50000"

    # Usage grows between runs: the ongoing balance shows it live, the next run deducts it.
    _ingest_tokens(tmp_path, "second", 1_000_000)  # packages of 1M tokens: 300 cents now
    pending = _show()
    assert pending["ongoing_usage"]["amount_cents"] == 300
    assert pending["ongoing_usage"]["undeducted_cents"] == 100
    assert pending["wallets"][0]["credits_ongoing_balance"] == "129.50000"
    assert pending["wallets"][0]["credits_balance"] == "130.50000"

    table = runner.invoke(app, ["wallets", "show", "acme", "--at", AT])
    assert table.exit_code == 0 and "wallets of acme" in table.stdout
    assert "last transactions" in table.stdout
    runs = runner.invoke(app, ["wallets", "runs", "--json"])
    assert runs.exit_code == 0 and json.loads(runs.stdout)[0]["status"] == "completed"

    bad = runner.invoke(app, ["wallets", "show", "nobody"])
    assert bad.exit_code == 1 and "unknown customer" in bad.stderr
    neg = runner.invoke(app, ["wallets", "top-up", "acme", "--paid-credits", "-1"])
    assert neg.exit_code != 0
    rule = runner.invoke(app, ["wallets", "alert-rule", "--below", "5"])
    assert rule.exit_code == 0 and "balance below 5" in rule.stdout
